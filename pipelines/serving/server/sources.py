"""Where a server's model versions come from, and a folder of versions for development.

The server asks one thing of a source: *fetch version V into a local folder, every object
verified against its sha256* (:class:`ModelSource`). :class:`VersionFolder` keeps versions in a
folder (``<root>/<version>/record.json`` listing each object's sha256 and size, beside the
objects) for development and tests; the model registry's store of a cloud is the other source
(``pipelines.rollout.fleet.source``). Version names follow ``pipelines.core.names``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol

from pipelines.core.errors import InputError
from pipelines.core.io import atomic_dir, sha256_file, write_json
from pipelines.core.names import VERSION_NAME, check_version_name

RECORD = "record.json"


class SourceError(InputError):
    """A version is unknown to its source, incomplete, or an object fails its sha256.

    A message that says "not in the registry" means the source lacks the version (the admin API
    answers it with 404).
    """


class ModelSource(Protocol):
    """Where model versions come from."""

    def fetch(self, version: str, into: Path) -> Path:
        """Copy ``version`` into ``into/<version>`` with every object verified; return it."""
        ...


class VersionFolder:
    """Model versions in a folder: ``<root>/<version>/`` holds the objects and ``record.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, folder: Path, version: str) -> Path:
        """Record every file of ``folder`` (with its sha256) as ``version``; return its folder.

        Raises:
            BadVersionName: The name is not a version name.
            SourceError: The version exists already.
        """
        target = self.root / check_version_name(version)
        if target.exists():
            raise SourceError(f"version {version} exists already in {self.root}")
        with atomic_dir(target) as tmp:
            objects = {}
            for path in sorted(p for p in folder.iterdir() if p.is_file()):
                shutil.copy2(path, tmp / path.name)
                objects[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            write_json(tmp / RECORD, {"version": version, "objects": objects})
        return target

    def fetch(self, version: str, into: Path) -> Path:
        """Copy ``version`` into ``into/<version>``, each object checked against its sha256.

        An existing local copy that still matches the record is reused.

        Raises:
            BadVersionName: The name is not a version name.
            SourceError: The version is unknown, or an object is missing or does not match its
                sha256 (nothing is left in ``into`` then).
        """
        source = self.root / check_version_name(version)
        record = _read_record(source / RECORD, version)
        objects = record.get("objects") if isinstance(record, dict) else None
        if not isinstance(objects, dict) or not objects:
            raise SourceError(f"the record of version {version} lists no objects")
        target = into / version
        if target.is_dir() and _matches(target, objects):
            return target
        with atomic_dir(target) as tmp:
            for name, meta in sorted(objects.items()):
                if not VERSION_NAME.fullmatch(name):
                    raise SourceError(f"version {version}: object name {name!r} is not safe")
                path = source / name
                if not path.is_file():
                    raise SourceError(f"version {version}: object {name} is missing")
                shutil.copyfile(path, tmp / name)
                digest = sha256_file(tmp / name)
                if digest != meta.get("sha256"):
                    raise SourceError(
                        f"version {version}: object {name} has sha256 {digest[:12]}…, the "
                        f"registry recorded {str(meta.get('sha256'))[:12]}…: refused"
                    )
        return target


def _read_record(path: Path, version: str) -> Any:
    if not path.is_file():
        raise SourceError(f"version {version} is not in the registry ({path.parent})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"the record of version {version} is not readable JSON: {exc}") from exc


def _matches(folder: Path, objects: dict[str, dict[str, object]]) -> bool:
    for name, meta in objects.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != meta.get("sha256"):
            return False
    return True
