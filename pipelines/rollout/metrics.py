"""The fleet's counters at one moment, and what a window between two moments holds.

A :class:`Snapshot` holds the samples of the server metrics the analysis reads, summed over a
fleet's servers and keyed by the labels that matter (version, arm, code, le...). Both metric
sources produce one: :mod:`pipelines.rollout.sources` scrapes each server's ``/metrics`` or asks
Prometheus in PromQL. A step's window is the difference of two snapshots (:meth:`Snapshot.minus`)
and a latency quantile is read from its histogram buckets the way PromQL's
``histogram_quantile`` does, so the analysis is the same code whichever source fed it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from pipelines.core.errors import RecflowError

Labels = tuple[tuple[str, str], ...]

# sample name -> the labels kept (every other label, such as instance or job, is summed over)
WANTED: dict[str, tuple[str, ...]] = {
    "recflow_requests_total": ("version", "arm", "code"),
    "recflow_errors_total": ("version", "arm", "kind"),
    "recflow_fallbacks_total": ("version", "arm", "reason"),
    "recflow_request_latency_seconds_bucket": ("version", "arm", "le"),
    "recflow_model_latency_seconds_bucket": ("version", "arm", "le"),
    "recflow_shadow_requests_total": ("version", "outcome"),
    "recflow_shadow_overlap_sum": ("version",),
    "recflow_shadow_overlap_count": ("version",),
    "recflow_shadow_latency_seconds_bucket": ("version", "le"),
}


class MetricsError(RecflowError):
    """The fleet's metrics could not be read, or make no sense (a counter went backwards)."""


def key(labels: Mapping[str, str], kept: Iterable[str]) -> Labels:
    """The labels of a sample that the snapshot keeps, in a fixed order."""
    return tuple((name, str(labels[name])) for name in kept if name in labels)


@dataclass
class Snapshot:
    """Samples by name and labels, summed over servers.

    Attributes:
        samples: ``name -> labels -> value``.
        at: When it was taken (seconds since the epoch).
    """

    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)
    at: float = 0.0

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Add one sample (a second server's sample with the same labels is summed)."""
        if name not in WANTED:
            return
        series = self.samples.setdefault(name, {})
        label_key = key(labels, WANTED[name])
        series[label_key] = series.get(label_key, 0.0) + float(value)

    def total(self, name: str, **match: str) -> float:
        """The sum of ``name``'s samples whose labels include ``match``."""
        wanted = set(match.items())
        return sum(
            value for labels, value in self.samples.get(name, {}).items() if wanted <= set(labels)
        )

    def buckets(self, name: str, **match: str) -> list[tuple[float, float]]:
        """A histogram's cumulative ``(upper bound, count)`` pairs, summed over the other
        labels, ``+Inf`` last."""
        wanted = set(match.items())
        counts: dict[float, float] = {}
        for labels, value in self.samples.get(name, {}).items():
            found = dict(labels)
            if wanted <= set(labels) and "le" in found:
                bound = math.inf if found["le"] == "+Inf" else float(found["le"])
                counts[bound] = counts.get(bound, 0.0) + value
        return sorted(counts.items())

    def minus(self, earlier: Snapshot) -> Snapshot:
        """What happened between ``earlier`` and this snapshot (counters only grow).

        Raises:
            MetricsError: A counter is lower than before: a server restarted in the window,
                which then holds no reliable count.
        """
        out = Snapshot({}, self.at)
        for name, series in self.samples.items():
            before = earlier.samples.get(name, {})
            window = {}
            for labels, value in series.items():
                delta = value - before.get(labels, 0.0)
                if delta < -1e-9:
                    raise MetricsError(
                        f"{name}{dict(labels)} went from {before.get(labels)} to {value}: a server "
                        "restarted during the window"
                    )
                window[labels] = max(delta, 0.0)
            out.samples[name] = window
        return out


def parse_exposition(text: str, into: Snapshot | None = None) -> Snapshot:
    """The wanted samples of a ``/metrics`` page (Prometheus text format), added to ``into``.

    Raises:
        MetricsError: The page is not in the text format.
    """
    snapshot = into if into is not None else Snapshot()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                snapshot.add(sample.name, sample.labels, sample.value)
    except ValueError as exc:
        raise MetricsError(f"a /metrics page is not in Prometheus' text format: {exc}") from exc
    return snapshot


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile of a histogram's cumulative buckets, as ``histogram_quantile`` does:
    linear inside the bucket that holds it; in the ``+Inf`` bucket, the largest finite bound.

    Returns:
        Seconds, or None when the histogram holds no observation.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def histogram_count(buckets: list[tuple[float, float]]) -> int:
    """Observations in a histogram (its ``+Inf`` bucket)."""
    return round(buckets[-1][1]) if buckets else 0
