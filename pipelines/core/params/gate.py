"""The ``evaluate`` section: the regression gate of the candidate against production."""

from __future__ import annotations

from typing import Literal, cast

from pydantic import Field

from pipelines.core.params.base import StrictModel


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
