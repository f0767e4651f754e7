"""Strict, typed configuration loaded from ``params.yaml``.

Every tunable lives in ``params.yaml``. Each stage reads its own section into a frozen
pydantic model that rejects unknown keys and wrong types, so a typo in ``params.yaml`` is
an error naming the key instead of a silently ignored setting.

Nothing is coerced from another type: ``min_rows: "250"``, ``progress: "yes"`` or
``epochs: 2.5`` are errors. An integer is a valid float. Three conversions are explicit:
dates are read from ``YYYY-MM-DD`` strings (or the date YAML makes of an unquoted one), the
lists of YAML and JSON fill tuple fields, and path fields take strings.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

DEFAULT_PARAMS = Path("params.yaml")

T = TypeVar("T")

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# text that YAML 1.1 leaves a string although it reads as a number, e.g. 1e-3 (no dot)
_NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """``params.yaml`` is missing, unreadable, or does not match the typed config."""


def _date(value: Any) -> Any:
    """A date from ``YYYY-MM-DD`` text or a date object (what YAML makes of an unquoted date)."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"expected a date without a time (YYYY-MM-DD), got {value.isoformat()}")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date ({exc})") from exc
    raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}")


def _tuple(value: Any) -> Any:
    """A list (all YAML and JSON have) becomes a tuple; its items are still checked strictly."""
    return tuple(value) if isinstance(value, list) else value


def _path(value: Any) -> Any:
    if isinstance(value, str):
        if not value:
            raise ValueError("a path must not be empty")
        return Path(value)
    return value


Date = Annotated[dt.date, BeforeValidator(_date)]
Items = Annotated[tuple[T, ...], BeforeValidator(_tuple)]
FilePath = Annotated[Path, BeforeValidator(_path)]


class StrictModel(BaseModel):
    """Base for config sections: frozen, unknown keys rejected, no silent coercion."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RunConfig(StrictModel):
    """The run: its logical date (set by Airflow per run, or by hand) and the global seed."""

    logical_date: Date
    seed: int = 42


class DriftConfig(StrictModel):
    """Knobs that shift the synthetic traffic away from the reference, for monitoring tests."""

    category_shift: float = Field(0.0, ge=0.0, le=1.0)
    price_inflation: float = Field(0.0, ge=-0.9, le=10.0)
    new_item_share: float = Field(0.0, ge=0.0, le=1.0)
    popularity_shift: float = Field(0.0, ge=0.0, le=1.0)


class GenerateConfig(StrictModel):
    """Synthetic clickstream generator: a preset plus drift knobs."""

    preset: Literal["tiny", "default", "large"] = "default"
    days: int = Field(35, ge=1, le=3650)
    drift: DriftConfig = DriftConfig()


class IngestConfig(StrictModel):
    """Where events come from and which window becomes the run's batch."""

    source: Literal["synthetic", "recbole", "movielens", "retailrocket", "table"] = "synthetic"
    path: str = "data/source/synthetic"
    window_days: int = Field(28, ge=1, le=3650)
    column_map: dict[str, str] = Field(default_factory=dict)
    default_price: float = Field(1.0, gt=0.0)
    default_category: str = "unknown"
    # For sources without timestamps in the logical window (historic public data sets):
    # shift all timestamps so that the newest event falls on the logical date.
    align_to_logical_date: bool = False


class ValidateConfig(StrictModel):
    """Thresholds of the Great Expectations suite over an event batch."""

    min_rows: int = Field(100, ge=1)
    max_rows: int = Field(50_000_000, ge=1)
    price_min: float = Field(0.01, gt=0.0)
    price_max: float = Field(100_000.0, gt=0.0)
    max_id_length: int = Field(128, ge=1)
    min_timestamp: Date = dt.date(1990, 1, 1)
    max_share_unseen_items: float = Field(0.5, ge=0.0, le=1.0)
    max_share_unseen_users: float = Field(0.95, ge=0.0, le=1.0)
    min_events_per_user: int = Field(3, ge=1)
    max_share_users_few_events: float = Field(0.8, ge=0.0, le=1.0)
    min_share_items_in_catalog: float = Field(1.0, ge=0.0, le=1.0)
    example_values: int = Field(5, ge=1, le=50)


