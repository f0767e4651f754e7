"""Registering a candidate in the store of record: files first, then the marker."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipelines.registry.candidates import plan
from pipelines.registry.errors import ConditionFailed, RegistryError
from pipelines.registry.names import file_key, marker_key
from pipelines.registry.policy import pseudonymize_json, raw_ids
from pipelines.registry.stores.base import Store, sha256_of
from pipelines.registry.versions import LINEAGE, Version, VersionFile, read_version

log = logging.getLogger("recflow.registry.registration")


@dataclass(frozen=True)
class Registration:
    """The outcome of :func:`register`: the version, and whether this call created it."""

    version: Version
    created: bool


def upload_files(store: Store, version: Version, sources: dict[str, bytes | Path]) -> None:
    """Upload ``version``'s files from ``sources``; each must land with its recorded sha256.

    Raises:
        RegistryError: A source changed since it was hashed.
        StoreError, PolicyViolation: From the store.
    """
    for item in version.files:
        source = sources[item.path]
        key = file_key(version.id, item.path)
        if isinstance(source, Path):
            info = store.put_file(key, source, item.kind)
        else:
            info = store.put_bytes(key, source, item.kind)
        if info.sha256 != item.sha256:
            raise RegistryError(
                f"{item.path} changed while version {version.id} was being registered"
            )


def register(
    store: Store,
    candidate: Path,
    lineage: dict[str, Any],
    pseudonym_key: Callable[[], bytes],
    id_fields: tuple[str, ...],
) -> Registration:
    """Register ``candidate`` in ``store`` (the store of record), with its lineage.

    Registering content that is already a version changes nothing and returns that version
    (the lineage of its first registration stays).

    Raises:
        InputError: The candidate is incomplete or inconsistent.
        StoreError: The store failed; the version is not visible until a rerun completes it.
    """
    planned = plan(candidate, pseudonym_key, id_fields)
    vid = planned.version.id
    existing = _existing(store, planned.version)
    if existing is not None:
        log.info("version %s is already registered in %r: nothing to do", vid, store.name)
        return Registration(existing, False)
    if raw_ids(lineage, id_fields):
        lineage, _ = pseudonymize_json(lineage, pseudonym_key(), id_fields)
    lineage_bytes = (json.dumps(lineage, indent=2, sort_keys=True) + "\n").encode("utf-8")
    sha256, size = sha256_of(lineage_bytes)
    version = replace(
        planned.version,
        files=(*planned.version.files, VersionFile(LINEAGE, "lineage", sha256, size)),
    )
    upload_files(store, version, {**planned.sources, LINEAGE: lineage_bytes})
    try:
        store.put_bytes(marker_key(vid), version.to_bytes(), "version_marker", if_none_match=True)
    except ConditionFailed:
        # a concurrent registration of the same content finished first: it is the version
        raced = _existing(store, planned.version)
        if raced is None:
            raise
        return Registration(raced, False)
    log.info("registered version %s in %r (%d files)", vid, store.name, len(version.files))
    return Registration(version, True)


def _existing(store: Store, planned: Version) -> Version | None:
    if store.head(marker_key(planned.id)) is None:
        return None
    existing = read_version(store, planned.id)
    if existing.digest != planned.digest:
        raise RegistryError(
            f"version id {planned.id} is taken by other content (digest {existing.digest[:16]}…)"
        )
    return existing
