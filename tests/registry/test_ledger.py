"""Every reader of the ledger checks what it reads: an entry changed together with its checksum,
or removed, anywhere in the ledger (the newest included, through the anchors in the alias
objects of both clouds and the head carried to the public cloud) is refused with an error
naming it; ``recflow registry history`` prints a clean ledger and refuses a broken one. A
public head that lags is noted and carried forward by a sync; a public cloud that does not
answer is noted, and the private cloud's own anchors are still checked."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.commands.registry import main as registry_main
from pipelines.core.params import Params
from pipelines.registry import head, ledger
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.errors import LedgerBroken
from pipelines.registry.history import anchors, ledger_problems, read_ledger
from pipelines.registry.loopback import free_port
from pipelines.registry.names import alias_key, ledger_key
from pipelines.registry.promotion import promote, resolve, rollback
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from pipelines.registry.replication import sync_aliases
from pipelines.registry.stores.credentials import endpoint_env
from tests.registry.helpers import make_candidate, make_params, snapshots, write_params

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


def _reanchor(registry: Registry, alias: str, seq: int) -> None:
    """Point the private alias object's anchor at entry ``seq`` as it now hashes, as someone
    with write access to the private cloud could."""
    store = registry.record
    document = json.loads(store.read(alias_key(alias))[0])
    document["ledger"] = {"seq": seq, "sha256": ledger.read_entry(store, seq).sha256}
    document["version"] = ledger.read_entry(store, seq).version
    store.put_bytes(alias_key(alias), json.dumps(document).encode(), "alias")


def _history(params: Params, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = registry_main(["--params", str(write_params(tmp_path, params)), "history"])
    out, err = capsys.readouterr()
    return code, out + err


def _unreachable(tmp_path: Path, bucket: str, how: str, monkeypatch: pytest.MonkeyPatch) -> Params:
    """Params of the same two stores, but a public store that does not answer: nothing listens
    on its endpoint, or it is served by the loopback server, which is not running."""
    monkeypatch.delenv(endpoint_env("public"), raising=False)
    if how == "endpoint":
        return make_params(tmp_path, endpoint=f"http://127.0.0.1:{free_port()}", bucket=bucket)
    public = {"url": f"s3://{bucket}/registry", "role": "replica", "loopback": True}
    return make_params(
        tmp_path, endpoint=None, bucket=None, overrides={"stores": {"public": public}}
    )


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
    # without the public aliases, the head carried to the public cloud still records it
    with pytest.raises(LedgerBroken, match=r"ledger entry 2 was changed: .* carried to 'public'"):
        read_ledger(registry, ["private"])


def test_an_alias_object_of_format_1_is_read_unanchored_and_anchored_next_time(
    registry: Registry, tmp_path: Path
) -> None:
    a, b = _versions(registry, tmp_path, 2)
    _promote(registry, a)
    store = registry.record
    document = json.loads(store.read(alias_key("production"))[0])
    old = {k: v for k, v in document.items() if k != "ledger"} | {"format": 1}
    store.put_bytes(alias_key("production"), json.dumps(old).encode(), "alias")
    registry.store("public").delete(head.KEY)  # written before heads were carried
    state = read_alias(store, "production")
    assert state is not None and state.version == a and state.anchor is None
    assert anchors(registry, notes=[]) == []
    problems, notes = ledger_problems(registry)
    assert problems == []
    assert notes == [
        "alias 'production' in 'private' records no ledger entry: the head is unanchored by it",
        "the ledger head is not carried to 'public' yet "
        "(`recflow registry replicate --sync` carries it)",
    ]
    _promote(registry, b, hour=1)
    assert [(x.seq, x.by) for x in anchors(registry)] == [
        (2, "alias 'production' in 'private'"),
        (2, "the ledger head carried to 'public'"),
    ]
    assert ledger_problems(registry) == ([], [])


def test_the_public_head_records_the_newest_private_entry_in_hashes_and_names(
    registry: Registry, tmp_path: Path
) -> None:
    _three_promotions(registry, tmp_path)
    public = registry.store("public")
    document = json.loads(public.read(head.KEY)[0])
    newest = ledger.read_entry(registry.record, 3)
    assert document == {
        "format": 1,
        "cloud": "public",
        "ledger": "private",
        "entry": {
            "seq": 3,
            "sha256": newest.sha256,
            "cloud": "private",
            "alias": "production",
            "to_version": newest.version,
        },
    }
    assert not head.carry(public, "private", newest)  # carried already: nothing written


def test_a_private_rewrite_of_the_newest_entry_and_its_anchor_is_refused_through_the_public_head(
    params: Params, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Everything the private cloud holds agrees with the edit; the public head does not."""
    versions = _versions(registry, tmp_path, 4)
    for hour, version in enumerate(versions[:3]):
        _promote(registry, version, hour=hour)
    _edit(registry, 3)
    _reanchor(registry, "production", 3)
    private_anchors = anchors(registry, ["private"], notes=[])[:1]
    assert [a.by for a in private_anchors] == ["alias 'production' in 'private'"]
    assert len(ledger.entries(registry.record, anchors=private_anchors)) == 3  # private: intact
    message = r"ledger entry 3 was changed: .* the ledger head carried to 'public' records"
    with pytest.raises(LedgerBroken, match=message):
        read_ledger(registry)
    with pytest.raises(LedgerBroken, match=message):
        read_ledger(registry, ["private"])
    code, output = _history(params, tmp_path, capsys)
    assert code != 0 and "ledger entry 3 was changed" in output and "->" not in output
    problems, _ = ledger_problems(registry)
    assert len(problems) == 1 and "carried to 'public' records" in problems[0]
    before = snapshots(registry)
    with pytest.raises(LedgerBroken, match=message):
        rollback(registry, "production", "private", reason="r", actor="ops", at=T0)
    with pytest.raises(LedgerBroken, match=message):
        sync_aliases(registry, "public")
    with pytest.raises(LedgerBroken, match=message):
        _promote(registry, versions[3], hour=4)
    assert snapshots(registry) == before  # nothing moved, the public head included


