"""The ``monitor`` section: drift and online-quality monitoring of served traffic and batches."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.params.base import FilePath, Items, StrictModel

# Evidently's drift methods that measure a distance (not a p-value): on large windows a
# p-value test flags every negligible difference, a distance does not
DriftMethod = Literal["wasserstein", "jensenshannon", "psi", "hellinger", "kl_div"]
FeatureName = Literal[
    "history_length",
    "history_category",
    "history_price",
    "history_popularity",
    "unknown_share",
    "top_category",
    "top_popularity",
]
FEATURE_NAMES: tuple[str, ...] = (
    "history_length",
    "history_category",
    "history_price",
    "history_popularity",
    "unknown_share",
    "top_category",
    "top_popularity",
)


class FeatureDrift(StrictModel):
    """How one feature's drift is measured: an Evidently method and its threshold."""

    method: DriftMethod
    threshold: float = Field(gt=0.0, le=10.0)


def _default_features() -> dict[FeatureName, FeatureDrift]:
    return {
        "history_length": FeatureDrift(method="wasserstein", threshold=0.1),
        "history_category": FeatureDrift(method="jensenshannon", threshold=0.1),
        "history_price": FeatureDrift(method="wasserstein", threshold=0.1),
        "history_popularity": FeatureDrift(method="jensenshannon", threshold=0.1),
        "unknown_share": FeatureDrift(method="jensenshannon", threshold=0.1),
        "top_category": FeatureDrift(method="jensenshannon", threshold=0.1),
        "top_popularity": FeatureDrift(method="jensenshannon", threshold=0.1),
    }


class QualityConfig(StrictModel):
    """Online quality: the hit rate of each user's next event among the items served before it."""

    k: int = Field(10, ge=1, le=100)  # a hit: the next event's item among the first k served
    attribution_hours: float = Field(24.0, gt=0.0, le=24.0 * 30)  # how long after a request
    confidence: float = Field(0.95, gt=0.5, lt=1.0)  # of the Wilson interval
    min_feedback: int = Field(50, ge=1)  # requests with feedback before the figure is judged
    min_hit_rate: float = Field(0.02, ge=0.0, le=1.0)  # an alert below this (interval's top)


class MonitorConfig(StrictModel):
    """Drift of served traffic and incoming batches against what a version was trained on."""

    schedule: str | None = "@hourly"  # the recsys_drift_monitor DAG's schedule
    clouds: Items[Literal["private", "public"]] = ("private", "public")
    window_hours: float = Field(24.0, gt=0.0, le=24.0 * 90)  # the default window: the last N hours
    out: FilePath = Path("reports/monitoring")  # reports/monitoring/<cloud>/<window>/
    reference_rows: int = Field(20_000, ge=100, le=1_000_000)  # featurized rows per version
    sample_rows: int = Field(50_000, ge=0)  # current rows given to Evidently (seeded); 0: all
    min_requests: int = Field(1000, ge=1)  # fewer current rows: insufficient_data, never drift
    drift_share: float = Field(0.1, gt=0.0, le=1.0)  # share of drifted features for `drift`
    features: dict[FeatureName, FeatureDrift] = Field(default_factory=_default_features)
    # cumulative shares of the reference interactions that end the head, torso ... buckets;
    # items without reference interactions are "unseen"
    popularity_buckets: Items[float] = (0.5, 0.8, 0.95)
    popularity_js_threshold: float = Field(0.1, gt=0.0, le=1.0)  # of item popularity
    max_unseen_share: float = Field(0.05, ge=0.0, le=1.0)  # traffic on items unseen in training
    quality: QualityConfig = QualityConfig()
    history_windows: int = Field(30, ge=1, le=1000)  # windows the trend plot shows
    debounce_hours: float = Field(24.0, ge=0.0, le=24.0 * 30)  # between drift-triggered retrains
    webhook_url: str | None = None  # alerts are POSTed here as JSON when set
    webhook_timeout_s: float = Field(5.0, gt=0.0, le=60.0)

    @model_validator(mode="after")
    def _checks(self) -> MonitorConfig:
        edges = self.popularity_buckets
        if not edges or any(not 0.0 < e < 1.0 for e in edges) or list(edges) != sorted(set(edges)):
            raise ValueError("popularity_buckets must be increasing shares between 0 and 1")
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return self
