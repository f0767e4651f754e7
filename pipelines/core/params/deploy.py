"""The ``deploy`` section: rollouts of a registered version to the serving fleets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.params.base import FilePath, Items, StrictModel
from pipelines.core.params.execution import PodResources


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


class RateCeiling(StrictModel):
    """The most an error or fallback rate may rise above stable's: the larger of the two
    increases, and never above ``max``."""

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
    error_rate: RateCeiling = RateCeiling(max=0.01, max_increase=0.005, max_relative_increase=0.5)
    fallback_rate: RateCeiling = RateCeiling(max=0.05, max_increase=0.01, max_relative_increase=0.5)
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