def test_a_private_ledger_shorter_than_the_public_head_is_refused_naming_the_entry(
    registry: Registry, tmp_path: Path
) -> None:
    _three_promotions(registry, tmp_path)
    registry.record.delete(ledger_key(3))
    _reanchor(registry, "production", 2)
    assert len(ledger.entries(registry.record, anchors=anchors(registry, ["private"])[:1])) == 2
    with pytest.raises(
        LedgerBroken,
        match=r"ledger entry 3 is missing \(the ledger head carried to 'public' records it",
    ):
        read_ledger(registry)


def test_a_lagging_public_head_is_noted_and_carried_by_a_sync_not_refused(
    params: Params,
    registry: Registry,
    tmp_path: Path,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, c = _versions(registry, tmp_path, 3)
    _promote(registry, a)
    _promote(registry, b, hour=1)
    # the public cloud does not answer when c is promoted in the private one
    offline = open_registry(_unreachable(tmp_path, bucket, "endpoint", monkeypatch), tmp_path)
    _promote(offline, c, hour=2)
    public = registry.store("public")
    carried = head.read_head(public)
    assert carried is not None and carried.seq == 2
    lag = (
        "the ledger head carried to 'public' is entry 2, the newest is 3: entries after it are "
        "anchored by their aliases only (`recflow registry replicate --sync` carries it)"
    )
    notes: list[str] = []
    assert [e.version for e in read_ledger(registry, notes=notes)] == [a, b, c]
    assert notes == [lag]
    assert ledger_problems(registry) == ([], [lag])
    code, output = _history(params, tmp_path, capsys)
    assert code == 0 and f"NOTE {lag}" in output and f"-> {c}" in output
    assert sync_aliases(registry, "public") == []
    carried = head.read_head(public)
    assert carried is not None and (carried.seq, carried.version) == (3, c)
    assert ledger_problems(registry) == ([], [])
    # entry 3 is now pinned in the public cloud as well
    _edit(registry, 3)
    _reanchor(registry, "production", 3)
    with pytest.raises(LedgerBroken, match=r"ledger entry 3 was changed: .* carried to 'public'"):
        read_ledger(registry)


@pytest.mark.parametrize("how", ["endpoint", "loopback"])
def test_an_unreachable_public_cloud_is_noted_and_the_private_anchors_still_checked(
    registry: Registry,
    tmp_path: Path,
    bucket: str,
    how: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, c = _three_promotions(registry, tmp_path)
    offline_params = _unreachable(tmp_path, bucket, how, monkeypatch)
    offline = open_registry(offline_params, tmp_path)
    notes: list[str] = []
    assert [e.version for e in read_ledger(offline, ["private"], notes=notes)] == [a, b, c]
    assert notes == ["the ledger head was not checked against 'public': it does not answer"]
    code, output = _history(offline_params, tmp_path, capsys)
    assert code == 0 and f"-> {c}" in output
    assert "not checked against the ledger anchors and head in public: unreachable" in output
    _edit(registry, 3)  # the private alias's anchor still records entry 3 as it was
    with pytest.raises(LedgerBroken, match=r"ledger entry 3 was changed: .* in 'private' records"):
        read_ledger(offline, ["private"], notes=[])
    code, output = _history(offline_params, tmp_path, capsys)
    assert code != 0 and "ledger entry 3 was changed" in output


def test_the_public_head_only_moves_forward(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer carrying entry 2 that loses the compare-and-set to one carrying entry 3 leaves
    entry 3 in place."""
    for hour, version in enumerate(_versions(registry, tmp_path, 3)):
        _promote(registry, version, hour=hour)
    first, second, third = (ledger.read_entry(registry.record, n) for n in (1, 2, 3))
    public = registry.store("public")
    public.delete(head.KEY)
    assert head.carry(public, "private", first)
    put_bytes = public.put_bytes
    overtaken: list[bool] = []

    def other_writer_first(key: str, data: bytes, kind: str, **conditions: Any) -> Any:
        if key == head.KEY and not overtaken:  # lands between our read and our write
            overtaken.append(True)
            assert head.carry(public, "private", third)
        return put_bytes(key, data, kind, **conditions)

    monkeypatch.setattr(public, "put_bytes", other_writer_first)
    assert not head.carry(public, "private", second)  # lost the race, then found 3 there
    assert overtaken == [True]
    carried = head.read_head(public)
    assert carried is not None and (carried.seq, carried.sha256) == (3, third.sha256)
    assert not head.carry(public, "private", first)  # never back
    carried = head.read_head(public)
    assert carried is not None and carried.seq == 3


def test_a_public_cloud_that_may_not_receive_the_head_is_noted_not_an_error(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    allow = ["model", "artifact", "item_table", "manifest", "metrics", "verdict", "report"]
    allow += ["lineage", "version_marker", "alias"]  # no ledger_head
    registry = open_registry(
        make_params(
            tmp_path,
            endpoint=s3_endpoint,
            bucket=bucket,
            overrides={"registry": {"crossing": {"allow": allow}}},
        ),
        tmp_path,
    )
    a, b = _versions(registry, tmp_path, 2)
    _promote(registry, a)
    _promote(registry, b, "public", hour=1)
    assert sync_aliases(registry, "public") == []
    assert head.read_head(registry.store("public")) is None
    notes: list[str] = []
    assert [e.version for e in read_ledger(registry, notes=notes)] == [a, b]
    assert notes == [
        "the ledger head is not carried to 'public' yet "
        "(`recflow registry replicate --sync` carries it)"
    ]
