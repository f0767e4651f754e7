"""Strict, typed configuration loaded from ``params.yaml``.

Every tunable lives in ``params.yaml``. Each stage reads its own section into a frozen
pydantic model that rejects unknown keys and wrong types, so a typo in ``params.yaml`` is
an error naming the key instead of a silently ignored setting.

Nothing is coerced from another type: ``min_rows: "250"``, ``progress: "yes"`` or
``epochs: 2.5`` are errors. An integer is a valid float. Three conversions are explicit:
dates are read from ``YYYY-MM-DD`` strings (or the date YAML makes of an unquoted one), the
lists of YAML and JSON fill tuple fields, and path fields take strings.

Import every name from here; the modules group the sections as the stages do:
``base`` (the strict model and field types), ``data`` (run, generate, ingest, validate,
prepare), ``training`` (train), ``serving`` (optimize, serve), ``gate`` (evaluate),
``execution`` (airflow, execution), ``registry`` (stores, registry), ``deploy`` (deploy),
``monitor`` (monitor) and ``loading`` (the whole file as :class:`Params`, its errors and overrides).
"""

from __future__ import annotations

from pipelines.core.params.base import ConfigError, Date, FilePath, Items, StrictModel
from pipelines.core.params.data import (
    DriftConfig,
    GenerateConfig,
    IngestConfig,
    PrepareConfig,
    RunConfig,
    TimeSplitConfig,
    ValidateConfig,
)
from pipelines.core.params.deploy import (
    AnalysisConfig,
    AutoscalingConfig,
    CanaryConfig,
    DeployConfig,
    FleetConfig,
    FleetsConfig,
    HitRateLimit,
    LatencyLimit,
    MetricsSource,
    RateCeiling,
    ReplayConfig,
    ServingKubernetes,
    ShadowConfig,
)
from pipelines.core.params.execution import (
    AirflowConfig,
    ExecutionConfig,
    PodResources,
    TrainingTopology,
)
from pipelines.core.params.gate import EvaluateConfig, QualityGate
from pipelines.core.params.loading import (
    DEFAULT_PARAMS,
    Params,
    format_errors,
    load_params,
    read_params_file,
    with_json_overrides,
    with_overrides,
)
from pipelines.core.params.monitor import (
    FEATURE_NAMES,
    DriftMethod,
    FeatureDrift,
    MonitorConfig,
    QualityConfig,
)
from pipelines.core.params.registry import (
    NEVER_CROSS,
    CrossingConfig,
    CrossingKind,
    ObjectKind,
    PrivateKind,
    RegistryConfig,
    RetrySettings,
    StoreConfig,
    StoresConfig,
    TransferSettings,
)
from pipelines.core.params.serving import (
    SHIP_ORDER,
    BatchProfile,
    LatencyConfig,
    OptimizeConfig,
    ParityConfig,
    ParityThreshold,
    ServeBatching,
    ServeCache,
    ServeConfig,
    ServeLimits,
    ServeRateLimit,
    ServeRequestLog,
    TensorRTConfig,
)
from pipelines.core.params.training import TrainConfig

__all__ = [
    "DEFAULT_PARAMS",
    "FEATURE_NAMES",
    "NEVER_CROSS",
    "SHIP_ORDER",
    "AirflowConfig",
    "AnalysisConfig",
    "AutoscalingConfig",
    "BatchProfile",
    "CanaryConfig",
    "ConfigError",
    "CrossingConfig",
    "CrossingKind",
    "Date",
    "DeployConfig",
    "DriftConfig",
    "DriftMethod",
    "EvaluateConfig",
    "ExecutionConfig",
    "FeatureDrift",
    "FilePath",
    "FleetConfig",
    "FleetsConfig",
    "GenerateConfig",
    "HitRateLimit",
    "IngestConfig",
    "Items",
    "LatencyConfig",
    "LatencyLimit",
    "MetricsSource",
    "MonitorConfig",
    "ObjectKind",
    "OptimizeConfig",
    "Params",
    "ParityConfig",
    "ParityThreshold",
    "PodResources",
    "PrepareConfig",
    "PrivateKind",
    "QualityConfig",
    "QualityGate",
    "RateCeiling",
    "RegistryConfig",
    "ReplayConfig",
    "RetrySettings",
    "RunConfig",
    "ServeBatching",
    "ServeCache",
    "ServeConfig",
    "ServeLimits",
    "ServeRateLimit",
    "ServeRequestLog",
    "ServingKubernetes",
    "ShadowConfig",
    "StoreConfig",
    "StoresConfig",
    "StrictModel",
    "TensorRTConfig",
    "TimeSplitConfig",
    "TrainConfig",
    "TrainingTopology",
    "TransferSettings",
    "ValidateConfig",
    "format_errors",
    "load_params",
    "read_params_file",
    "with_json_overrides",
    "with_overrides",
]
