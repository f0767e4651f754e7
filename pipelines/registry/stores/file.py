"""A registry store in a folder (an on-premises volume), with the semantics of the S3 store.

Each object is a file at ``<root>/<key>``; its metadata (sha256, size) sits in
``<root>/.meta/<key>.json`` and its ETag is its sha256. Writes go to ``<root>/.tmp`` and are
renamed into place, so no reader sees a partial object; a conditional write holds the key's
file lock while it compares the ETag and renames, the folder's form of S3's ``IfMatch`` /
``IfNoneMatch``. A write that would leave less than ``min_free_mb`` on the volume
is refused before it starts, and one that runs out of space part-way is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from pipelines.registry.errors import ConditionFailed, ObjectMissing, StoreError, StoreFull
from pipelines.registry.policy import CrossingPolicy
from pipelines.registry.stores.base import CHUNK, ObjectInfo, Store

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class FileStore(Store):
    """A store in the folder ``root``."""

    def __init__(
        self,
        name: str,
        role: str,
        root: Path,
        policy: CrossingPolicy,
        *,
        min_free_bytes: int = 0,
    ) -> None:
        super().__init__(name, role, f"file:{root}", policy)
        self.root = root
        self.min_free_bytes = min_free_bytes

    def _data(self, key: str) -> Path:
        return self.root / key

    def _meta(self, key: str) -> Path:
        return self.root / ".meta" / f"{key}.json"

    @contextlib.contextmanager
    def _lock(self, key: str, *, shared: bool = False) -> Iterator[None]:
        """Hold the key's lock: to write, and to read an object and its metadata as one (a
        writer replaces the two files one after the other).

        The lock is exclusive either way (``filelock`` holds no shared locks), so two readers
        of one key take turns; a reader holds it only to open the object and read its
        metadata, never while the bytes stream. ``shared``: reading, which needs no lock on a
        read-only volume (nobody writes there).
        """
        name = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        lock = FileLock(self.root / ".locks" / f"{name}.lock", poll_interval=0.01)
        try:
            (self.root / ".locks").mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError:
            if not shared:
                raise
            yield  # a read-only volume: there is nothing to wait for
            return
        try:
            yield
        finally:
            lock.release()

    def _open(self, key: str, *, locked: bool = False) -> tuple[BinaryIO, ObjectInfo] | None:
        """The object's open file and its description, read together; None if absent.

        Once open, the file keeps the bytes it had, whatever a writer renames into place.
        ``locked``: the caller holds the key's exclusive lock already.
        """
        with contextlib.nullcontext() if locked else self._lock(key, shared=True):
            try:
                handle = open(self._data(key), "rb")  # noqa: SIM115 (the caller closes it)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
            try:
                meta = json.loads(self._meta(key).read_text(encoding="utf-8"))
                sha256: str | None = str(meta["sha256"])
            except (OSError, ValueError, KeyError, TypeError):
                sha256 = None
        size = os.fstat(handle.fileno()).st_size
        return handle, ObjectInfo(key, size, sha256, sha256 or "")

    def _opened(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        found = self._open(key)
        if found is None:
            raise ObjectMissing(f"{self.where(key)} is missing")
        return found

    def _room(self, key: str, size: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free - size < self.min_free_bytes:
            raise StoreFull(
                f"store {self.name!r} ({self.url}) has {free / 2**20:.1f} MB free: writing {key} "
                f"({size / 2**20:.1f} MB) would leave less than the "
                f"{self.min_free_bytes / 2**20:.0f} MB it keeps free; nothing was written"
            )

    def _put(
        self,
        key: str,
        payload: bytes | Path,
        sha256: str,
        size: int,
        *,
        if_match: str | None,
        if_none_match: bool,
    ) -> ObjectInfo:
        self._room(key, size)
        staging = self.root / ".tmp"
        staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging, prefix="put-")
        tmp = Path(name)
        meta_tmp = tmp.with_suffix(".meta")
        try:
            written = _copy(payload, fd)
            if written.hexdigest() != sha256:
                raise StoreError(
                    f"{key}: the source changed while it was written to store {self.name!r}"
                )
            meta_tmp.write_text(json.dumps({"sha256": sha256, "size": size}), encoding="utf-8")
            with self._lock(key):
                found = self._open(key, locked=True)
                current = found[1] if found else None
                if found:
                    found[0].close()
                if if_none_match and current is not None:
                    raise ConditionFailed(f"{self.where(key)} already exists")
                if if_match is not None and (current is None or current.etag != if_match):
                    raise ConditionFailed(f"{self.where(key)} is not at ETag {if_match}")
                data, meta = self._data(key), self._meta(key)
                data.parent.mkdir(parents=True, exist_ok=True)
                meta.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o644)
                os.replace(meta_tmp, meta)
                os.replace(tmp, data)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise StoreFull(
                    f"store {self.name!r} ({self.url}) ran out of space writing {key}: "
                    f"{exc.strerror}; nothing was written"
                ) from exc
            raise StoreError(f"store {self.name!r}: writing {key} failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
            meta_tmp.unlink(missing_ok=True)
        return ObjectInfo(key, size, sha256, sha256)

    def delete(self, key: str) -> None:
        with self._lock(key):
            self._data(key).unlink(missing_ok=True)
            self._meta(key).unlink(missing_ok=True)

    def head(self, key: str) -> ObjectInfo | None:
        found = self._open(key)
        if found is None:
            return None
        found[0].close()
        return found[1]

    def list_keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for folder, dirs, files in os.walk(self.root):
            # .meta, .tmp and .locks hold the store's own bookkeeping, not objects
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                key = Path(folder, file).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def _get(self, key: str) -> tuple[bytes, ObjectInfo]:
        handle, info = self._opened(key)
        with handle:
            return handle.read(), info

    def _fetch(self, key: str, dest: Path) -> ObjectInfo:
        handle, info = self._opened(key)
        with handle, open(dest, "wb") as out:
            shutil.copyfileobj(handle, out, CHUNK)
        return info

    def _chunks(self, key: str) -> Iterator[bytes]:
        handle, _ = self._opened(key)
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk


def _copy(payload: bytes | Path, fd: int) -> hashlib._Hash:
    """Write ``payload`` to ``fd`` (then fsync and close it), hashing what was written."""
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out:
        if isinstance(payload, bytes):
            out.write(payload)
            digest.update(payload)
        else:
            with open(payload, "rb") as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest
