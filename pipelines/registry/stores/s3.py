"""A registry store in an S3 bucket through boto3: AWS S3, or MinIO and Ceph RGW through
``endpoint_url``.

Uploads use boto3's managed transfer (multipart above the threshold) and botocore's retry modes;
every object carries its sha256 as metadata. After an upload the object is described again and
must show that sha256, the size sent and, where S3's ETag is an MD5 (no KMS), the ETag of the
bytes sent, part by part for a multipart upload: the server's own hash of what it stored.
Conditional writes use ``IfMatch`` (the ETag read) and ``IfNoneMatch='*'`` (create only).
Every botocore failure becomes a registry error that names the store, the endpoint or bucket,
and never the credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from s3transfer.utils import ChunksizeAdjuster

from pipelines.core.params import RegistryConfig, StoreConfig
from pipelines.registry.errors import (
    AccessDenied,
    BucketMissing,
    ChecksumMismatch,
    ConditionFailed,
    ObjectMissing,
    StoreError,
    StoreUnreachable,
    TransferInterrupted,
)
from pipelines.registry.policy import CrossingPolicy
from pipelines.registry.stores.base import CHUNK, ObjectInfo, Store
from pipelines.registry.stores.credentials import redact, secrets_of

T = TypeVar("T")
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
    "403",
}
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)
_MiB = 2**20


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (boto3's upload and retry errors hide the botocore one)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "last_exception", None)
        current = wrapped or current.__cause__ or current.__context__


class S3Store(Store):
    """A store at ``s3://bucket/prefix``."""

    def __init__(
        self,
        name: str,
        cfg: StoreConfig,
        registry: RegistryConfig,
        policy: CrossingPolicy,
        session: boto3.Session,
        endpoint: str | None,
    ) -> None:
        super().__init__(name, cfg.role, cfg.url, policy)
        self.bucket, _, prefix = cfg.url.removeprefix("s3://").partition("/")
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        self.region = cfg.region
        self.session = session
        retries = registry.retries
        self.attempts = retries.max_attempts
        self.client = session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=cfg.region,
            config=Config(
                retries={"mode": retries.mode, "total_max_attempts": retries.max_attempts},
                connect_timeout=retries.connect_timeout_s,
                read_timeout=retries.read_timeout_s,
                signature_version="s3v4",
                # S3-compatible servers (MinIO, Ceph RGW, loopback) address buckets by path
                s3={"addressing_style": "path"} if endpoint else {},
            ),
        )
        transfer = registry.transfer
        self.transfer = TransferConfig(
            multipart_threshold=int(transfer.multipart_threshold_mb * _MiB),
            multipart_chunksize=int(transfer.multipart_chunksize_mb * _MiB),
            max_concurrency=transfer.max_concurrency,
        )
        self.sse: dict[str, str] = {}
        if cfg.encryption != "none":
            self.sse["ServerSideEncryption"] = cfg.encryption
        if cfg.kms_key_id:
            self.sse["SSEKMSKeyId"] = cfg.kms_key_id
        # with SSE-KMS, S3's ETag is not an MD5 of the bytes and cannot be checked locally
        self.etag_is_md5 = cfg.encryption != "aws:kms"
        self._bucket_checked = False

    @property
    def endpoint_name(self) -> str:
        """The endpoint, for messages."""
        return self.endpoint or f"AWS S3 ({self.region or 'default region'})"

    def _translate(self, exc: BaseException, what: str) -> StoreError:
        """The registry error for a failed boto3 call, with the credentials removed."""
        secrets = secrets_of(self.session)
        where = f"store {self.name!r} ({self.url} at {self.endpoint_name})"
        for inner in _chain(exc):
            if isinstance(inner, _UNREACHABLE):
                return StoreUnreachable(
                    f"{where}: the endpoint did not answer {what} after {self.attempts} "
                    f"attempt(s): {redact(str(inner), secrets)}"
                )
            if isinstance(inner, NoCredentialsError | PartialCredentialsError):
                return AccessDenied(
                    f"{where}: no credentials for {what} (set them in the environment, an AWS "
                    "profile or an Airflow connection)"
                )
            if isinstance(inner, ClientError):
                error = inner.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = inner.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                message = redact(str(error.get("Message", "")), secrets)
                if code == "NoSuchBucket":
                    return BucketMissing(f"{where}: bucket {self.bucket!r} does not exist")
                if code in _DENIED or status == 403:
                    return AccessDenied(
                        f"{where} refused the credentials for {what} ({code}: {message})"
                    )
                if code in {"PreconditionFailed", "412"} or status == 412:
                    return ConditionFailed(f"{where}: {what}: the object changed meanwhile")
                if code in {"NoSuchKey", "404", "NotFound"} or status == 404:
                    return ObjectMissing(f"{where}: {what}: not found")
                return StoreError(f"{where}: {what} failed ({code}: {message})")
            if isinstance(inner, BotoCoreError):
                return StoreError(f"{where}: {what} failed: {redact(str(inner), secrets)}")
        return TransferInterrupted(
            f"{where}: {what} stopped part-way ({type(exc).__name__}: "
            f"{redact(str(exc), secrets)}); no partial object is visible"
        )

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self._bucket_checked:
            self._check_bucket()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._translate(exc, what) from None

    def _check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            error = self._translate(exc, f"checking bucket {self.bucket!r}")
            if isinstance(error, ObjectMissing):
                error = BucketMissing(
                    f"store {self.name!r} ({self.url} at {self.endpoint_name}): bucket "
                    f"{self.bucket!r} does not exist"
                )
            raise error from None
        self._bucket_checked = True

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _digests(self, payload: bytes | Path, size: int) -> tuple[str, str | None]:
        """The sha256 of ``payload`` and the ETag S3 computes for it when uploaded with this
        store's transfer config (None with SSE-KMS), in one read of the bytes."""
        multipart = isinstance(payload, Path) and size >= self.transfer.multipart_threshold
        part = (
            ChunksizeAdjuster().adjust_chunksize(self.transfer.multipart_chunksize, size)
            if multipart
            else size + 1  # one part: its boundary is never reached
        )
        sha256 = hashlib.sha256()
        parts: list[bytes] = []
        current, filled = hashlib.md5(usedforsecurity=False), 0
        with contextlib.ExitStack() as stack:
            if isinstance(payload, bytes):
                chunks: Iterator[bytes] = iter([payload])
            else:
                handle = stack.enter_context(open(payload, "rb"))
                chunks = iter(lambda: handle.read(CHUNK), b"")
            for chunk in chunks:
                sha256.update(chunk)
                while chunk:
                    piece, chunk = chunk[: part - filled], chunk[part - filled :]
                    current.update(piece)
                    filled += len(piece)
                    if filled == part:
                        parts.append(current.digest())
                        current, filled = hashlib.md5(usedforsecurity=False), 0
        if filled or not parts:
            parts.append(current.digest())
        if not self.etag_is_md5:
            return sha256.hexdigest(), None
        if not multipart:
            return sha256.hexdigest(), f'"{parts[0].hex()}"'
        combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
        return sha256.hexdigest(), f'"{combined}-{len(parts)}"'

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
        extra: dict[str, Any] = {"Metadata": {"sha256": sha256}, **self.sse}
        what = f"writing {key}"
        # the ETag of these very bytes: if the source changes from here on, the stored object's
        # ETag will not match, and if it changed since it was hashed, the sha256 does not
        now, expected_etag = self._digests(payload, size)
        if now != sha256:
            raise StoreError(
                f"{key}: the source changed while it was written to store {self.name!r}"
            )
        if isinstance(payload, Path):
            if if_match is not None or if_none_match:
                raise ValueError("conditional writes take bytes, not files")
            self._call(
                what,
                self.client.upload_file,
                str(payload),
                self.bucket,
                self._key(key),
                ExtraArgs=extra,
                Config=self.transfer,
            )
        else:
            if if_match is not None:
                extra["IfMatch"] = if_match
            if if_none_match:
                extra["IfNoneMatch"] = "*"
            self._call(
                what,
                self.client.put_object,
                Bucket=self.bucket,
                Key=self._key(key),
                Body=payload,
                **extra,
            )
        info = self.head(key)
        if info is None:
            raise ObjectMissing(f"{self.where(key)} is missing right after its upload")
        if (
            info.sha256 != sha256
            or info.size != size
            or (expected_etag is not None and info.etag != expected_etag)
        ):
            raise ChecksumMismatch(
                f"{self.where(key)} does not hold what was uploaded (size {info.size} of {size}, "
                f"ETag {info.etag} for {expected_etag}): the upload is not trusted"
            )
        return info

    def delete(self, key: str) -> None:
        self._call(
            f"deleting {key}", self.client.delete_object, Bucket=self.bucket, Key=self._key(key)
        )

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self._call(
                f"reading {key}", self.client.head_object, Bucket=self.bucket, Key=self._key(key)
            )
        except ObjectMissing:
            return None
        return self._info(key, response)

    @staticmethod
    def _info(key: str, response: dict[str, Any]) -> ObjectInfo:
        metadata = response.get("Metadata") or {}
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            sha256=metadata.get("sha256"),
            etag=str(response["ETag"]),
        )

    def list_keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[str] = []

        def collect() -> None:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                found.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))

        self._call(f"listing {prefix or '/'}", collect)
        return sorted(found)

    def _get(self, key: str) -> tuple[bytes, ObjectInfo]:
        def get() -> tuple[bytes, ObjectInfo]:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), self._info(key, response)

        try:
            return self._call(f"reading {key}", get)
        except ObjectMissing:
            raise ObjectMissing(f"{self.where(key)} is missing") from None

    def _fetch(self, key: str, dest: Path) -> ObjectInfo:
        info = self.head(key)
        if info is None:
            raise ObjectMissing(f"{self.where(key)} is missing")
        # the managed download pins the ETag it saw to every ranged GET; an overwrite between
        # our description and its own shows up as a checksum mismatch when the bytes are checked
        self._call(
            f"downloading {key}",
            self.client.download_file,
            self.bucket,
            self._key(key),
            str(dest),
            Config=self.transfer,
        )
        return info

    def _chunks(self, key: str) -> Iterator[bytes]:
        try:
            response = self._call(
                f"reading {key}", self.client.get_object, Bucket=self.bucket, Key=self._key(key)
            )
        except ObjectMissing:
            raise ObjectMissing(f"{self.where(key)} is missing") from None
        try:
            yield from response["Body"].iter_chunks(CHUNK)
        except Exception as exc:
            raise self._translate(exc, f"reading {key}") from None
