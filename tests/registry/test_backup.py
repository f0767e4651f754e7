"""The drill: register, promote, back up, wipe the store, restore, then serve the production
model from the restored registry and find the ledger intact."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from pipelines.core.params import Params
from pipelines.registry import ledger
from pipelines.registry.backup import MANIFEST, backup, open_destination, restore
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.errors import ChecksumMismatch, RegistryError
from pipelines.registry.names import file_key
from pipelines.registry.production import fetch_pinned, write_pin
from pipelines.registry.replication import sync_aliases
from pipelines.registry.stores.base import Store
from pipelines.registry.versions import list_versions
from tests.registry.helpers import make_candidate, publish_and_roll_out, snapshot

AT = dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC)


def _two_versions(registry: Registry, tmp_path: Path) -> tuple[str, str]:
    ids = []
    for seed in (1, 2):
        done = publish_and_roll_out(
            registry,
            make_candidate(tmp_path / f"c{seed}", seed=seed),
            {"format": 1, "seed": seed},
            actor="airflow:recsys_retrain/run",
            at=AT + dt.timedelta(days=seed),
        )
        ids.append(done.version.id)
    return ids[0], ids[1]


@pytest.fixture(params=["folder", "bucket"])
def destination(
    request: pytest.FixtureRequest, params: Params, tmp_path: Path, s3_endpoint: str, bucket: str
) -> str:
    """A backup location: a folder, or a prefix of a bucket."""
    return (
        f"file:{tmp_path / 'backup'}" if request.param == "folder" else f"s3://{bucket}/backups/1"
    )


def _open(params: Params, tmp_path: Path, url: str, endpoint: str) -> Store:
    return open_destination(
        url, params.registry, tmp_path, endpoint_url=None if url.startswith("file:") else endpoint
    )


def test_the_drill(
    params: Params, registry: Registry, tmp_path: Path, destination: str, s3_endpoint: str
) -> None:
    first, second = _two_versions(registry, tmp_path)
    entries = ledger.entries(registry.record)
    # candidate in both clouds, then production in both, per version
    assert [e.version for e in entries] == [first] * 4 + [second] * 4
    report = backup(registry, _open(params, tmp_path, destination, s3_endpoint), at=AT)
    assert report.versions == 2 and report.ledger_entries == 8
    both = {"candidate": second, "production": second}
    assert report.aliases == {"private": both, "public": both}

    shutil.rmtree(tmp_path / "private")  # the on-premises volume is lost
    wiped = open_registry(params, tmp_path)
    assert wiped.record.list_keys() == []
    pin_file = tmp_path / "models" / "production.json"
    assert write_pin(params, pin_file, root=tmp_path)["version"] is None

    restored = restore(wiped, _open(params, tmp_path, destination, s3_endpoint))
    assert restored.versions == 2 and restored.aliases == report.aliases
    assert [e.to_dict() for e in ledger.entries(wiped.record)] == [e.to_dict() for e in entries]
    assert ledger.chain_problems(ledger.entries(wiped.record, physical=True)) == []
    assert write_pin(params, pin_file, root=tmp_path)["version"] == second
    production = fetch_pinned(params, pin_file, tmp_path / "cache", root=tmp_path)
    assert production is not None and production.name == second
    model = (tmp_path / "c2" / "model.pt").read_bytes()
    assert (production / "model.pt").read_bytes() == model
    assert (production / "optimized" / "manifest.json").is_file()
    # the public cloud is rebuilt from the restored record
    assert sync_aliases(wiped, "public") == []  # it still had them: nothing to restore


def test_restore_refuses_a_store_that_is_not_empty(
    params: Params, registry: Registry, tmp_path: Path, s3_endpoint: str
) -> None:
    _two_versions(registry, tmp_path)
    dest = _open(params, tmp_path, f"file:{tmp_path / 'backup'}", s3_endpoint)
    backup(registry, dest, at=AT)
    before = snapshot(registry.record)
    with pytest.raises(RegistryError, match=r"restore needs an empty store of record: .* holds"):
        restore(registry, dest)
    assert snapshot(registry.record) == before


def test_backup_refuses_a_location_that_is_not_empty(
    params: Params, registry: Registry, tmp_path: Path, s3_endpoint: str
) -> None:
    _two_versions(registry, tmp_path)
    dest = _open(params, tmp_path, f"file:{tmp_path / 'backup'}", s3_endpoint)
    backup(registry, dest, at=AT)
    before = snapshot(dest)
    with pytest.raises(RegistryError, match="is not empty; choose a new one"):
        backup(registry, dest, at=AT)
    assert snapshot(dest) == before


def test_a_corrupt_backup_restores_nothing(
    params: Params, registry: Registry, tmp_path: Path, s3_endpoint: str
) -> None:
    first, _ = _two_versions(registry, tmp_path)
    dest = _open(params, tmp_path, f"file:{tmp_path / 'backup'}", s3_endpoint)
    backup(registry, dest, at=AT)
    (tmp_path / "backup" / file_key(first, "model.pt")).write_bytes(b"bit rot")
    shutil.rmtree(tmp_path / "private")
    wiped = open_registry(params, tmp_path)
    with pytest.raises(ChecksumMismatch, match="does not match the backup's manifest"):
        restore(wiped, dest)
    assert wiped.record.list_keys() == []


def test_a_location_without_a_backup(params: Params, tmp_path: Path, s3_endpoint: str) -> None:
    (tmp_path / "empty").mkdir()
    registry = open_registry(params, tmp_path)
    with pytest.raises(RegistryError, match=f"holds no backup \\({MANIFEST} is missing\\)"):
        restore(registry, _open(params, tmp_path, f"file:{tmp_path / 'empty'}", s3_endpoint))
    assert list_versions(registry.record) == []


def test_a_bad_backup_url_is_named(params: Params, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="backup location 'ftp://x'"):
        open_destination("ftp://x", params.registry, tmp_path)
