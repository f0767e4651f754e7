"""What the server needs from the model registry, and a file-folder implementation of it.

The server asks two things of a registry: *fetch version V into a local folder, every object
verified against its sha256*, and *pseudonymize a user id with the registry's keyed hash*.
:class:`ModelSource` and :class:`Pseudonymizer` say so; :class:`FolderRegistry` keeps versions
in a folder (``<root>/<version>/record.json`` listing each object's sha256 and size, beside the
objects) for development and tests, and :class:`KeyedHash` is an HMAC-SHA256 with a key from
the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from pipelines.core.errors import InputError
from pipelines.core.io import atomic_dir, sha256_file, write_json

RECORD = "record.json"
PSEUDONYM_KEY_ENV = "RECFLOW_PSEUDONYM_KEY"
# a version name is one path segment: no separators, no leading dot, bounded length
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(InputError):
    """A version is unknown, badly named, incomplete, or an object fails its sha256."""


def check_version_name(version: str) -> str:
    """``version`` itself when it is a safe folder name.

    Raises:
        RegistryError: It is empty, too long, or holds characters outside ``A-Za-z0-9._-``
            (a path traversal such as ``../x`` among them).
    """
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version) or ".." in version:
        raise RegistryError(
            f"version {str(version)[:80]!r} is not a version name: 1 to 64 characters of "
            "letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return version


class ModelSource(Protocol):
    """Where model versions come from."""

    def fetch(self, version: str, into: Path) -> Path:
        """Copy ``version`` into ``into/<version>`` with every object verified; return it."""
        ...


class Pseudonymizer(Protocol):
    """The registry's keyed hash of a user id."""

    def __call__(self, user_id: str) -> str: ...


class FolderRegistry:
    """Model versions in a folder: ``<root>/<version>/`` holds the objects and ``record.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, folder: Path, version: str) -> Path:
        """Record every file of ``folder`` (with its sha256) as ``version``; return its folder.

        Raises:
            RegistryError: The name is not a version name or the version exists already.
        """
        target = self.root / check_version_name(version)
        if target.exists():
            raise RegistryError(f"version {version} exists already in {self.root}")
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
            RegistryError: The version is unknown, badly named, or an object is missing or
                does not match its sha256 (nothing is left in ``into`` then).
        """
        source = self.root / check_version_name(version)
        record = _read_record(source / RECORD, version)
        objects = record.get("objects") if isinstance(record, dict) else None
        if not isinstance(objects, dict) or not objects:
            raise RegistryError(f"the record of version {version} lists no objects")
        target = into / version
        if target.is_dir() and _matches(target, objects):
            return target
        with atomic_dir(target) as tmp:
            for name, meta in sorted(objects.items()):
                if not VERSION_NAME.fullmatch(name):
                    raise RegistryError(f"version {version}: object name {name!r} is not safe")
                path = source / name
                if not path.is_file():
                    raise RegistryError(f"version {version}: object {name} is missing")
                shutil.copyfile(path, tmp / name)
                digest = sha256_file(tmp / name)
                if digest != meta.get("sha256"):
                    raise RegistryError(
                        f"version {version}: object {name} has sha256 {digest[:12]}…, the "
                        f"registry recorded {str(meta.get('sha256'))[:12]}…: refused"
                    )
        return target


def _read_record(path: Path, version: str) -> Any:
    if not path.is_file():
        raise RegistryError(f"version {version} is not in the registry ({path.parent})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"the record of version {version} is not readable JSON: {exc}") from exc


def _matches(folder: Path, objects: dict[str, dict[str, object]]) -> bool:
    for name, meta in objects.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != meta.get("sha256"):
            return False
    return True


class KeyedHash:
    """HMAC-SHA256 of a user id under a secret key: the same id, the same pseudonym."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise InputError("the pseudonymization key must be at least 16 bytes")
        self._key = key

    @classmethod
    def from_env(cls) -> KeyedHash:
        """The key from ``RECFLOW_PSEUDONYM_KEY``.

        Raises:
            InputError: The variable is unset or shorter than 16 bytes.
        """
        key = os.environ.get(PSEUDONYM_KEY_ENV, "")
        if not key:
            raise InputError(
                f"{PSEUDONYM_KEY_ENV} is not set: the request log pseudonymizes user ids with "
                "this key (or switch the log off with serve.request_log.enabled: false)"
            )
        return cls(key.encode())

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:32]
