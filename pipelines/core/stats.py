"""One definition of a percentile for every latency the project reports.

The optimize stage's timings, the gate's latency budget and the traffic replay's client-side
p50/p99 all use :func:`percentile`, so a p99 means the same wherever it is read. It is the
nearest-rank percentile: the smallest observed value with at least ``q`` percent of the values
at or below it. It is always a latency some request actually had, and with few observations it
errs high (the p99 of 30 values is the largest), never below what was measured.

Prometheus histograms are the exception: their quantiles are estimated from buckets
(``histogram_quantile``), see :mod:`pipelines.rollout.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q`` percentile of ``values`` (``q`` in 0..100).

    Args:
        values: The observations, in any order.
        q: The percentile: 50 for the median, 99 for p99.

    Returns:
        The value at rank ``ceil(q / 100 * n)`` of the sorted values (rank 1 for ``q`` 0).

    Raises:
        ValueError: There are no values, or ``q`` is not within 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is within 0..100, not {q}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("a percentile of no values")
    rank = math.ceil(q * len(ordered) / 100)
    return float(ordered[min(len(ordered), max(rank, 1)) - 1])