class TimeSplitConfig(StrictModel):
    """Time split: the last ``test_days`` are test, the ``valid_days`` before are validation."""

    valid_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)


class PrepareConfig(StrictModel):
    """Sequence building and splitting."""

    split: Literal["leave_one_out", "time"] = "leave_one_out"
    time_split: TimeSplitConfig = TimeSplitConfig()
    event_types: Items[Literal["view", "add_to_cart", "purchase"]] = (
        "view",
        "add_to_cart",
        "purchase",
    )
    dedupe_consecutive: bool = True
    min_sequence_length: int = Field(3, ge=3)
    max_sequence_length: int = Field(200, ge=3)
    price_bins: int = Field(20, ge=2, le=1000)


class TrainConfig(StrictModel):
    """SASRec and its training loop (the ``train`` section of ``params.yaml``)."""

    hidden: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    max_len: int = Field(50, ge=2)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    category_feature: bool = True
    # embed each step's event type (view / add_to_cart / purchase) beside its item
    event_type_feature: bool = False
    # a learned score offset for items already in the history: the model learns whether users
    # repeat (repeat purchases) or never do (films rated once) (pipelines/model/sasrec.py)
    repeat_term: bool = False
    # score with the input item embedding (true, as SASRec) or an output item table of its own
    tie_embeddings: bool = True
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    # share of the full-softmax target mass spread over all items (0: plain cross-entropy)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # decay of an exponential moving average of the weights, updated every optimizer step and
    # evaluated and saved in place of the raw weights (0: off; pipelines/model/training/averaging)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(256, ge=1)
    # None: one training window per sequence (its newest steps); an integer: also the windows
    # ending every `window_stride` steps further back, so long histories are used in full
    window_stride: int | None = Field(None, ge=1)
    # "all": every target of every window, so with window_stride < max_len a step is trained
    # several times per epoch; "newest": a window trains only the targets no older window holds,
    # so each step once per epoch, with at least max_len - window_stride steps of context
    window_targets: Literal["all", "newest"] = "all"
    epochs: int = Field(200, ge=1)
    # evaluations without improvement of validation NDCG@10 before stopping
    patience: int = Field(10, ge=1)
    grad_clip: float | None = Field(1.0, gt=0.0)
    # None: the run's seed
    seed: int | None = None
    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax"
    num_negatives: int = Field(256, ge=1)
    negative_sampler: Literal["uniform", "popularity"] = "popularity"
    # exclude the user's history items from the ranking (for catalogues without repeats)
    mask_history: bool = False
    # order of equal scores in the ranking: "index" (the more popular item first) or "topk"
    # (torch.topk's order, as RecBole's evaluator; pipelines/model/ranking.py)
    ties: Literal["index", "topk"] = "index"
    eval_every: int = Field(1, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    # torch intra-op threads per process; None: torch's default
    threads: int | None = Field(None, ge=1)
    progress: bool = True
    # torchrun workers on one machine (dvc.yaml and the DAG launch this many)
    nproc_per_node: int = Field(2, ge=1, le=64)

    def model_fields_differ(self, other: TrainConfig) -> list[str]:
        """Fields that change the model or the data it sees (a checkpoint cannot continue)."""
        shape = (
            "hidden",
            "layers",
            "heads",
            "max_len",
            "category_feature",
            "event_type_feature",
            "repeat_term",
            "tie_embeddings",
            "seed",
            "window_stride",
            "window_targets",
            "ema_decay",
        )
        return [name for name in shape if getattr(self, name) != getattr(other, name)]


class ParityThreshold(StrictModel):
    """How close an artifact must stay to the fp32 PyTorch model."""

    max_abs_error: float = Field(gt=0.0)
    min_top10_overlap: float = Field(ge=0.0, le=1.0)


def _parity_defaults() -> dict[Literal["fp32", "fp16", "bf16", "int8"], ParityThreshold]:
    return {
        "fp32": ParityThreshold(max_abs_error=1e-3, min_top10_overlap=0.99),
        "fp16": ParityThreshold(max_abs_error=0.05, min_top10_overlap=0.97),
        "bf16": ParityThreshold(max_abs_error=0.1, min_top10_overlap=0.95),
        "int8": ParityThreshold(max_abs_error=0.5, min_top10_overlap=0.95),
    }


class ParityConfig(StrictModel):
    """Parity check of every artifact against the fp32 PyTorch model on held-out sequences."""

    sequences: int = Field(1000, ge=1)
    thresholds: dict[Literal["fp32", "fp16", "bf16", "int8"], ParityThreshold] = Field(
        default_factory=_parity_defaults
    )


class BatchProfile(StrictModel):
    """Batch sizes a TensorRT engine is optimized for."""

    min: int = Field(1, ge=1)
    opt: int = Field(32, ge=1)
    max: int = Field(256, ge=1)


class TensorRTConfig(StrictModel):
    """TensorRT engines (built only where a CUDA GPU and the tensorrt package exist)."""

    precisions: Items[Literal["fp16", "bf16", "int8"]] = ("fp16", "bf16", "int8")
    profile: BatchProfile = BatchProfile()
    workspace_mb: int = Field(2048, ge=64)
    calibration_sequences: int = Field(512, ge=1)


class LatencyConfig(StrictModel):
    """Latency measurement of each artifact beside torch eager."""

    batches: Items[int] = (1, 32, 256)
    warmup: int = Field(3, ge=0)
    iterations: int = Field(30, ge=2)
    rounds: int = Field(5, ge=1)  # the backends take turns in this many rounds per batch size
    settle_s: float = Field(0.2, ge=0.0, le=5.0)  # pause before each turn (idle threads stop)


# serving artifacts, best first: exact GPU engines, then the CPU ones (fp32 before INT8)
SHIP_ORDER: tuple[str, ...] = (
    "tensorrt-fp16",
    "tensorrt-bf16",
    "tensorrt-int8",
    "torch-compile-bf16",
    "torch-compile-fp16",
    "onnxruntime-fp32",
    "onnxruntime-int8",
)


class OptimizeConfig(StrictModel):
    """The ``optimize`` stage: ONNX export, runtime artifacts, parity and latency."""

    top_k: int = Field(20, ge=1)
    opset: int = Field(17, ge=13)
    # intra-op threads of ONNX Runtime and of torch eager when they are timed side by side
    threads: int | None = Field(2, ge=1)
    onnxruntime_int8: bool = True
    # the first artifact of this list that passes parity is the one serving uses
    ship_order: Items[str] = SHIP_ORDER
    parity: ParityConfig = ParityConfig()
    latency: LatencyConfig = LatencyConfig()
    tensorrt: TensorRTConfig = TensorRTConfig()


class QualityGate(StrictModel):
    """Quality thresholds of the candidate on the golden set, per metric."""

    min_absolute: dict[Literal["ndcg@10", "recall@10"], float] = Field(
        default_factory=lambda: cast(
            dict[Literal["ndcg@10", "recall@10"], float], {"ndcg@10": 0.05, "recall@10": 0.1}
        )
    )
    # allowed drop against production: max(max_absolute_drop, max_relative_drop * production)
    max_absolute_drop: float = Field(0.005, ge=0.0)
    max_relative_drop: float = Field(0.02, ge=0.0)
    bootstrap_samples: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


class EvaluateConfig(StrictModel):
    """The ``evaluate`` stage: the regression gate of the candidate against production."""

    golden_users: int = Field(2000, ge=1)
    quality: QualityGate = QualityGate()
    on_inconclusive: Literal["block", "pass"] = "block"
    latency_p99_ms: float = Field(50.0, gt=0.0)
    latency_requests: int = Field(200, ge=10)
    max_artifact_mb: float = Field(200.0, gt=0.0)
    # scores of one user alone and inside a batch may differ by this much (float reordering)
    invariance_tolerance: float = Field(1e-4, ge=0.0)


class AirflowConfig(StrictModel):
    """Scheduling of the ``recsys_retrain`` DAG."""

    schedule: str = "0 2 * * *"
    start_date: Date = dt.date(2026, 1, 1)
    retries: int = Field(2, ge=0)
    retry_delay_minutes: float = Field(5.0, ge=0.0)
    # multiplier between successive retry delays (0 = constant delay), capped by the max below
    retry_exponential_backoff: float = Field(2.0, ge=0.0)
    max_retry_delay_minutes: float = Field(60.0, ge=0.0)
    execution_timeout_minutes: float = Field(120.0, gt=0.0)
    tags: Items[str] = ("recflow", "recsys")


class PodResources(StrictModel):
    """CPU and memory of a stage pod, as Kubernetes quantities (``"500m"``, ``"2Gi"``)."""

    cpu: str = "1"
    memory: str = "2Gi"


class TrainingTopology(StrictModel):
    """Multi-node training on Kubernetes: an Indexed Job of ``nodes`` pods running torchrun."""

    nodes: int = Field(2, ge=1, le=1024)
    nproc_per_node: int = Field(1, ge=1, le=64)
    gpus_per_node: int = Field(1, ge=0, le=64)
    rdzv_port: int = Field(29400, ge=1024, le=65535)
    max_restarts: int = Field(3, ge=0)
    shm_size: str = "8Gi"
    cpu: str = "8"
    memory: str = "32Gi"


class ExecutionConfig(StrictModel):
    """Where stage commands run: this machine, or pods on Kubernetes."""

    backend: Literal["local", "kubernetes"] = "local"
    namespace: str = "recflow"
    image: str = "recflow:0.1.0"
    service_account: str = "recflow"
    # a volume holding a checkout of the project (git clone + dvc pull) and its DVC cache
    workspace_volume_claim: str = "recflow-workspace"
    # where the workspace volume is mounted in stage pods; the stage commands run there
    workspace_dir: str = "/workspace"
    requests: PodResources = PodResources(cpu="1", memory="2Gi")
    limits: PodResources = PodResources(cpu="2", memory="4Gi")
    gpu_stages: Items[str] = ()
    training: TrainingTopology = TrainingTopology()


class ServeBatching(StrictModel):
    """Dynamic batching: concurrent requests grouped into one model call."""

    enabled: bool = True
    max_batch: int = Field(64, ge=1, le=4096)
    # after the first request of a batch, wait this long for more (0: take what is queued;
    # requests that arrive while a model call runs form the next batch either way)
    max_wait_ms: float = Field(0.0, ge=0.0, le=100.0)


class ServeCache(StrictModel):
    """The recommendation cache (LRU with a time to live), cleared on every model change."""

    enabled: bool = True
    size: int = Field(20_000, ge=1)
    ttl_s: float = Field(60.0, gt=0.0)
    # at load: the answers for a cold-start user and for the histories of one popular item
    warm_items: int = Field(100, ge=0)


class ServeLimits(StrictModel):
    """Bounds of a request: larger ones get a 4xx naming the field."""

    max_history: int = Field(500, ge=1)
    max_body_bytes: int = Field(65_536, ge=1024)
    max_id_length: int = Field(128, ge=1)


class ServeRateLimit(StrictModel):
    """Requests per second and burst allowed per client token (across all workers)."""

    requests_per_s: float = Field(5_000.0, gt=0.0)
    burst: int = Field(1_000, ge=1)


class ServeRequestLog(StrictModel):
    """The request log for monitoring: Parquet files, one per window and worker."""

    enabled: bool = True
    dir: FilePath = Path("data/serving/requests")
    window_s: float = Field(60.0, gt=0.0)
    # a window is written early when it holds this many requests
    max_rows: int = Field(100_000, ge=1)


class ServeConfig(StrictModel):
    """The inference server (``recflow serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # None: one worker process per core
    workers: int | None = Field(None, ge=1, le=256)
    # intra-op threads of the model per worker
    threads: int = Field(1, ge=1)
    # a model call slower than this is answered from the popularity fallback
    model_deadline_ms: float = Field(100.0, gt=0.0)
    # desired state, worker reports, metrics of the running server
    run_dir: FilePath = Path("data/serving/run")
    # how often each worker compares its models with the desired state
    reconcile_interval_s: float = Field(0.2, gt=0.0, le=60.0)
    # how long an admin call waits for every worker to apply a change
    admin_timeout_s: float = Field(60.0, gt=0.0)
    # shadow copies waiting to be scored; more are skipped (and counted) rather than queued
    shadow_max_pending: int = Field(256, ge=1)
    batching: ServeBatching = ServeBatching()
    cache: ServeCache = ServeCache()
    limits: ServeLimits = ServeLimits()
    rate_limit: ServeRateLimit = ServeRateLimit()
    request_log: ServeRequestLog = ServeRequestLog()


# What a registry object is; the crossing policy decides by kind which objects may be written
# to a store of role ``replica`` (the public cloud).
ObjectKind = Literal[
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
    "ledger",
    "backup_manifest",
    "raw_events",
    "validated_batch",
    "prepared_sequences",
    "user_ids",
    "secret",
]
# Never written to a replica, whatever ``registry.crossing.allow`` says.
NEVER_CROSS: frozenset[str] = frozenset(
    {"raw_events", "validated_batch", "prepared_sequences", "user_ids", "secret"}
)
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

    allow: Items[ObjectKind] = (
        "model",
        "artifact",
        "item_table",
        "manifest",
        "metrics",
        "verdict",
        "report",
        "lineage",
        "version_marker",
        "alias",
    )
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


class FleetConfig(StrictModel):
    """One cloud's serving fleet: local server processes, and its Kubernetes shape."""

    # local fleets: this many `recflow serve` processes on 127.0.0.1, each with these workers
    servers: int = Field(2, ge=1, le=16)
    workers: int = Field(1, ge=1, le=64)
    # Kubernetes: replicas of the Deployment, and one nvidia.com/gpu per pod when true
    replicas: int = Field(3, ge=1, le=1000)
    gpu: bool = False


class FleetsConfig(StrictModel):
    """The fleets of both clouds."""

    private: FleetConfig = FleetConfig()
    public: FleetConfig = FleetConfig()


class ReplayConfig(StrictModel):
    """Replayed held-out sessions: the traffic of a bake or canary window."""

    rate: float = Field(300.0, gt=0.0, le=100_000.0)  # requests per second
    concurrency: int = Field(8, ge=1, le=1024)
    max_s: float = Field(60.0, gt=0.0, le=3600.0)  # one window's time bound
    k: int = Field(10, ge=1, le=100)  # items asked for; a hit is the true next item among them
    timeout_s: float = Field(5.0, gt=0.0, le=120.0)  # per request
    split: Literal["valid", "test"] = "test"


class RateLimit(StrictModel):
    """How much worse than stable a rate may be: the larger of the two increases, and never
    above ``max``."""

    max: float = Field(ge=0.0, le=1.0)
    max_increase: float = Field(ge=0.0, le=1.0)
    max_relative_increase: float = Field(ge=0.0)


class LatencyLimit(StrictModel):
    """How much slower than stable the p99 may be (ms): the larger increase, never above ``max``."""

    max: float = Field(gt=0.0)
    max_increase: float = Field(ge=0.0)
    max_relative_increase: float = Field(ge=0.0)


class HitRateLimit(StrictModel):
    """How much lower than stable's the hit rate of replayed next items may be: the larger of
    the two drops."""

    max_drop: float = Field(ge=0.0, le=1.0)
    max_relative_drop: float = Field(ge=0.0, le=1.0)


class AnalysisConfig(StrictModel):
    """The limits each step of a rollout is judged on (pass, fail or inconclusive)."""

    min_requests: int = Field(50, ge=1)  # answers of each arm before judging
    # a rate beyond its limit fails only when it is beyond it with this confidence
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    error_rate: RateLimit = RateLimit(max=0.01, max_increase=0.005, max_relative_increase=0.5)
    fallback_rate: RateLimit = RateLimit(max=0.05, max_increase=0.01, max_relative_increase=0.5)
    latency_p99_ms: LatencyLimit = LatencyLimit(
        max=100.0, max_increase=10.0, max_relative_increase=2.0
    )
    hit_rate: HitRateLimit = HitRateLimit(max_drop=0.05, max_relative_drop=0.25)
    min_shadow_overlap: float = Field(0.2, ge=0.0, le=1.0)  # mean top-k overlap with stable


class ShadowConfig(StrictModel):
    """The shadow bake: the candidate scores a copy of stable's replayed requests."""

    requests: int = Field(300, ge=1)


class CanaryConfig(StrictModel):
    """The canary steps: a growing share of users (by hash of the user id) on the candidate."""

    weights: Items[float] = (0.05, 0.25, 0.5)
    max_requests: int = Field(2000, ge=1)  # replayed per step while the canary arm fills up

    @model_validator(mode="after")
    def _increasing(self) -> CanaryConfig:
        weights = list(self.weights)
        if not weights or any(not 0.0 < w < 1.0 for w in weights):
            raise ValueError("canary weights must lie strictly between 0 and 1")
        if weights != sorted(set(weights)):
            raise ValueError(f"canary weights must increase: {weights}")
        return self


class MetricsSource(StrictModel):
    """Where the analysis reads the fleets' metrics."""

    # prometheus: a Prometheus server scraping the fleets, queried in PromQL (the binary below
    # is started for the rollout); scrape: each server's /metrics; auto: prometheus where the
    # binary is installed, else scrape
    source: Literal["auto", "prometheus", "scrape"] = "auto"
    prometheus: str = "prometheus"  # the binary (Debian's package; `make setup` installs it)
    scrape_interval_s: float = Field(1.0, ge=0.2, le=60.0)
    start_timeout_s: float = Field(30.0, gt=0.0)


class AutoscalingConfig(StrictModel):
    """The HorizontalPodAutoscaler of a serving Deployment."""

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(10, ge=1)
    cpu_utilization: int = Field(70, ge=1, le=100)
    # the per-pod p99 request latency (a Prometheus adapter exposes it as a pods metric)
    latency_metric: str = "recflow_request_latency_p99_seconds"
    latency_p99_ms: float = Field(50.0, gt=0.0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling min_replicas exceeds max_replicas")
        return self


class ServingKubernetes(StrictModel):
    """Serving manifests per cloud (``recflow deploy manifests``)."""

    namespace: str = "recflow-serving"
    image: str = "recflow-serving:0.1.0"
    port: int = Field(8000, ge=1024, le=65535)
    requests: PodResources = PodResources(cpu="1", memory="1Gi")
    limits: PodResources = PodResources(cpu="2", memory="2Gi")
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    max_unavailable: int = Field(1, ge=1)  # PodDisruptionBudget
    # the only pods that may call a serving pod (NetworkPolicy), by label
    clients: dict[str, str] = Field(default_factory=lambda: {"recflow/client": "true"})


class DeployConfig(StrictModel):
    """Rollout of a registered version to the serving fleets (``recflow deploy``)."""

    targets: Items[Literal["private", "public"]] = ("private", "public")
    # wait between the first target and the next ones until `recflow deploy approve`
    require_approval: bool = False
    approval_timeout_s: float = Field(3600.0, gt=0.0)
    # inconclusive analysis: hold (run the step's window again, at most max_holds times) or fail
    on_inconclusive: Literal["hold", "fail"] = "hold"
    max_holds: int = Field(2, ge=0, le=100)
    # rollout records (a killed controller resumes from them) and the local fleets' folders
    run_dir: FilePath = Path("data/serving/deploy")
    fleet_start_timeout_s: float = Field(180.0, gt=0.0)
    fleets: FleetsConfig = FleetsConfig()
    replay: ReplayConfig = ReplayConfig()
    shadow: ShadowConfig = ShadowConfig()
    canary: CanaryConfig = CanaryConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    metrics: MetricsSource = MetricsSource()
    kubernetes: ServingKubernetes = ServingKubernetes()

    @model_validator(mode="after")
    def _targets(self) -> DeployConfig:
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"deploy targets must be one or more distinct clouds: {self.targets}")
        return self


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


class Params(StrictModel):
    """The whole of ``params.yaml``: unknown sections are an error."""

    run: RunConfig
    generate: GenerateConfig = GenerateConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    airflow: AirflowConfig = AirflowConfig()
    execution: ExecutionConfig = ExecutionConfig()
    serve: ServeConfig = ServeConfig()
    stores: StoresConfig = StoresConfig()
    registry: RegistryConfig = RegistryConfig()
    deploy: DeployConfig = DeployConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


M = TypeVar("M", bound=BaseModel)


def read_params_file(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read ``params.yaml`` as a mapping, with a clear error when it is missing or malformed."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"params file {path} must be a mapping of sections")
    return raw


def format_errors(exc: ValidationError, where: str) -> str:
    """A config error for a person: one line per problem, naming its key (``train.hiden``)."""
    lines = [f"invalid configuration in {where}:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(section)"
        lines.append(f"  {loc}: {_message(err)}")
    return "\n".join(lines)


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    message = str(err["msg"])
    value = err.get("input")
    if err["type"].endswith("_type"):
        # a wrong type: say what was given, since strict parsing never converts it
        message += f", got {value!r} ({type(value).__name__})"
        if err["type"] == "float_type" and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
            message += "; YAML reads a number without a dot as text: write e.g. 1.0e-3"
    return message


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Load and check the whole of ``params.yaml``."""
    raw = read_params_file(path)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path))) from exc


def with_overrides(
    params: Params, section: str, overrides: Mapping[str, Any], where: str
) -> Params:
    """``params`` with the keys of one section replaced, checked as strictly as the file.

    Args:
        params: The checked params.
        section: The section the overrides go to (``train``).
        overrides: New values of its keys, e.g. parsed from ``--config-json``.
        where: Where the overrides come from, for the message.

    Raises:
        ConfigError: An override names an unknown key or has a wrong type or value; the
            message names it as ``section.key``.
    """
    # python-mode dump: dates, tuples and paths stay objects the strict models accept
    values = params.model_dump(by_alias=True)
    if not isinstance(values.get(section), dict):
        raise ConfigError(f"params have no section {section!r}")
    values[section] = {**values[section], **overrides}
    try:
        return Params.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from exc


def with_json_overrides(params: Params, section: str, text: str, flag: str, where: str) -> Params:
    """``params`` with one section's keys replaced by the JSON object ``text``, given as ``flag``.

    Raises:
        ConfigError: ``text`` is not JSON or not an object (the message names ``flag``), or an
            override is invalid as in :func:`with_overrides`.
    """
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(extra, dict):
        raise ConfigError(f"{flag} must be a JSON object")
    return with_overrides(params, section, extra, f"{flag} over {where}")


def load_section(name: str, model: type[M], path: Path | str = DEFAULT_PARAMS) -> M:
    """Load one section of ``params.yaml`` into ``model``; the whole file is checked first."""
    params = load_params(path)
    attr = "validate_" if name == "validate" else name
    section = getattr(params, attr, None)
    if not isinstance(section, model):
        raise ConfigError(f"section {name!r} is not a {model.__name__}")
    return section
