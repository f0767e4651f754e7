"""Immutable, content-addressed versions: what a version holds, its id, and its marker.

A version is the candidate folder the chain leaves (``models/candidate``): the PyTorch model,
its training metrics and curves, the optimized artifacts with their manifest, and the gate's
verdict and report, plus a lineage record. Its id is the first 16 hex digits of a sha256 over
the sorted ``(path, sha256)`` list of its files other than the lineage, so the same model,
artifacts and verdict always make the same version, whichever run registered them.

In a store, the files go first and the marker (``versions/<id>/version.json``) last: a version
exists once its marker does, so an interrupted registration leaves nothing anyone sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.core.errors import InputError
from pipelines.core.io import atomic_dir
from pipelines.registry.errors import (
    ChecksumMismatch,
    ConditionFailed,
    RegistryError,
    UnknownVersion,
)
from pipelines.registry.names import (
    MARKER,
    VERSION_ID,
    check_key,
    check_version_id,
    file_key,
    marker_key,
)
from pipelines.registry.policy import KINDS, pseudonymize_json, raw_ids
from pipelines.registry.stores.base import Store, sha256_of

log = logging.getLogger("recflow.registry.versions")

FORMAT = 1
LINEAGE = "lineage.json"
REQUIRED = ("model.pt", "optimized/manifest.json", "evaluation/verdict.json")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PARQUET_MAGIC = b"PAR1"


def classify(path: str) -> str | None:
    """The kind of the candidate folder's file ``path``, None for what no version holds.

    Raises:
        InputError: The file is of no kind the registry knows (it refuses to guess whether it
            may cross to the public cloud).
    """
    top = path.split("/", 1)[0]
    if top == "checkpoints" or any(part.startswith(".") for part in path.split("/")):
        return None  # resume snapshots and dotfiles are the trainer's, not the model's
    if path == "model.pt":
        return "model"
    if path in ("metrics.json", "history.jsonl") or top == "plots":
        return "metrics"
    if path == "optimized/manifest.json":
        return "manifest"
    if top == "optimized":
        return "artifact"
    if path == "evaluation/verdict.json":
        return "verdict"
    if top == "evaluation":
        return "report"
    raise InputError(f"candidate file {path} is of no kind a model version holds")


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
        gate: The gate's ``verdict``, ``blocked`` and ``bootstrap``.
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


@dataclass(frozen=True)
class Plan:
    """A version ready to upload: its marker (without lineage) and each file's bytes."""

    version: Version
    sources: dict[str, bytes | Path]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from exc


def _artifacts(candidate: Path, files: dict[str, VersionFile]) -> tuple[dict[str, Any], ...]:
    """The manifest's artifacts that were kept, keyed by what a server asks for."""
    manifest = _json(candidate / "optimized" / "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise InputError(f"{candidate / 'optimized/manifest.json'} lists no artifacts")
    index = []
    for entry in manifest["artifacts"]:
        if (
            not isinstance(entry, dict)
            or entry.get("status") == "rejected"
            or not entry.get("file")
        ):
            continue
        path = f"optimized/{entry['file']}"
        if path not in files:
            raise InputError(f"the manifest lists {path}, which the candidate does not have")
        if entry.get("sha256") != files[path].sha256:
            raise InputError(
                f"{candidate / path} hashes to {files[path].sha256[:12]}…, the manifest says "
                f"{str(entry.get('sha256'))[:12]}…: it was changed after it was built"
            )
        device = entry.get("device")
        versions = entry.get("versions")
        device = device if isinstance(device, dict) else {}
        versions = versions if isinstance(versions, dict) else {}
        capability = device.get("compute_capability") or None
        index.append(
            {
                "name": str(entry.get("name")),
                "backend": str(entry.get("backend")),
                "precision": str(entry.get("precision")),
                "path": path,
                "sha256": files[path].sha256,
                "compute_capability": ".".join(map(str, capability)) if capability else None,
                "tensorrt": versions.get("tensorrt"),
                "shipped": entry.get("name") == manifest.get("shipped"),
            }
        )
    return tuple(sorted(index, key=lambda a: (not a["shipped"], a["name"])))


def _gate(candidate: Path) -> dict[str, Any]:
    verdict = _json(candidate / "evaluation" / "verdict.json")
    if not isinstance(verdict, dict) or not isinstance(verdict.get("blocked"), bool):
        raise InputError(f"{candidate / 'evaluation/verdict.json'} holds no gate verdict")
    return {
        "verdict": str(verdict.get("verdict")),
        "blocked": verdict["blocked"],
        "bootstrap": bool(verdict.get("bootstrap")),
    }


def plan(candidate: Path, pseudonym_key: Callable[[], bytes], id_fields: tuple[str, ...]) -> Plan:
    """What registering ``candidate`` would upload, and the version id it makes.

    JSON files holding user or session ids get them pseudonymized first, so that the version
    (the same bytes in both clouds) can cross to the public cloud.

    Args:
        candidate: The candidate folder (``models/candidate``).
        pseudonym_key: Gives the HMAC key, asked for only if some id needs a pseudonym.
        id_fields: JSON field names that hold user or session ids.

    Raises:
        InputError: A required file is missing, a file is of no known kind or is a data file,
            or the manifest does not match the artifacts.
    """
    if not candidate.is_dir():
        raise InputError(f"candidate folder {candidate} not found (run the chain first)")
    for required in REQUIRED:
        if not (candidate / required).is_file():
            raise InputError(f"candidate {candidate} has no {required} (run the chain first)")
    sources: dict[str, bytes | Path] = {}
    files: dict[str, VersionFile] = {}
    for path in sorted(p for p in candidate.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(candidate).as_posix()
        if path.is_symlink():
            raise InputError(f"candidate file {rel} is a symbolic link: a version holds files")
        kind = classify(rel)
        if kind is None:
            continue
        check_key(rel)
        with open(path, "rb") as handle:
            if handle.read(4) == _PARQUET_MAGIC:
                raise InputError(
                    f"candidate file {rel} is a Parquet data file: data is not a model"
                )
        source: bytes | Path = path
        if rel.endswith(".json"):
            document = _json(path)
            if raw_ids(document, id_fields):
                document, count = pseudonymize_json(document, pseudonym_key(), id_fields)
                log.info("%s: %d user or session id(s) pseudonymized", rel, count)
                source = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
        sha256, size = sha256_of(source)
        sources[rel] = source
        files[rel] = VersionFile(rel, kind, sha256, size)
    listed = tuple(files.values())
    vid, digest = content_id(listed)
    version = Version(vid, digest, listed, _artifacts(candidate, files), _gate(candidate))
    return Plan(version, sources)


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


def list_versions(store: Store) -> list[str]:
    """The ids of the complete versions in ``store`` (those with a marker)."""
    found = []
    for key in store.list_keys("versions/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MARKER and VERSION_ID.fullmatch(parts[1]):
            found.append(parts[1])
    return found


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
