"""One percentile for every reported latency: nearest rank, an observed value, never below."""

from __future__ import annotations

import random

import pytest

from pipelines.core.stats import percentile
from pipelines.rollout.replay import ReplayReport


def test_the_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(3).shuffle(values)  # any order
    assert [percentile(values, q) for q in (0, 1, 50, 99, 99.5, 100)] == [
        1.0,
        1.0,
        50.0,
        99.0,
        100.0,
        100.0,
    ]
    thirty = [float(v) for v in range(30)]
    assert percentile(thirty, 99) == 29.0  # few values: p99 is the largest, not below it
    assert percentile(thirty, 50) == 14.0  # an observed value, not a midpoint
    assert percentile([7.5], 99) == 7.5


@pytest.mark.parametrize(("values", "q", "words"), [([], 50, "no values"), ([1.0], 101, "0..100")])
def test_a_percentile_of_nothing_or_out_of_range_is_refused(
    values: list[float], q: float, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        percentile(values, q)


def test_the_replay_reports_the_same_percentiles() -> None:
    latencies = [float(v) for v in (12, 3, 7, 250, 9, 4, 8, 6, 5, 11)]
    report = ReplayReport(latencies_ms=latencies)
    summary = report.summary()["latency_ms"]
    assert summary == {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}
    assert summary == {"p50": 7.0, "p99": 250.0}
    assert ReplayReport().summary()["latency_ms"] == {"p50": None, "p99": None}
