"""Snapshots of the servers' metrics: the text format parsed, summed over servers, a window as a
difference, quantiles read from buckets as PromQL's histogram_quantile reads them."""

from __future__ import annotations

import math

import pytest

from pipelines.rollout.metrics import (
    MetricsError,
    Snapshot,
    histogram_count,
    parse_exposition,
    quantile,
)

PAGE = """\
# HELP recflow_requests_total Requests answered, by status code
# TYPE recflow_requests_total counter
recflow_requests_total{arm="stable",code="200",version="v1"} 90.0
recflow_requests_total{arm="canary",code="200",version="v2"} 10.0
recflow_requests_total{arm="none",code="401",version="none"} 3.0
# HELP recflow_request_latency_seconds Time from request to answer of /recommend
# TYPE recflow_request_latency_seconds histogram
recflow_request_latency_seconds_bucket{arm="stable",le="0.001",version="v1"} 50.0
recflow_request_latency_seconds_bucket{arm="stable",le="0.01",version="v1"} 89.0
recflow_request_latency_seconds_bucket{arm="stable",le="+Inf",version="v1"} 90.0
recflow_request_latency_seconds_count{arm="stable",version="v1"} 90.0
recflow_request_latency_seconds_sum{arm="stable",version="v1"} 0.2
# HELP recflow_model_loaded 1 for each model a worker serves
# TYPE recflow_model_loaded gauge
recflow_model_loaded{arm="stable",artifact="onnxruntime-fp32",pid="12",version="v1"} 1.0
"""


def test_a_page_is_read_into_the_wanted_samples_summed_over_servers() -> None:
    snapshot = parse_exposition(PAGE)
    parse_exposition(PAGE, snapshot)  # a second server with the same counts
    assert snapshot.total("recflow_requests_total", version="v1", code="200") == 180
    assert snapshot.total("recflow_requests_total") == 206
    assert "recflow_model_loaded" not in snapshot.samples  # not read by the analysis
    assert snapshot.buckets("recflow_request_latency_seconds_bucket", version="v1") == [
        (0.001, 100.0),
        (0.01, 178.0),
        (math.inf, 180.0),
    ]


def test_a_window_is_the_difference_of_two_snapshots() -> None:
    before = parse_exposition(PAGE)
    after = parse_exposition(PAGE.replace("} 90.0", "} 130.0"))
    window = after.minus(before)
    assert window.total("recflow_requests_total", version="v1", code="200") == 40
    assert window.total("recflow_requests_total", version="v2") == 0
    # a series that appears during the window counts from zero
    after.add("recflow_errors_total", {"version": "v2", "arm": "canary", "kind": "error"}, 2)
    assert after.minus(before).total("recflow_errors_total") == 2


def test_a_counter_that_goes_back_means_a_restart_and_is_refused() -> None:
    before = parse_exposition(PAGE)
    after = parse_exposition(PAGE.replace("} 90.0", "} 5.0"))
    with pytest.raises(MetricsError, match="a server restarted during the window"):
        after.minus(before)


def test_a_page_that_is_not_prometheus_text_is_named() -> None:
    with pytest.raises(MetricsError, match="not in Prometheus' text format"):
        parse_exposition('recflow_requests_total{arm="stable" 1\n')


def test_quantiles_are_read_like_histogram_quantile() -> None:
    buckets = [(0.001, 50.0), (0.01, 99.0), (0.1, 100.0), (math.inf, 100.0)]
    assert quantile(buckets, 0.5) == pytest.approx(0.001)
    # rank 99 of 100: the end of the second bucket; the middle of it for rank 74.5
    assert quantile(buckets, 0.99) == pytest.approx(0.01)
    assert quantile(buckets, 0.745) == pytest.approx(0.001 + 0.009 * 0.5)
    # in the +Inf bucket: the largest finite bound
    assert quantile([(0.01, 1.0), (math.inf, 10.0)], 0.99) == 0.01
    assert quantile([], 0.99) is None and quantile([(math.inf, 0.0)], 0.5) is None
    assert histogram_count(buckets) == 100 and histogram_count([]) == 0


def test_an_empty_snapshot_has_no_totals() -> None:
    assert Snapshot().total("recflow_requests_total") == 0
    assert Snapshot().buckets("recflow_request_latency_seconds_bucket") == []
