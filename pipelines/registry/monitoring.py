"""A version's monitoring reference, fetched from a cloud into the verified local cache.

The ``reference`` stage writes what the monitor compares traffic with into the candidate's
``monitoring/`` folder, and registering the candidate keeps those files in the version as
objects of kind ``monitoring_reference``, which cross to the public cloud with the rest of it.
The monitor of a cloud reads the reference of the version serving there from that cloud's
store: only the reference's files are downloaded, each checked against the version's marker,
into ``<cache>/monitoring/<version>/`` (beside, never inside, the cache's whole-version
folders), and a cached copy is re-hashed before each use. Versions registered before versions
kept a reference have none: :class:`~pipelines.registry.errors.MissingReference` names the
version, and the monitor reports it and skips the cloud.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.core.io import atomic_dir
from pipelines.registry.candidates import MONITORING
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import MissingReference
from pipelines.registry.names import VERSION_ID, check_alias, check_version_id, file_key
from pipelines.registry.promotion import resolve
from pipelines.registry.stores.base import sha256_of
from pipelines.registry.versions import Version, VersionFile, read_version

log = logging.getLogger("recflow.registry.monitoring")

REFERENCE_KIND = "monitoring_reference"


def reference_files(version: Version) -> tuple[VersionFile, ...]:
    """The files of ``version``'s monitoring reference; empty for a version without one."""
    return tuple(item for item in version.files if item.kind == REFERENCE_KIND)


def resolve_version(registry: Registry, cloud: str, name: str) -> str:
    """The version id ``name`` means in ``cloud``: a version id as it is, else an alias there.

    Raises:
        BadName: ``name`` is neither a version id nor an alias name, or ``cloud`` no cloud.
        UnknownAlias: The alias is not set in ``cloud``.
    """
    if VERSION_ID.fullmatch(name):
        return name
    return resolve(registry, check_alias(name), cloud)


def _local(item: VersionFile) -> str:
    """Where a reference file lies in the fetched folder: its path under ``monitoring/``."""
    return item.path.removeprefix(f"{MONITORING}/")


def _intact(folder: Path, files: tuple[VersionFile, ...]) -> bool:
    return all(
        (folder / _local(item)).is_file() and sha256_of(folder / _local(item))[0] == item.sha256
        for item in files
    )


def fetch_reference(registry: Registry, cloud: str, version: str, cache_dir: Path) -> Path:
    """The monitoring reference of ``version`` in ``cloud``, verified, in the local cache.

    Args:
        registry: The registry.
        cloud: The cloud whose store it is read from.
        version: The version id (:func:`resolve_version` turns an alias into one).
        cache_dir: The verified local cache (``registry.cache``).

    Returns:
        ``<cache_dir>/monitoring/<version>``, holding the files the ``reference`` stage wrote
        (``reference.json`` and the rest, as in the candidate's ``monitoring/``). A cached copy
        that still hashes right is used as it is; a damaged one is fetched again.

    Raises:
        BadName: ``version`` is not a version id, or ``cloud`` no cloud.
        UnknownVersion: ``cloud`` has no such version.
        MissingReference: The version holds no monitoring reference.
        ChecksumMismatch, ObjectMissing: A file of it is missing or does not match its marker
            in the store; the cache is left as it was.
    """
    store = registry.store(cloud)
    parsed = read_version(store, check_version_id(version))
    files = reference_files(parsed)
    if not files:
        raise MissingReference(
            f"version {parsed.id} in {cloud!r} has no monitoring reference: it was registered "
            "before versions kept one (the reference stage writes it), so there is nothing to "
            "compare its traffic with"
        )
    folder = cache_dir / MONITORING / parsed.id
    if folder.is_dir() and _intact(folder, files):
        log.info("monitoring reference of %s: verified cached copy %s", parsed.id, folder)
        return folder
    with atomic_dir(folder) as scratch:
        for item in files:
            store.download(file_key(parsed.id, item.path), scratch / _local(item), item.sha256)
    log.info("monitoring reference of %s: fetched from %s into %s", parsed.id, cloud, folder)
    return folder
