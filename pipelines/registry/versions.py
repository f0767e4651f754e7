"""Immutable, content-addressed versions: what a version holds, its id, its marker.

A version holds the candidate folder the chain leaves (``models/candidate``, read by
``pipelines.registry.candidates``) and a lineage record. Its id is the first 16 hex digits of a
sha256 over the sorted ``(path, sha256)`` list of its files other than the lineage, so the same
model, artifacts and verdict always make the same version, whichever run registered them.

In a store, the files go first and the marker (``versions/<id>/version.json``) last: a version
exists once its marker does, so an interrupted registration leaves nothing anyone sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.io import atomic_dir
from pipelines.registry.errors import ChecksumMismatch, RegistryError, UnknownVersion
from pipelines.registry.names import (
    MARKER,
    VERSION_ID,
    check_key,
    check_version_id,
    file_key,
    marker_key,
)
from pipelines.registry.policy import KINDS
from pipelines.registry.stores.base import Store

log = logging.getLogger("recflow.registry.versions")

FORMAT = 1
LINEAGE = "lineage.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class VersionFile:
    """One file of a version: its path in the version, kind, sha256 and size."""

    path: str
    kind: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Version:
    """A version as its marker describes it.

    Attributes:
        id: 16 hex digits of ``digest``.
        digest: sha256 over the sorted ``path\\tsha256`` lines of its files but the lineage.
        files: Every file, the lineage included.
        artifacts: The serving artifacts, keyed by backend, precision, GPU compute capability
            and TensorRT version (see :func:`find_artifact`).
        gate: The gate's ``verdict``, ``blocked`` and ``bootstrap`` (the first-model rule,
            under its key in ``verdict.json``).
    """

    id: str
    digest: str
    files: tuple[VersionFile, ...]
    artifacts: tuple[dict[str, Any], ...] = ()
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the gate let this version through."""
        return self.gate.get("blocked") is False

    def file(self, path: str) -> VersionFile:
        """The file ``path`` of this version.

        Raises:
            RegistryError: It has none.
        """
        for item in self.files:
            if item.path == path:
                return item
        raise RegistryError(f"version {self.id} has no file {path}")

    def to_bytes(self) -> bytes:
        """The marker's bytes (canonical JSON)."""
        document = {
            "format": FORMAT,
            "id": self.id,
            "digest": self.digest,
            "files": [f.to_dict() for f in self.files],
            "artifacts": list(self.artifacts),
            "gate": self.gate,
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Version:
        """Parse and check a marker; its id must be the digest of the files it lists.

        Raises:
            ChecksumMismatch: The marker is malformed or its id does not match its files.
        """
        try:
            doc = json.loads(data)
            files = tuple(
                VersionFile(str(f["path"]), str(f["kind"]), str(f["sha256"]), int(f["size"]))
                for f in doc["files"]
            )
            version = cls(
                id=check_version_id(doc["id"]),
                digest=str(doc["digest"]),
                files=files,
                artifacts=tuple(dict(a) for a in doc.get("artifacts", [])),
                gate=dict(doc.get("gate", {})),
            )
        except (ValueError, KeyError, TypeError, RegistryError) as exc:
            raise ChecksumMismatch(f"marker {where} is malformed: {exc}") from None
        for item in files:
            check_key(item.path)
            if item.kind not in KINDS or not _SHA256.fullmatch(item.sha256):
                raise ChecksumMismatch(f"marker {where} lists a malformed file entry {item.path}")
        vid, digest = content_id(files)
        if (vid, digest) != (version.id, version.digest):
            raise ChecksumMismatch(
                f"marker {where} names version {version.id} but its files make {vid}: "
                "the marker was changed"
            )
        return version


def content_id(files: tuple[VersionFile, ...] | list[VersionFile]) -> tuple[str, str]:
    """The version id and full digest of a file list (the lineage does not count)."""
    lines = sorted(f"{f.path}\t{f.sha256}\n" for f in files if f.path != LINEAGE)
    digest = hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
    return digest[:16], digest


def read_version(store: Store, version: str) -> Version:
    """The version ``version`` of ``store``, from its verified marker.

    Raises:
        BadName: ``version`` is not a version id.
        UnknownVersion: The store has no such version (or only a half-written one).
        ChecksumMismatch: The marker was tampered with.
    """
    key = marker_key(version)
    if store.head(key) is None:
        raise UnknownVersion(
            f"no version {version} in store {store.name!r} (`recflow registry list` shows them)"
        )
    data, _ = store.read(key)
    parsed = Version.from_bytes(data, store.where(key))
    if parsed.id != version:
        raise ChecksumMismatch(f"{store.where(key)} describes version {parsed.id}")
    return parsed


def read_lineage(store: Store, version: Version) -> dict[str, Any]:
    """The lineage record of ``version``, checked against the sha256 its marker lists.

    Raises:
        ChecksumMismatch: The record was tampered with.
        ObjectMissing: The record is gone from the store.
    """
    data, _ = store.read(file_key(version.id, LINEAGE), version.file(LINEAGE).sha256)
    lineage: dict[str, Any] = json.loads(data)
    return lineage


def list_versions(store: Store) -> list[str]:
    """The ids of the complete versions in ``store`` (those with a marker)."""
    found = []
    for key in store.list_keys("versions/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MARKER and VERSION_ID.fullmatch(parts[1]):
            found.append(parts[1])
    return found


def fetch_version(store: Store, version: Version, dest: Path) -> Path:
    """Download every file of ``version`` into the new folder ``dest``, each one verified.

    Raises:
        ObjectMissing, ChecksumMismatch: A file is missing or does not match its marker;
            ``dest`` is not created.
    """
    with atomic_dir(dest) as folder:
        for item in version.files:
            store.download(file_key(version.id, item.path), folder / item.path, item.sha256)
    return dest


def verify_version(store: Store, version: str) -> list[str]:
    """Every problem of ``version`` in ``store``: its marker, and each file re-hashed.

    Returns:
        One line per missing or mismatching object; empty when the version is intact.
    """
    try:
        parsed = read_version(store, version)
    except RegistryError as exc:
        return [str(exc)]
    problems = []
    for item in parsed.files:
        key = file_key(version, item.path)
        info = store.head(key)
        if info is None:
            problems.append(f"{store.where(key)} is missing")
            continue
        actual = store.rehash(key)
        if actual != item.sha256 or info.sha256 != item.sha256:
            problems.append(
                f"{store.where(key)} hashes to {actual[:12]}… (metadata {str(info.sha256)[:12]}…), "
                f"the marker records {item.sha256[:12]}…"
            )
    return problems


def find_artifact(
    version: Version,
    backend: str,
    precision: str | None = None,
    compute_capability: str | None = None,
    tensorrt: str | None = None,
) -> dict[str, Any]:
    """The artifact of ``version`` that fits a server: its backend and precision, and for an
    engine built for one GPU (TensorRT), that GPU's compute capability and TensorRT version.

    Returns:
        The artifact's index entry (``path`` is its file in the version); the shipped one first.

    Raises:
        RegistryError: No artifact fits; the message lists what there is.
    """
    for artifact in version.artifacts:
        if artifact["backend"] != backend:
            continue
        if precision is not None and artifact["precision"] != precision:
            continue
        if (
            artifact.get("compute_capability")
            and artifact["compute_capability"] != compute_capability
        ):
            continue
        if artifact.get("tensorrt") and artifact["tensorrt"] != tensorrt:
            continue
        return artifact
    have = ", ".join(
        f"{a['name']}"
        + (
            f" (sm {a['compute_capability']}, TensorRT {a['tensorrt']})"
            if a.get("tensorrt")
            else ""
        )
        for a in version.artifacts
    )
    raise RegistryError(
        f"version {version.id} has no {backend} artifact"
        + (f" in {precision}" if precision else "")
        + (f" for compute capability {compute_capability}" if compute_capability else "")
        + f"; it has: {have or 'none'}"
    )
