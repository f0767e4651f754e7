"""The artifact manifest of an optimized folder: what was built, and the checks on its files.

``manifest.json`` lists every artifact the optimize stage built, with its backend, precision,
input and output signature, file, sha256, size, library versions and parity result, and names
the one that ships. Nothing is trusted on its word: :func:`verify_file` re-hashes the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ArtifactError(InputError):
    """An optimized artifact is missing, tampered with, unloadable or answers out of contract."""


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an optimized folder.

    Raises:
        ArtifactError: It is missing, not JSON, or of another format.
    """
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run the optimize stage first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{path} is not a format-{MANIFEST_FORMAT} artifact manifest")
    return manifest


def artifact_entry(manifest: dict[str, Any], folder: Path, name: str | None) -> dict[str, Any]:
    wanted = name or manifest.get("shipped")
    if not wanted:
        raise ArtifactError(f"{folder / MANIFEST} ships no artifact")
    for entry in manifest.get("artifacts", []):
        if entry.get("name") == wanted:
            if entry.get("status") == "rejected":
                raise ArtifactError(f"artifact {wanted} was rejected: {entry.get('reason')}")
            return dict(entry)
    raise ArtifactError(f"{folder / MANIFEST} lists no artifact named {wanted!r}")


def verify_file(folder: Path, entry: dict[str, Any]) -> Path:
    """The artifact's file, after checking it exists and matches the manifest's sha256."""
    path = folder / str(entry.get("file", ""))
    if not entry.get("file") or not path.is_file():
        raise ArtifactError(f"artifact {entry.get('name')}: file {path} is missing")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise ArtifactError(
            f"artifact {entry.get('name')}: {path} has sha256 {digest[:12]}…, the manifest "
            f"says {str(entry.get('sha256'))[:12]}…: the file was changed after it was built"
        )
    return path
