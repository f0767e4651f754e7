"""The candidate folder the chain leaves (``models/candidate``), read as a version to upload.

What each file is (its kind, which the crossing policy judges), which files a version needs,
the serving artifacts from the optimize stage's manifest, the gate's verdict, and user or
session ids pseudonymized before anything is hashed. The monitoring reference
(``monitoring/``, written by the ``reference`` stage) is optional: candidates made before it
existed have none, and the monitor says so for their versions. The files' shapes are other stages'
contracts: only the fields the registry needs are read, and checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.errors import InputError
from pipelines.registry.names import check_key
from pipelines.registry.policy import is_parquet, parquet_refusal, pseudonymize_json, raw_ids
from pipelines.registry.stores.base import sha256_of
from pipelines.registry.versions import Version, VersionFile, content_id

log = logging.getLogger("recflow.registry.candidates")

REQUIRED = ("model.pt", "optimized/manifest.json", "evaluation/verdict.json")
# what the monitor compares a version's traffic with (optional: older versions have none)
MONITORING = "monitoring"


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
    if path in ("metrics.json", "metrics.schema.json", "history.jsonl") or top == "plots":
        return "metrics"
    if path == "optimized/manifest.json":
        return "manifest"
    if path == "optimized/items.parquet":
        return "item_table"
    if top == "optimized":
        return "artifact"
    if path == "evaluation/verdict.json":
        return "verdict"
    if top == "evaluation":
        return "report"
    if top == MONITORING:
        return "monitoring_reference"
    raise InputError(f"candidate file {path} is of no kind a model version holds")


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
        # the gate's contract (pipelines.gate.verdict) names the outcome ``outcome``
        "verdict": str(verdict.get("outcome")),
        "blocked": verdict["blocked"],
        # the first-model rule, under its key in verdict.json and in the versions already kept
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
        InputError: A required file is missing, a file is of no known kind or is a data file
            (a Parquet file other than the item table and the monitoring reference's, or one of
            those with other columns), or the manifest does not match the artifacts.
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
        # the item table (catalog facts the served model needs) and the monitoring reference's
        # files, each with its own columns only; any other Parquet is data
        if is_parquet(path):
            refusal = parquet_refusal(rel, kind, path)
            if refusal is not None:
                raise InputError(f"candidate file {rel} is refused: {refusal}")
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
