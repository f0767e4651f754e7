"""Replication private -> public: verified on the far side, marker last, idempotent, repairing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.registry import ledger
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import ChecksumMismatch, UnknownVersion
from pipelines.registry.names import file_key, marker_key
from pipelines.registry.promotion import promote
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from pipelines.registry.replication import replicate, sync_aliases
from pipelines.registry.stores.s3 import S3Store
from pipelines.registry.versions import list_versions, verify_version
from tests.registry.helpers import snapshot, snapshots


def _register(registry: Registry, candidate: Path) -> str:
    return register(
        registry.record, candidate, {"format": 1}, lambda: pseudonym_key(registry.record), ()
    ).version.id


def _tamper(store: S3Store, key: str) -> None:
    info = store.head(key)
    assert info is not None
    store.client.put_object(
        Bucket=store.bucket,
        Key=store.prefix + key,
        Body=b"bit rot",
        Metadata={"sha256": info.sha256},
    )


def test_replication_is_verified_and_idempotent(registry: Registry, candidate: Path) -> None:
    version = _register(registry, candidate)
    first = replicate(registry, version, "public")
    assert first.marker_written and not first.intact
    assert sorted(first.copied) == [
        "evaluation/report.html",
        "evaluation/report.md",
        "evaluation/verdict.json",
        "lineage.json",
        "metrics.json",
        "model.pt",
        "optimized/manifest.json",
        "optimized/model.fp16.sm89.plan",
        "optimized/model.int8.onnx",
        "optimized/model.onnx",
        "plots/train.csv",
    ]
    public = registry.store("public")
    assert list_versions(public) == [version]
    assert verify_version(public, version) == []
    before = snapshot(public)
    again = replicate(registry, version, "public")
    assert not again.copied and not again.marker_written and len(again.intact) == len(first.copied)
    assert snapshot(public) == before


def test_a_rerun_repairs_missing_and_corrupt_objects(registry: Registry, candidate: Path) -> None:
    version = _register(registry, candidate)
    replicate(registry, version, "public")
    public = registry.store("public")
    assert isinstance(public, S3Store)
    _tamper(public, file_key(version, "model.pt"))
    public.delete(file_key(version, "optimized/model.onnx"))
    public.delete(marker_key(version))
    assert len(verify_version(registry.store("private"), version)) == 0
    repaired = replicate(registry, version, "public")
    assert sorted(repaired.copied) == ["model.pt", "optimized/model.onnx"]
    assert repaired.marker_written
    assert verify_version(public, version) == []


def test_a_half_finished_replication_never_shows_up_as_a_version(
    registry: Registry, candidate: Path
) -> None:
    version = _register(registry, candidate)
    # a corrupt object in the record stops the copy part-way
    root = registry.record.root  # type: ignore[attr-defined]
    (root / file_key(version, "optimized/model.onnx")).write_bytes(b"corrupt")
    with pytest.raises(ChecksumMismatch, match=r"optimized/model\.onnx"):
        replicate(registry, version, "public")
    public = registry.store("public")
    assert public.list_keys()  # some objects went over ...
    assert list_versions(public) == []  # ... but no version is visible
    assert public.head(marker_key(version)) is None


def test_replicating_an_unknown_version_changes_nothing(registry: Registry) -> None:
    before = snapshots(registry)
    with pytest.raises(UnknownVersion):
        replicate(registry, "0123456789abcdef", "public")
    assert snapshots(registry) == before


def test_a_lost_replica_gets_its_aliases_back_from_the_ledger(
    registry: Registry, candidate: Path
) -> None:
    version = _register(registry, candidate)
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    promote(registry, version, "production", "public", reason="gate", actor="t", at=at)
    entries = ledger.entries(registry.record)
    public = registry.store("public")
    for key in public.list_keys():  # the in-memory server restarted: the replica is empty
        public.delete(key)
    assert sync_aliases(registry, "public") == ["production"]
    state = read_alias(public, "production")
    assert state is not None and state.version == version
    assert verify_version(public, version) == []
    assert ledger.entries(registry.record) == entries  # restoring recorded state records nothing
    assert sync_aliases(registry, "public") == []
