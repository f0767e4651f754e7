"""The gate's production model, fetched from the registry into a verified local cache."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pipelines.core.errors import InputError
from pipelines.core.io import write_json
from pipelines.core.params import Params
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.stores.base import sha256_of
from pipelines.registry.versions import Version, fetch_version, read_version

log = logging.getLogger("recflow.registry.production")

# where the chain keeps the production version its gate compares against (see write_pin)
PIN_FILE = Path("models/production.json")


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


def production_pin(params: Params, *, root: Path) -> dict[str, str | None]:
    """The version the gate's alias names now: ``{"alias", "cloud", "version"}`` (None: none)."""
    registry = open_registry(params, root)
    alias, cloud = params.registry.gate_alias, params.registry.gate_cloud
    state = read_alias(registry.store(cloud), alias)
    return {"alias": alias, "cloud": cloud, "version": state.version if state else None}


def write_pin(params: Params, pin_file: Path, *, root: Path) -> dict[str, str | None]:
    """Pin the gate's production version in ``pin_file`` (same bytes while it is unchanged).

    The evaluate stage depends on this file in ``dvc.yaml``: a new production version makes
    DVC judge the candidate again, and a run judges against exactly the pinned version even
    if the alias moves while it runs (the run's own promotion, for one).
    """
    pin = production_pin(params, root=root)
    write_json(pin_file, pin)
    return pin


def fetch_pinned(params: Params, pin_file: Path, cache_dir: Path, *, root: Path) -> Path | None:
    """The production folder ``pin_file`` names, fetched and verified; None: none is pinned.

    Raises:
        InputError: The pin file is missing or malformed.
        UnknownVersion, ChecksumMismatch, ObjectMissing: The pinned version is not in the
            store, or is corrupt there.
    """
    import json

    try:
        pin = json.loads(pin_file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(
            f"production pin {pin_file} not found (recflow pin_production writes it)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"production pin {pin_file} is not readable JSON: {exc}") from exc
    if not isinstance(pin, dict) or not {"cloud", "version"} <= set(pin):
        raise InputError(f"production pin {pin_file} lacks 'cloud' or 'version'")
    if pin["version"] is None:
        return None
    registry = open_registry(params, root)
    store = registry.store(str(pin["cloud"]))
    version = read_version(store, str(pin["version"]))
    folder = cache_dir / version.id
    if folder.is_dir() and _intact(folder, version):
        log.info("production %s: verified cached copy %s", version.id, folder)
        return folder
    if folder.is_dir():
        shutil.rmtree(folder)
    fetch_version(store, version, folder)
    log.info("production %s: fetched and verified into %s", version.id, folder)
    return folder
