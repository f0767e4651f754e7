"""Every reader of the ledger checks what it reads: an entry changed together with its checksum,
or removed, anywhere in the ledger (the newest included, through the anchors in the alias
objects of both clouds) is refused with an error naming it; ``recflow registry history`` prints
a clean ledger and refuses a broken one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipelines.commands.registry import main as registry_main
from pipelines.core.params import Params
from pipelines.registry import ledger
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import LedgerBroken
from pipelines.registry.history import anchors, ledger_problems, read_ledger
from pipelines.registry.names import alias_key, ledger_key
from pipelines.registry.promotion import promote, resolve, rollback
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from pipelines.registry.replication import sync_aliases
from tests.registry.helpers import make_candidate, snapshots, write_params

T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


def _versions(registry: Registry, tmp_path: Path, count: int) -> list[str]:
    return [
        register(
            registry.record,
            make_candidate(tmp_path / f"c{seed}", seed=seed),
            {"format": 1},
            lambda: pseudonym_key(registry.record),
            (),
        ).version.id
        for seed in range(count)
    ]


def _promote(registry: Registry, version: str, cloud: str = "private", hour: int = 0) -> None:
    promote(
        registry,
        version,
        "production",
        cloud,
        reason="gate verdict pass",
        actor="test",
        at=T0 + dt.timedelta(hours=hour),
    )


def _three_promotions(registry: Registry, tmp_path: Path) -> list[str]:
    versions = _versions(registry, tmp_path, 3)
    for hour, version in enumerate(versions):
        _promote(registry, version, hour=hour)
    return versions


def _edit(registry: Registry, seq: int) -> None:
    """Change entry ``seq`` and its recorded checksum, as someone with write access could."""
    store = registry.record
    data, _ = store.read(ledger_key(seq))
    store.put_bytes(ledger_key(seq), data.replace(b"gate verdict pass", b"manual"), "ledger")


def _history(params: Params, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = registry_main(["--params", str(write_params(tmp_path, params)), "history"])
    out, err = capsys.readouterr()
    return code, out + err


def test_a_clean_ledger_is_read_and_history_prints_it(
    params: Params, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = _three_promotions(registry, tmp_path)
    assert [e.version for e in read_ledger(registry)] == [a, b, c]
    # each alias object records the entry of the change that set it
    state = read_alias(registry.record, "production")
    assert state is not None and state.anchor is not None
    assert (state.anchor.seq, state.anchor.sha256) == (
        3,
        ledger.read_entry(registry.record, 3).sha256,
    )
    assert ledger_problems(registry) == ([], [])
    code, output = _history(params, tmp_path, capsys)
    assert code == 0 and len(output.splitlines()) == 3 and f"-> {c}" in output


def test_an_edited_middle_entry_is_refused_naming_it(
    params: Params, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_promotions(registry, tmp_path)
    _edit(registry, 2)
    with pytest.raises(LedgerBroken, match="ledger entry 2 was changed: it hashes to"):
        ledger.entries(registry.record)  # the chain alone finds it
    with pytest.raises(LedgerBroken, match="ledger entry 2 was changed"):
        read_ledger(registry)
    code, output = _history(params, tmp_path, capsys)
    assert code != 0 and "ledger entry 2 was changed" in output and "->" not in output
    before = snapshots(registry)
    with pytest.raises(LedgerBroken, match="ledger entry 2 was changed"):
        rollback(registry, "production", "private", reason="r", actor="ops", at=T0)
    with pytest.raises(LedgerBroken, match="ledger entry 2 was changed"):
        sync_aliases(registry, "public")
    assert snapshots(registry) == before


def test_a_removed_entry_is_refused_naming_it(
    params: Params, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_promotions(registry, tmp_path)
    registry.record.delete(ledger_key(2))
    with pytest.raises(LedgerBroken, match=r"ledger entry 2 is missing \(next is 3\)"):
        read_ledger(registry)
    code, output = _history(params, tmp_path, capsys)
    assert code != 0 and "ledger entry 2 is missing" in output


def test_an_edited_newest_entry_is_refused_through_its_anchor(
    params: Params, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_promotions(registry, tmp_path)
    _edit(registry, 3)
    assert len(ledger.entries(registry.record)) == 3  # nothing in the ledger follows it
    with pytest.raises(
        LedgerBroken,
        match=r"ledger entry 3 was changed: .* alias 'production' in 'private' records",
    ):
        read_ledger(registry)
    code, output = _history(params, tmp_path, capsys)
    assert code != 0 and "ledger entry 3 was changed" in output


def test_a_removed_newest_entry_is_refused_through_its_anchor(
    registry: Registry, tmp_path: Path
) -> None:
    _three_promotions(registry, tmp_path)
    registry.record.delete(ledger_key(3))
    assert len(ledger.entries(registry.record)) == 2
    with pytest.raises(
        LedgerBroken, match=r"ledger entry 3 is missing \(alias 'production' in 'private' records"
    ):
        read_ledger(registry)


def test_an_edited_newest_entry_is_not_built_on(registry: Registry, tmp_path: Path) -> None:
    """A new entry linked to the edited one would make the edit look intact."""
    a, b, c, d = _versions(registry, tmp_path, 4)
    for hour, version in enumerate((a, b, c)):
        _promote(registry, version, hour=hour)
    _edit(registry, 3)
    before = snapshots(registry)
    with pytest.raises(LedgerBroken, match="ledger entry 3 was changed"):
        _promote(registry, d, hour=4)
    assert snapshots(registry) == before  # neither the alias nor the ledger moved
    assert resolve(registry, "production", "private") == c


def test_a_public_change_is_anchored_in_the_public_cloud(
    registry: Registry, tmp_path: Path
) -> None:
    a, b = _versions(registry, tmp_path, 2)
    _promote(registry, a, "private")
    _promote(registry, b, "public", hour=1)
    public = registry.store("public")
    state = read_alias(public, "production")
    assert state is not None and state.anchor is not None and state.anchor.seq == 2
    # the replica's aliases are rebuilt with their anchors
    public.delete(alias_key("production"))
    assert sync_aliases(registry, "public") == ["production"]
    rebuilt = read_alias(public, "production")
    assert rebuilt is not None and rebuilt.anchor == state.anchor
    _edit(registry, 2)
    with pytest.raises(LedgerBroken, match=r"ledger entry 2 was changed: .* in 'public' records"):
        read_ledger(registry)
    assert [e.seq for e in read_ledger(registry, ["private"])] == [1, 2]  # its anchor is public


def test_an_alias_object_of_format_1_is_read_unanchored_and_anchored_next_time(
    registry: Registry, tmp_path: Path
) -> None:
    a, b = _versions(registry, tmp_path, 2)
    _promote(registry, a)
    store = registry.record
    document = json.loads(store.read(alias_key("production"))[0])
    old = {k: v for k, v in document.items() if k != "ledger"} | {"format": 1}
    store.put_bytes(alias_key("production"), json.dumps(old).encode(), "alias")
    state = read_alias(store, "production")
    assert state is not None and state.version == a and state.anchor is None
    assert anchors(registry) == []
    problems, notes = ledger_problems(registry)
    assert problems == []
    assert notes == [
        "alias 'production' in 'private' records no ledger entry: the head is unanchored by it"
    ]
    _promote(registry, b, hour=1)
    assert [(x.seq, x.by) for x in anchors(registry)] == [(2, "alias 'production' in 'private'")]
    assert ledger_problems(registry) == ([], [])
