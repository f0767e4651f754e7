"""Strict, typed configuration loaded from ``params.yaml``.

Every tunable lives in ``params.yaml``. Each stage reads its own section into a frozen
pydantic model that rejects unknown keys and wrong types, so a typo in ``params.yaml`` is
an error naming the key instead of a silently ignored setting.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """``params.yaml`` is missing, unreadable, or does not match the typed config."""


class StrictModel(BaseModel):
    """Base for config sections: frozen, unknown keys rejected, no silent coercion."""

    # lax mode: ISO date strings from params.yaml become dates; anything unparseable is an error
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class RunConfig(StrictModel):
    """The run: its logical date (set by Airflow per run, or by hand) and the global seed."""

    logical_date: dt.date
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
    min_timestamp: dt.date = dt.date(1990, 1, 1)
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
    event_types: tuple[Literal["view", "add_to_cart", "purchase"], ...] = (
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

    precisions: tuple[Literal["fp16", "bf16", "int8"], ...] = ("fp16", "bf16", "int8")
    profile: BatchProfile = BatchProfile()
    workspace_mb: int = Field(2048, ge=64)
    calibration_sequences: int = Field(512, ge=1)


class LatencyConfig(StrictModel):
    """Latency measurement of each artifact beside torch eager."""

    batches: tuple[int, ...] = (1, 32, 256)
    warmup: int = Field(3, ge=0)
    iterations: int = Field(30, ge=2)
    rounds: int = Field(5, ge=1)  # the backends take turns in this many rounds per batch size
    settle_s: float = Field(0.2, ge=0.0, le=5.0)  # pause before each turn (idle threads stop)


class OptimizeConfig(StrictModel):
    """The ``optimize`` stage: ONNX export, runtime artifacts, parity and latency."""

    top_k: int = Field(20, ge=1)
    opset: int = Field(17, ge=13)
    # intra-op threads of ONNX Runtime and of torch eager when they are timed side by side
    threads: int | None = Field(2, ge=1)
    onnxruntime_int8: bool = True
    # the first artifact of this list that passes parity is the one serving uses
    ship_order: tuple[str, ...] = (
        "tensorrt-fp16",
        "tensorrt-bf16",
        "tensorrt-int8",
        "torch-compile-bf16",
        "torch-compile-fp16",
        "onnxruntime-fp32",
        "onnxruntime-int8",
    )
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

    production: Path = Path("models/production")
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
    start_date: dt.date = dt.date(2026, 1, 1)
    retries: int = Field(2, ge=0)
    retry_delay_minutes: float = Field(5.0, ge=0.0)
    # multiplier between successive retry delays (0 = constant delay), capped by the max below
    retry_exponential_backoff: float = Field(2.0, ge=0.0)
    max_retry_delay_minutes: float = Field(60.0, ge=0.0)
    execution_timeout_minutes: float = Field(120.0, gt=0.0)
    tags: tuple[str, ...] = ("recflow", "recsys")


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
    gpu_stages: tuple[str, ...] = ()
    training: TrainingTopology = TrainingTopology()


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
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Load and check the whole of ``params.yaml``."""
    raw = read_params_file(path)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path))) from exc


def load_section(name: str, model: type[M], path: Path | str = DEFAULT_PARAMS) -> M:
    """Load one section of ``params.yaml`` into ``model``; the whole file is checked first."""
    params = load_params(path)
    attr = "validate_" if name == "validate" else name
    section = getattr(params, attr, None)
    if not isinstance(section, model):
        raise ConfigError(f"section {name!r} is not a {model.__name__}")
    return section
