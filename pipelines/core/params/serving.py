"""Sections of the served model: ``optimize`` (artifacts, parity, latency) and ``serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipelines.core.params.base import FilePath, Items, StrictModel


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
