"""The model registry: its ``stores`` (one per cloud) and the ``registry`` section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, model_validator

from pipelines.core.params.base import FilePath, Items, StrictModel

# What a registry object is; the crossing policy decides by kind which objects may be written
# to a store of role ``replica`` (the public cloud). Each kind is named once, in one group.
# The kinds that cross by default (``registry.crossing.allow``): what a replica serves and
# audits a version with.
CrossingKind = Literal[
    "model",
    "artifact",
    # what the model's item indices mean in the catalog: item ids, categories, prices, popularity
    "item_table",
    "manifest",
    "metrics",
    "verdict",
    "report",
    "lineage",
    "version_marker",
    "alias",
    # the number and sha256 of the private ledger's newest entry, and the alias and version
    # it set: hashes and names only
    "ledger_head",
    # what the monitor compares a version's traffic with (a version's ``monitoring/``): features
    # of the held-out requests and counts per item id; no user ids, no raw events
    "monitoring_reference",
]
# The kinds never written to a replica, whatever ``registry.crossing.allow`` says.
PrivateKind = Literal[
    "raw_events",
    "validated_batch",
    "prepared_sequences",
    "user_ids",
    "secret",
]
# Every kind: the two groups and the registry's own records (its ledger, backup manifests),
# which cross only where ``registry.crossing.allow`` lists them.
ObjectKind = Literal[CrossingKind, "ledger", "backup_manifest", PrivateKind]
NEVER_CROSS: frozenset[str] = frozenset(get_args(PrivateKind))
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_ALIAS_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class StoreConfig(StrictModel):
    """One object store of the registry (``s3://bucket/prefix`` or ``file:path``).

    Credentials never appear here: they come from the environment, an AWS profile
    (``profile``) or an Airflow connection exported as ``AIRFLOW_CONN_<ID>`` (``connection``).
    """

    url: str
    # record: the registry of record (every object); replica: only what may cross
    role: Literal["record", "replica"]
    region: str | None = None
    encryption: Literal["none", "AES256", "aws:kms"] = "none"
    kms_key_id: str | None = None
    # S3-compatible endpoint (MinIO, Ceph RGW); None: AWS. RECFLOW_STORE_<NAME>_ENDPOINT_URL
    # in the environment overrides it.
    endpoint_url: str | None = None
    # served by the loopback S3-compatible server that `make run` starts and stops
    loopback: bool = False
    profile: str | None = None
    connection: str | None = None
    # a file store refuses a write that would leave less than this free on its volume
    min_free_mb: float = Field(64.0, ge=0.0)

    @model_validator(mode="after")
    def _consistent(self) -> StoreConfig:
        scheme, _, rest = self.url.partition(":")
        if scheme == "s3":
            bucket, _, prefix = rest.removeprefix("//").partition("/")
            if not rest.startswith("//") or not _BUCKET.fullmatch(bucket):
                raise ValueError(f"{self.url!r} is not s3://<bucket>[/<prefix>]")
            if prefix and not all(
                _PREFIX_SEGMENT.fullmatch(s) for s in prefix.strip("/").split("/")
            ):
                raise ValueError(
                    f"{self.url!r}: each prefix segment is letters, digits, . _ - "
                    "and starts with no dot"
                )
        elif scheme == "file":
            if not rest.removeprefix("//"):
                raise ValueError(f"{self.url!r} names no folder")
            extras = [
                name
                for name in ("endpoint_url", "profile", "connection", "kms_key_id")
                if getattr(self, name) is not None
            ]
            if extras or self.loopback or self.encryption != "none":
                raise ValueError(
                    f"a file store takes no {', '.join(extras) or 'loopback or encryption'}: "
                    "encryption at rest is the volume's"
                )
        else:
            raise ValueError(f"store url {self.url!r} must start with s3:// or file:")
        if self.kms_key_id is not None and self.encryption != "aws:kms":
            raise ValueError("kms_key_id needs encryption: aws:kms")
        if self.profile is not None and self.connection is not None:
            raise ValueError("give a profile or a connection, not both")
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(f"endpoint_url {self.endpoint_url!r} must be an http(s) URL")
        return self


class StoresConfig(StrictModel):
    """The two clouds' stores: ``private`` (on premises) and ``public``."""

    private: StoreConfig = StoreConfig(url="file:stores/private", role="record")
    public: StoreConfig = StoreConfig(
        url="s3://recflow-public/registry", role="replica", region="us-east-1", loopback=True
    )

    @model_validator(mode="after")
    def _one_record(self) -> StoresConfig:
        records = [name for name in ("private", "public") if getattr(self, name).role == "record"]
        if len(records) != 1:
            raise ValueError(f"exactly one store must have role record, found {records or 'none'}")
        return self


class CrossingConfig(StrictModel):
    """What may be written to a replica store (the public cloud)."""

    allow: Items[ObjectKind] = get_args(CrossingKind)
    # JSON fields holding user or session ids: pseudonymized before anything crosses
    id_fields: Items[str] = ("user_id", "session_id")

    @model_validator(mode="after")
    def _never(self) -> CrossingConfig:
        forbidden = sorted(set(self.allow) & NEVER_CROSS)
        if forbidden:
            raise ValueError(f"{', '.join(forbidden)} never leave the private cloud")
        return self


class TransferSettings(StrictModel):
    """boto3's managed transfer: multipart above the threshold."""

    multipart_threshold_mb: float = Field(8.0, gt=0.0)
    multipart_chunksize_mb: float = Field(8.0, ge=5.0)  # S3's smallest part is 5 MiB
    max_concurrency: int = Field(4, ge=1, le=64)


class RetrySettings(StrictModel):
    """botocore's retry configuration and timeouts."""

    mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = Field(3, ge=1, le=20)
    connect_timeout_s: float = Field(2.0, gt=0.0)
    read_timeout_s: float = Field(30.0, gt=0.0)


class RegistryConfig(StrictModel):
    """The model registry: what the register step promotes, what the gate reads, transfers."""

    # the alias a rollout moves when it completes in a cloud (what serves there)
    promote_alias: str = "production"
    # the register step replicates a version that passed the gate to these clouds and points
    # candidate_alias at it there; a rollout then moves promote_alias (recflow deploy)
    promote_clouds: Items[Literal["private", "public"]] = ("private", "public")
    candidate_alias: str = "candidate"
    # the gate's production model: this alias in this cloud
    gate_alias: str = "production"
    gate_cloud: Literal["private", "public"] = "private"
    # verified local copies of fetched versions
    cache: FilePath = Path("stores/cache")
    crossing: CrossingConfig = CrossingConfig()
    transfer: TransferSettings = TransferSettings()
    retries: RetrySettings = RetrySettings()

    @model_validator(mode="after")
    def _aliases(self) -> RegistryConfig:
        for alias in (self.promote_alias, self.gate_alias, self.candidate_alias):
            if not _ALIAS_NAME.fullmatch(alias):
                raise ValueError(f"alias {alias!r} must match {_ALIAS_NAME.pattern}")
        if self.candidate_alias == self.promote_alias:
            raise ValueError(
                f"candidate_alias and promote_alias are both {self.promote_alias!r}: a gated "
                "version waits under the first until its rollout moves the second"
            )
        return self
