"""The gate's production model, fetched from the registry into a verified local cache."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pipelines.core.params import Params
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.stores.base import sha256_of
from pipelines.registry.versions import Version, fetch_version, read_version

log = logging.getLogger("recflow.registry.production")


def _intact(folder: Path, version: Version) -> bool:
    return all(
        (folder / item.path).is_file() and sha256_of(folder / item.path)[0] == item.sha256
        for item in version.files
    )


def fetch_alias(registry: Registry, alias: str, cloud: str, cache_dir: Path) -> Path | None:
    """The version ``alias`` names in ``cloud``, as a verified folder under ``cache_dir``.

    Returns:
        ``cache_dir/<version>``, shaped like ``models/candidate`` (``model.pt``,
        ``optimized/``, ``evaluation/``, ``metrics.json``, ``lineage.json``); None when the
        alias is not set.

    Raises:
        ChecksumMismatch, ObjectMissing: The version in the store is corrupt or incomplete.
        StoreError: The store failed.
    """
    store = registry.store(cloud)
    state = read_alias(store, alias)
    if state is None:
        return None
    version = read_version(store, state.version)
    folder = cache_dir / version.id
    if folder.is_dir():
        if _intact(folder, version):
            log.info("%s %s in %r: verified cached copy %s", alias, version.id, cloud, folder)
            return folder
        log.warning(
            "cached copy %s does not match version %s: fetching it again", folder, version.id
        )
        shutil.rmtree(folder)
    fetch_version(store, version, folder)
    log.info("%s %s in %r: fetched and verified into %s", alias, version.id, cloud, folder)
    return folder


def fetch_production(params: Params, cache_dir: Path, *, root: Path) -> Path | None:
    """The production model the gate compares a candidate against, or None (bootstrap rule).

    Reads ``registry.gate_alias`` in ``registry.gate_cloud`` and fetches that version into
    ``cache_dir`` (each file checked against the version's marker; a cached copy is re-hashed
    and reused only if intact).

    Args:
        params: The project's params (its ``stores`` and ``registry`` sections).
        cache_dir: Where verified copies of versions are kept (``registry.cache``).
        root: The project root (relative ``file:`` stores are under it).

    Returns:
        A folder shaped like ``models/candidate``, or None when no production is set.
    """
    registry = open_registry(params, root)
    return fetch_alias(registry, params.registry.gate_alias, params.registry.gate_cloud, cache_dir)
