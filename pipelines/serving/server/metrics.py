"""Prometheus metrics of the server, summed across worker processes.

With several workers, ``prometheus_client``'s multiprocess mode keeps each process's values in
files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the launcher before any worker starts) and
``/metrics`` adds them up. A single process without that variable keeps them in memory.
Every request metric is labelled by model version and arm ("stable", "canary"; "none" for
requests refused before a model was chosen).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from pipelines.serving.server.state import MULTIPROC_ENV

# fine below 20 ms, where the latency target sits, so a p99 there reads to the millisecond
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.010, 0.012,
    0.014, 0.016, 0.018, 0.020, 0.025, 0.030, 0.040, 0.050, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OVERLAP_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class ArmMetrics:
    """The per-request metrics of one version and arm, labelled once."""

    answered: Counter
    latency: Histogram
    model_latency: Histogram
    cache_hits: Counter
    cache_misses: Counter
    unknown_items: Counter


class Metrics:
    """The server's metrics; one instance per worker process."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # multiprocess mode collects from the files, not from a registry
        self._registry = None if self.multiprocess else CollectorRegistry()
        kw: dict[str, Any] = {"registry": self._registry}
        va = ("version", "arm")
        self.requests = Counter(
            "recflow_requests", "Requests answered, by status code", (*va, "code"), **kw
        )
        self.errors = Counter(
            "recflow_errors",
            "Model calls that failed or missed their deadline",
            (*va, "kind"),
            **kw,
        )
        self.latency = Histogram(
            "recflow_request_latency_seconds",
            "Time from request to answer of /recommend",
            va,
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        # the arm's model alone (queue and call), comparable with the shadow's latency below
        self.model_latency = Histogram(
            "recflow_model_latency_seconds",
            "Time from queueing a request for its model to the model's answer",
            va,
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.batch_size = Histogram(
            "recflow_batch_size", "Rows per model call", va, buckets=BATCH_BUCKETS, **kw
        )
        self.cache_hits = Counter("recflow_cache_hits", "Answers from the cache", va, **kw)
        self.cache_misses = Counter("recflow_cache_misses", "Answers not in the cache", va, **kw)
        self.fallbacks = Counter(
            "recflow_fallbacks", "Answers from the popularity fallback", (*va, "reason"), **kw
        )
        self.unknown_items = Counter(
            "recflow_unknown_items", "History items not in the model's catalog (dropped)", va, **kw
        )
        self.shadow = Counter(
            "recflow_shadow_requests",
            "Shadow copies: scored, skipped (queue full) or failed",
            ("version", "outcome"),
            **kw,
        )
        self.shadow_overlap = Histogram(
            "recflow_shadow_overlap",
            "Top-k overlap, in catalog ids, of the shadow model's answer with stable's",
            ("version",),
            buckets=OVERLAP_BUCKETS,
            **kw,
        )
        self.shadow_latency = Histogram(
            "recflow_shadow_latency_seconds",
            "Model latency of the shadow copies",
            ("version",),
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self._arms: dict[tuple[str, str], ArmMetrics] = {}
        gauge_kw = {**kw, "multiprocess_mode": "liveall"} if self.multiprocess else kw
        self.model = Gauge(
            "recflow_model_loaded",
            "1 for each model a worker serves, by arm and artifact",
            ("version", "arm", "artifact"),
            **gauge_kw,
        )

    def arm(self, version: str, arm: str) -> ArmMetrics:
        """The labelled metrics of one version and arm (looked up once, then reused)."""
        key = (version, arm)
        found = self._arms.get(key)
        if found is None:
            found = self._arms[key] = ArmMetrics(
                answered=self.requests.labels(version, arm, "200"),
                latency=self.latency.labels(version, arm),
                model_latency=self.model_latency.labels(version, arm),
                cache_hits=self.cache_hits.labels(version, arm),
                cache_misses=self.cache_misses.labels(version, arm),
                unknown_items=self.unknown_items.labels(version, arm),
            )
        return found

    def render(self) -> bytes:
        """The exposition text of every metric (of all workers in multiprocess mode)."""
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
