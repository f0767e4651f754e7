"""Aliases change by compare-and-set, every change lands in the append-only ledger exactly once,
rollback finds the last known good version, and races over HTTP have exactly one winner."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.params import Params
from pipelines.registry import ledger
from pipelines.registry.aliases import read_alias, write_alias
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.errors import (
    AliasConflict,
    BadName,
    NothingToRollBack,
    UnknownAlias,
    UnknownVersion,
)
from pipelines.registry.loopback_server import atomic_conditions
from pipelines.registry.names import ledger_key, marker_key
from pipelines.registry.promotion import promote, resolve, rollback
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from pipelines.registry.replication import replicate
from tests.registry.helpers import make_candidate, snapshots

T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


def _versions(registry: Registry, tmp_path: Path, count: int) -> list[str]:
    ids = []
    for seed in range(count):
        candidate = make_candidate(tmp_path / f"c{seed}", seed=seed)
        ids.append(
            register(
                registry.record,
                candidate,
                {"format": 1},
                lambda: pseudonym_key(registry.record),
                (),
            ).version.id
        )
    return ids


def _promote(
    registry: Registry, version: str, cloud: str = "private", hour: int = 0, **kw: Any
) -> Any:
    return promote(
        registry,
        version,
        "production",
        cloud,
        reason=kw.pop("reason", "gate verdict pass"),
        actor="test",
        at=T0 + dt.timedelta(hours=hour),
        **kw,
    )


def test_promote_records_one_entry_per_change(registry: Registry, tmp_path: Path) -> None:
    a, b = _versions(registry, tmp_path, 2)
    first = _promote(registry, a)
    assert first.seq == 1 and first.change["from_version"] is None
    assert _promote(registry, a) is None  # already there: nothing changes, nothing recorded
    second = _promote(registry, b, hour=1)
    assert second.seq == 2 and second.change["from_version"] == a
    assert resolve(registry, "production", "private") == b
    entries = ledger.entries(registry.record)
    assert [e.version for e in entries] == [a, b]
    assert ledger.chain_problems(entries) == []
    assert entries[1].change["evidence"]["version_digest"].startswith(b)
    assert set(entries[1].change["evidence"]) >= {"verdict_sha256", "lineage_sha256"}


def test_promote_in_the_public_cloud_replicates_first(registry: Registry, tmp_path: Path) -> None:
    (a,) = _versions(registry, tmp_path, 1)
    entry = _promote(registry, a, "public")
    assert registry.store("public").head(marker_key(a)) is not None
    assert resolve(registry, "production", "public") == a
    assert entry.cloud == "public"
    assert registry.store("public").list_keys("ledger/") == []  # the ledger stays in the record
    with pytest.raises(UnknownAlias, match="'production' is not set in 'private'"):
        resolve(registry, "production", "private")


def test_what_served_when(registry: Registry, tmp_path: Path) -> None:
    a, b = _versions(registry, tmp_path, 2)
    _promote(registry, a, hour=0)
    _promote(registry, b, hour=5)
    entries = ledger.entries(registry.record)
    assert ledger.serving_at(entries, "production", "private", T0 - dt.timedelta(seconds=1)) is None
    at_two = ledger.serving_at(entries, "production", "private", T0 + dt.timedelta(hours=2))
    assert at_two is not None and at_two.version == a
    at_six = ledger.serving_at(entries, "production", "private", T0 + dt.timedelta(hours=6))
    assert at_six is not None and at_six.version == b
    assert ledger.serving_at(entries, "production", "public", T0 + dt.timedelta(hours=6)) is None


def test_rollback_goes_to_the_last_version_not_itself_rolled_back(
    registry: Registry, tmp_path: Path
) -> None:
    a, b, c, d = _versions(registry, tmp_path, 4)
    for hour, version in enumerate((a, b, c)):
        _promote(registry, version, hour=hour)
    back = rollback(registry, "production", "private", reason="p99 regression", actor="ops", at=T0)
    assert back.version == b and back.change["rolls_back"] == 3 and back.action == "rollback"
    assert back.change["reason"] == "p99 regression"
    assert (
        rollback(registry, "production", "private", reason="still bad", actor="ops", at=T0).version
        == a
    )
    before = snapshots(registry)
    with pytest.raises(NothingToRollBack, match="no earlier known-good version of 'production'"):
        rollback(registry, "production", "private", reason="again", actor="ops", at=T0)
    assert snapshots(registry) == before
    _promote(registry, d, hour=9)
    assert (
        rollback(registry, "production", "private", reason="d is bad", actor="ops", at=T0).version
        == a
    )
    assert resolve(registry, "production", "private") == a
    assert [e.seq for e in ledger.entries(registry.record)] == [1, 2, 3, 4, 5, 6, 7]


def test_rollback_of_an_unset_alias(registry: Registry) -> None:
    with pytest.raises(UnknownAlias, match="'canary' is not set in 'public'"):
        rollback(registry, "canary", "public", reason="x", actor="ops", at=T0)


def test_bad_input_changes_no_store(registry: Registry, tmp_path: Path) -> None:
    (a,) = _versions(registry, tmp_path, 1)
    before = snapshots(registry)
    with pytest.raises(UnknownVersion, match="no version 0123456789abcdef"):
        _promote(registry, "0123456789abcdef")
    with pytest.raises(BadName, match="is not a version id"):
        _promote(registry, "../" + a)
    with pytest.raises(BadName, match="is not an alias name"):
        promote(registry, a, "prod/../x", "private", reason="r", actor="t", at=T0)
    with pytest.raises(BadName, match="is not a cloud"):
        promote(registry, a, "production", "azure", reason="r", actor="t", at=T0)
    assert snapshots(registry) == before


def test_a_change_applied_but_not_recorded_is_recorded_next_time(
    registry: Registry, tmp_path: Path
) -> None:
    a, b, c = _versions(registry, tmp_path, 3)
    _promote(registry, a)
    # a writer that died after changing the alias and before appending to the ledger
    state = read_alias(registry.record, "production")
    change = ledger.make_change(
        cloud="private",
        alias="production",
        from_version=a,
        to_version=b,
        action="promote",
        reason="crashed writer",
        actor="ghost",
        at=T0 + dt.timedelta(hours=1),
    )
    write_alias(registry.record, "production", b, change, state)
    assert len(ledger.entries(registry.record)) == 1
    _promote(registry, c, hour=2)
    entries = ledger.entries(registry.record)
    assert [(e.change["from_version"], e.version) for e in entries] == [(None, a), (a, b), (b, c)]
    assert entries[1].change["id"] == change["id"]
    assert ledger.chain_problems(entries) == []
    # the slow writer's own append comes last: it finds its change recorded in its place
    late = ledger.append(registry.record, change)
    assert late.seq == 2
    assert ledger.entries(registry.record, physical=True) == entries
    assert resolve(registry, "production", "private") == c == entries[-1].version


def test_a_change_is_recorded_once_by_its_writer_or_a_repairer(registry: Registry) -> None:
    def change(to: str) -> dict[str, Any]:
        return ledger.make_change(
            cloud="private",
            alias="production",
            from_version=None,
            to_version=to,
            action="promote",
            reason="r",
            actor="t",
            at=T0,
        )

    first = change("0123456789abcdef")
    repaired = ledger.append(registry.record, first)  # the repairer was quicker
    assert ledger.append(registry.record, first) == repaired  # the writer finds it recorded
    # appends that really raced leave two copies: the ledger reads the change once
    ledger.append(registry.record, change("fedcba9876543210"))
    registry.record.put_bytes(
        ledger_key(3),
        registry.record.read(ledger_key(1))[0]
        .replace(b'"seq": 1', b'"seq": 3')
        .replace(
            b'"prev_sha256": null',
            f'"prev_sha256": "{ledger.read_entry(registry.record, 2).sha256}"'.encode(),
        ),
        "ledger",
    )
    physical = ledger.entries(registry.record, physical=True)
    assert [e.seq for e in physical] == [1, 2, 3] and ledger.chain_problems(physical) == []
    assert [e.seq for e in ledger.entries(registry.record)] == [1, 2]


def test_a_changed_or_removed_ledger_entry_breaks_the_chain(
    registry: Registry, tmp_path: Path
) -> None:
    a, b, c = _versions(registry, tmp_path, 3)
    for hour, version in enumerate((a, b, c)):
        _promote(registry, version, hour=hour)
    store = registry.record
    data, _ = store.read(ledger_key(1))
    store.put_bytes(
        ledger_key(1), data.replace(b"gate verdict pass", b"gate verdict PASS"), "ledger"
    )
    problems = ledger.chain_problems(ledger.entries(store, physical=True))
    assert len(problems) == 1 and problems[0].startswith("ledger entry 1 was changed: it hashes")
    store.delete(ledger_key(2))
    assert "ledger entry 2 is missing (next is 3)" in ledger.chain_problems(
        ledger.entries(store, physical=True)
    )


def _race(writers: int, attempt: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    barrier = threading.Barrier(writers)
    results: list[Any] = [None] * writers

    def run(index: int) -> None:
        try:
            results[index] = attempt(index, barrier)
        except Exception as exc:  # collected and judged by the test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.mark.parametrize("cloud", ["public", "private"])
def test_writers_racing_for_one_alias_exactly_one_wins(
    params: Params, tmp_path: Path, cloud: str
) -> None:
    registry = open_registry(params, tmp_path)
    versions = [f"{index:016x}" for index in range(6)]
    # each writer with its own client (its own connections)
    own_stores = [open_registry(params, tmp_path).store(cloud) for _ in versions]
    for round_ in range(3):
        # every writer reads the same state, then all write at once
        def attempt(index: int, barrier: threading.Barrier) -> str:
            own = own_stores[index]
            state = read_alias(own, "canary")
            barrier.wait()
            change = ledger.make_change(
                cloud=cloud,
                alias="canary",
                from_version=state.version if state else None,
                to_version=versions[index],
                action="promote",
                reason=f"writer {index}",
                actor=f"w{index}",
                at=T0,
            )
            return write_alias(own, "canary", versions[index], change, state).version

        results = _race(6, attempt)
        winners = [r for r in results if isinstance(r, str)]
        losers = [r for r in results if isinstance(r, AliasConflict)]
        assert len(winners) == 1 and len(losers) == 5, (round_, results)
        assert "was changed by another writer since it was read" in str(losers[0])
        assert read_alias(registry.store(cloud), "canary").version == winners[0]  # type: ignore[union-attr]


def test_concurrent_promotions_keep_alias_and_ledger_consistent(
    params: Params, tmp_path: Path
) -> None:
    registry = open_registry(params, tmp_path)
    versions = _versions(registry, tmp_path, 5)
    for version in versions:
        replicate(registry, version, "public")

    def attempt(index: int, barrier: threading.Barrier) -> Any:
        own = open_registry(params, tmp_path)
        barrier.wait()
        return promote(
            own, versions[index], "canary", "public", reason=f"w{index}", actor="t", at=T0
        )

    results = _race(5, attempt)
    won = [r for r in results if isinstance(r, ledger.LedgerEntry)]
    assert all(isinstance(r, ledger.LedgerEntry | AliasConflict) for r in results), results
    entries = ledger.select(ledger.entries(registry.record), "canary", "public")
    # every change that won is in the ledger once, and nothing else is
    assert sorted(e.change["id"] for e in entries) == sorted(e.change["id"] for e in won)
    assert len(entries) == len(won)
    assert resolve(registry, "canary", "public") == entries[-1].version
    assert ledger.chain_problems(ledger.entries(registry.record, physical=True)) == []


def test_concurrent_ledger_appends_take_distinct_numbers(registry: Registry) -> None:
    def attempt(index: int, barrier: threading.Barrier) -> int:
        change = ledger.make_change(
            cloud="private",
            alias=f"a{index}",
            from_version=None,
            to_version="0123456789abcdef",
            action="promote",
            reason="r",
            actor="t",
            at=T0,
        )
        barrier.wait()
        return ledger.append(registry.record, change).seq

    results = _race(6, attempt)
    assert sorted(results) == [1, 2, 3, 4, 5, 6], results
    assert ledger.chain_problems(ledger.entries(registry.record, physical=True)) == []


class _SpyLock:
    """A lock that reports, by ``contended``, that a second holder is waiting for it."""

    def __init__(self, contended: threading.Event) -> None:
        self._lock = threading.Lock()
        self.contended = contended

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@pytest.mark.parametrize("atomic", [False, True])
def test_the_loopback_server_makes_conditional_writes_atomic(atomic: bool) -> None:
    """moto checks a condition and stores in two steps; the wrapper makes them one.

    The first writer to pass the check waits in the window between check and store until the
    second writer is either in that window too (nothing serializes them: both store) or waiting
    for the wrapper's lock (the first stores, then the second's check fails): no timing decides
    which happens.
    """
    store: dict[str, str] = {}
    second_arrived = threading.Event()
    first_in_window = threading.Event()
    in_window = 0
    count = threading.Lock()

    def check_then_store(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        nonlocal in_window
        if environ["HTTP_IF_NONE_MATCH"] == "*" and "key" in store:
            start_response("412 Precondition Failed", [])
            return [b""]
        with count:  # the window between moto's check and its store
            in_window += 1
            first = in_window == 1
        if first:
            first_in_window.set()
            assert second_arrived.wait(timeout=60), "the second writer never arrived"
        else:
            second_arrived.set()
        store.setdefault("key", environ["writer"])
        store["winners"] = store.get("winners", "") + environ["writer"]
        start_response("200 OK", [])
        return [b""]

    app = check_then_store
    if atomic:
        app = atomic_conditions(check_then_store, _SpyLock(second_arrived))

    def write(writer: str) -> None:
        environ = {"REQUEST_METHOD": "PUT", "HTTP_IF_NONE_MATCH": "*", "writer": writer}
        app(environ, lambda *a: None)

    threads = [threading.Thread(target=write, args=(w,)) for w in "ab"]
    threads[0].start()
    assert first_in_window.wait(timeout=60)  # a passed the check: b comes now
    threads[1].start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    # both passed the check without the wrapper: the race moto alone allows
    assert sorted(store["winners"]) == (["a"] if atomic else ["a", "b"])
