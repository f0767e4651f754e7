"""What every store offers, and the one method through which every write passes.

``Store._write`` checks the key, asks the crossing policy (``pipelines.registry.policy``), then
hands the bytes to the backend, which verifies what it stored before returning. Reads verify
the other way: the bytes fetched must hash to the sha256 recorded in the object's metadata
(and to the one the caller expects, from a version's marker) before anyone sees them.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.io import atomic_path
from pipelines.registry.errors import ChecksumMismatch, ObjectMissing
from pipelines.registry.names import check_key
from pipelines.registry.policy import CrossingPolicy

log = logging.getLogger("recflow.registry.store")

CHUNK = 2**20


@dataclass(frozen=True)
class ObjectInfo:
    """An object as the store describes it.

    Attributes:
        key: Its key under the store's root.
        size: Its length in bytes.
        sha256: The sha256 recorded in its metadata when it was written (None: not recorded).
        etag: The store's entity tag, the token of conditional writes.
    """

    key: str
    size: int
    sha256: str | None
    etag: str


def sha256_of(payload: bytes | Path) -> tuple[str, int]:
    """The hex sha256 and the length of ``payload`` (bytes, or a file read in chunks)."""
    if isinstance(payload, bytes):
        return hashlib.sha256(payload).hexdigest(), len(payload)
    digest = hashlib.sha256()
    size = 0
    with open(payload, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Store(ABC):
    """An object store of the registry: a name, a role, and verified reads and writes.

    Attributes:
        name: The cloud it serves (``private``, ``public``) or ``backup``.
        role: ``record`` (may hold anything) or ``replica`` (only what may cross).
        url: Where it is, without credentials.
    """

    def __init__(self, name: str, role: str, url: str, policy: CrossingPolicy) -> None:
        self.name = name
        self.role = role
        self.url = url
        self.policy = policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.url!r})"

    def where(self, key: str) -> str:
        """``key`` and the store, for messages."""
        return f"{key} in store {self.name!r} ({self.url})"

    # -- writes: all of them go through _write -------------------------------------------------

    def put_file(self, key: str, path: Path, kind: str) -> ObjectInfo:
        """Upload the file ``path`` as ``key``, with its sha256 in the object's metadata.

        Raises:
            PolicyViolation: The object may not be written to this store (nothing was sent).
            StoreError: The store failed, or holds other bytes than were sent.
        """
        return self._write(key, kind, path, if_match=None, if_none_match=False)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        kind: str,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> ObjectInfo:
        """Write ``data`` as ``key``; optionally only if its ETag is ``if_match``, or only if
        it does not exist (``if_none_match``): compare-and-set.

        Raises:
            ConditionFailed: The condition did not hold; nothing was written.
            PolicyViolation: The object may not be written to this store (nothing was sent).
            StoreError: The store failed, or holds other bytes than were sent.
        """
        return self._write(key, kind, data, if_match=if_match, if_none_match=if_none_match)

    def _write(
        self,
        key: str,
        kind: str,
        payload: bytes | Path,
        *,
        if_match: str | None,
        if_none_match: bool,
    ) -> ObjectInfo:
        check_key(key)
        self.policy.check(self.name, self.role, key, kind, payload)
        sha256, size = sha256_of(payload)
        info = self._put(key, payload, sha256, size, if_match=if_match, if_none_match=if_none_match)
        log.debug("wrote %s (%d bytes, sha256 %s)", self.where(key), size, sha256[:12])
        return info

    @abstractmethod
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
        """Store ``payload`` under ``key`` with ``sha256`` as metadata and verify it landed."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if it does not exist)."""

    # -- reads ---------------------------------------------------------------------------------

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's description, None if it does not exist."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key that starts with ``prefix``, sorted."""

    @abstractmethod
    def _get(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The object's bytes and description, unverified; ObjectMissing if absent."""

    @abstractmethod
    def _fetch(self, key: str, dest: Path) -> ObjectInfo:
        """Copy the object into the file ``dest``, unverified; ObjectMissing if absent."""

    @abstractmethod
    def _chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks; ObjectMissing if absent."""

    def read(self, key: str, expected_sha256: str | None = None) -> tuple[bytes, ObjectInfo]:
        """The object's bytes, after checking them against its recorded sha256.

        Args:
            key: The object.
            expected_sha256: What the caller knows it must hash to (from a marker), if anything.

        Raises:
            ObjectMissing: No such object.
            ChecksumMismatch: Its bytes do not hash to what is recorded; nothing is returned.
        """
        data, info = self._get(key)
        self._verify(key, hashlib.sha256(data).hexdigest(), info, expected_sha256)
        return data, info

    def download(self, key: str, dest: Path, expected_sha256: str | None = None) -> ObjectInfo:
        """Copy the object to the file ``dest`` (atomically), verified like :meth:`read`.

        Raises:
            ObjectMissing: No such object.
            ChecksumMismatch: Its bytes do not hash to what is recorded; ``dest`` is untouched.
        """
        with atomic_path(dest) as tmp:
            info = self._fetch(key, tmp)
            actual, _ = sha256_of(tmp)
            self._verify(key, actual, info, expected_sha256)
        return info

    def rehash(self, key: str) -> str:
        """The sha256 of the object's bytes as the store serves them now (streamed).

        Raises:
            ObjectMissing: No such object.
        """
        digest = hashlib.sha256()
        for chunk in self._chunks(key):
            digest.update(chunk)
        return digest.hexdigest()

    def _verify(self, key: str, actual: str, info: ObjectInfo, expected: str | None) -> None:
        if info.sha256 is None:
            raise ChecksumMismatch(
                f"{self.where(key)} has no sha256 in its metadata: it was not written by the "
                "registry, so it is not used"
            )
        for recorded, by in ((info.sha256, "its metadata"), (expected, "the version's marker")):
            if recorded is not None and actual != recorded:
                raise ChecksumMismatch(
                    f"{self.where(key)} hashes to sha256 {actual[:12]}…, but {by} records "
                    f"{recorded[:12]}…: the object was changed or corrupted, and was not used"
                )

    def require(self, key: str) -> ObjectInfo:
        """The object's description.

        Raises:
            ObjectMissing: It does not exist.
        """
        info = self.head(key)
        if info is None:
            raise ObjectMissing(f"{self.where(key)} is missing")
        return info
