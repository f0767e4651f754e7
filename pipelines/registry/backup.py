"""Backup and restore of the registry of record: versions, ledger, aliases and the pseudonym key.

:func:`backup` copies every object of the store of record to a destination store (a folder or
a bucket, itself private: it holds the key of pseudonyms), each verified on the way, and
writes ``backup.json`` last, listing every object with its sha256 and the alias state of every
cloud. :func:`restore` rebuilds an empty store of record from such a backup, verifies every
version and the ledger's chain, and checks the aliases against the backup's list. The public
cloud is then rebuilt from the record (``recflow registry replicate --sync``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.params import RegistryConfig, StoreConfig
from pipelines.registry import head, ledger
from pipelines.registry.aliases import read_alias
from pipelines.registry.candidates import classify
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import ChecksumMismatch, RegistryError
from pipelines.registry.history import read_ledger
from pipelines.registry.names import check_key, ledger_seq
from pipelines.registry.stores.base import Store
from pipelines.registry.stores.open import open_store
from pipelines.registry.versions import LINEAGE, list_versions, verify_version

log = logging.getLogger("recflow.registry.backup")

MANIFEST = "backup.json"
FORMAT = 1


def kind_of(key: str) -> str:
    """The kind of a registry object, from its key."""
    parts = key.split("/")
    if parts[0] == "aliases":
        return "alias"
    if ledger_seq(key) is not None:
        return "ledger"
    if key == head.KEY:
        return head.KIND
    if parts[0] == "secrets":
        return "secret"
    if parts[0] == "versions" and len(parts) == 3:
        return "version_marker"
    if parts[0] == "versions" and len(parts) > 3 and parts[2] == "files":
        path = "/".join(parts[3:])
        return "lineage" if path == LINEAGE else classify(path) or "artifact"
    raise RegistryError(f"{key} is not a registry object")


def open_destination(
    url: str,
    registry: RegistryConfig,
    root: Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
) -> Store:
    """The backup location ``url`` (``file:folder`` or ``s3://bucket/prefix``) as a store.

    A backup holds everything of the registry of record, the key of pseudonyms included, so its
    store has the role of a record: it is private.
    """
    from pydantic import ValidationError

    try:
        cfg = StoreConfig(
            url=url, role="record", endpoint_url=endpoint_url, region=region, profile=profile
        )
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise RegistryError(f"backup location {url!r}: {reason}") from None
    return open_store("backup", cfg, registry, root)


def _alias_state(registry: Registry) -> dict[str, dict[str, str]]:
    state: dict[str, dict[str, str]] = {}
    for entry in read_ledger(registry, []):
        state.setdefault(entry.cloud, {})[entry.alias] = entry.version
    return state


@dataclass(frozen=True)
class BackupReport:
    """What a backup or restore moved."""

    objects: int
    versions: int
    ledger_entries: int
    aliases: dict[str, dict[str, str]]


def backup(registry: Registry, dest: Store, *, at: dt.datetime) -> BackupReport:
    """Copy the store of record to the empty store ``dest``.

    Raises:
        RegistryError: ``dest`` is not empty.
        ChecksumMismatch: An object of the record is corrupt (the backup is not finished).
    """
    if dest.list_keys():
        raise RegistryError(f"backup destination {dest.url} is not empty; choose a new one")
    source = registry.record
    keys = source.list_keys()
    objects = []
    with tempfile.TemporaryDirectory(prefix="recflow-backup-") as scratch:
        for index, key in enumerate(keys):
            info = source.require(key)
            local = Path(scratch) / str(index)
            source.download(key, local)
            kind = kind_of(key)
            dest.put_file(key, local, kind)
            local.unlink()
            objects.append({"key": key, "sha256": info.sha256, "size": info.size, "kind": kind})
    aliases = _alias_state(registry)
    entries = sum(1 for o in objects if o["kind"] == "ledger")
    manifest = {
        "format": FORMAT,
        "created_at": at.astimezone(dt.UTC).isoformat(),
        "source": source.url,
        "objects": objects,
        "aliases": aliases,
    }
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    dest.put_bytes(MANIFEST, data, "backup_manifest", if_none_match=True)
    report = BackupReport(len(objects), len(list_versions(source)), entries, aliases)
    log.info("backed up %d objects (%d versions) to %s", report.objects, report.versions, dest.url)
    return report


def _restore_order(item: dict[str, Any]) -> int:
    # version files before markers, markers before the ledger, the ledger before aliases:
    # a half-finished restore shows no version without its files and no alias without its entry
    return {"version_marker": 1, "ledger": 2, "alias": 3}.get(str(item["kind"]), 0)


def restore(registry: Registry, src: Store) -> BackupReport:
    """Rebuild the empty store of record from the backup in ``src``, and verify it.

    Raises:
        RegistryError: The store of record is not empty, or ``src`` holds no backup.
        ChecksumMismatch: A backed-up object is corrupt, or the restored registry does not
            verify.
    """
    target = registry.record
    present = target.list_keys()
    if present:
        raise RegistryError(
            f"restore needs an empty store of record: store {target.name!r} ({target.url}) holds "
            f"{len(present)} object(s)"
        )
    if src.head(MANIFEST) is None:
        raise RegistryError(f"{src.url} holds no backup ({MANIFEST} is missing)")
    data, _ = src.read(MANIFEST)
    try:
        manifest = json.loads(data)
        objects = sorted(manifest["objects"], key=_restore_order)
        for item in objects:
            check_key(str(item["key"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ChecksumMismatch(f"{src.where(MANIFEST)} is malformed: {exc}") from None
    # the whole backup is checked before the first byte is restored
    for item in objects:
        if src.head(item["key"]) is None:
            raise ChecksumMismatch(
                f"the backup lacks {src.where(item['key'])}; nothing was restored"
            )
        if src.rehash(item["key"]) != item["sha256"]:
            raise ChecksumMismatch(
                f"{src.where(item['key'])} does not match the backup's manifest; "
                "nothing was restored"
            )
    with tempfile.TemporaryDirectory(prefix="recflow-restore-") as scratch:
        for index, item in enumerate(objects):
            local = Path(scratch) / str(index)
            src.download(item["key"], local, item["sha256"])
            target.put_file(item["key"], local, kind_of(item["key"]))
            local.unlink()
    problems = [p for v in list_versions(target) for p in verify_version(target, v)]
    problems += ledger.chain_problems(ledger.entries(target, physical=True))
    restored = _alias_state(registry)
    if restored != manifest.get("aliases", {}):
        problems.append(
            f"the restored ledger gives aliases {restored}, "
            f"the backup lists {manifest.get('aliases')}"
        )
    for alias, version in restored.get(registry.record_cloud, {}).items():
        state = read_alias(target, alias)
        if state is None or state.version != version:
            problems.append(
                f"alias {alias!r} of {registry.record_cloud!r} was not restored to {version}"
            )
    if problems:
        raise ChecksumMismatch("the restored registry does not verify:\n  " + "\n  ".join(problems))
    report = BackupReport(
        len(objects),
        len(list_versions(target)),
        sum(1 for o in objects if o["kind"] == "ledger"),
        restored,
    )
    log.info("restored %d objects (%d versions) from %s", report.objects, report.versions, src.url)
    return report
