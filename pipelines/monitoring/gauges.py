"""A window's findings as Prometheus gauges, in the textfile collector's format.

The monitor runs as a batch job, so nothing scrapes it: it writes ``metrics.prom`` (into the
window's folder and, replacing the last one, into the cloud's folder) for node_exporter's
textfile collector, atomically so the collector never reads half a file. Every gauge carries
the ``cloud`` label; the alert rules in ``docker/prometheus/alerts.yml`` and the dashboard in
``docker/grafana/`` read these names.

The text is made here rather than with ``prometheus_client``'s registry: a gauge per window
is a handful of lines, and writing them in a fixed order gives the same bytes on a rerun.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.io import write_text
from pipelines.core.params.monitor import FEATURE_NAMES
from pipelines.monitoring.summary import OWN_DRIFT_CHECKS, MonitorSummary

TEXTFILE = "metrics.prom"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Gauge:
    """One gauge: its name, what it means, and its samples."""

    name: str
    help: str
    samples: tuple[tuple[Labels, float], ...]


# name -> help, in the order they are written
HELP: dict[str, str] = {
    "recflow_monitor_drift": "1 when the last window's verdict was drift, else 0",
    "recflow_monitor_insufficient": "1 when the last window had too few requests to judge drift",
    "recflow_monitor_feature_drift_score": "Drift score of a feature (Evidently, its method)",
    "recflow_monitor_feature_drift_threshold": "The score at which a feature counts as drifted",
    "recflow_monitor_popularity_js": "Jensen-Shannon divergence of item popularity vs reference",
    "recflow_monitor_unseen_share": "Share of history items unseen in training",
    "recflow_monitor_online_hit_rate": "Share of requests whose next event was among the top k",
    "recflow_monitor_online_hit_rate_low": "Lower end of the online hit rate's Wilson interval",
    "recflow_monitor_online_hit_rate_high": "Upper end of the online hit rate's Wilson interval",
    "recflow_monitor_online_requests": "Requests of a version and arm in the last window",
    "recflow_monitor_online_feedback": "Requests of a version and arm followed by a next event",
    "recflow_monitor_online_quality_low": "1 when a version and arm's online quality is low",
    "recflow_monitor_requests": "Requests in the last window",
    "recflow_monitor_sampled_requests": "Requests of the last window compared for drift",
    "recflow_monitor_skipped_files": "Request-log files left out of the last window",
    "recflow_monitor_window_end_timestamp_seconds": "End of the last traffic window",
    "recflow_monitor_last_run_timestamp_seconds": "When the monitor last ran",
}

# recflow's own drift checks (OWN_DRIFT_CHECKS), each its own gauge
_OWN = {name: f"recflow_monitor_{name}" for name in OWN_DRIFT_CHECKS}


def gauges(summary: MonitorSummary, *, now: dt.datetime) -> tuple[Gauge, ...]:
    """The gauges of ``summary``; ``now`` is when the monitor ran (the staleness alert's clock).

    A check without a numeric value (skipped, or nothing measured) and a quality figure without
    feedback give no sample rather than a made-up number.
    """
    cloud: Labels = (("cloud", summary.cloud),)
    samples: dict[str, list[tuple[Labels, float]]] = {name: [] for name in HELP}

    def add(name: str, labels: Labels, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            samples[name].append((labels, float(value)))

    add("recflow_monitor_drift", cloud, 1.0 if summary.verdict == "drift" else 0.0)
    add(
        "recflow_monitor_insufficient",
        cloud,
        1.0 if summary.verdict == "insufficient_data" else 0.0,
    )
    for check in summary.checks:
        value, limit = _number(check.value), _number(check.limit)
        if check.outcome == "skipped":
            continue
        if check.metric in FEATURE_NAMES:
            labels: Labels = (*cloud, ("feature", check.metric))
            add("recflow_monitor_feature_drift_score", labels, value)
            add("recflow_monitor_feature_drift_threshold", labels, limit)
        elif check.metric in _OWN:
            add(_OWN[check.metric], cloud, value)
    low_quality = {(a.version, a.arm) for a in summary.alerts if a.kind == "online_quality"}
    for figure in summary.quality:
        labels = (*cloud, ("version", figure.version), ("arm", figure.arm))
        add("recflow_monitor_online_hit_rate", labels, figure.hit_rate)
        add("recflow_monitor_online_hit_rate_low", labels, figure.low)
        add("recflow_monitor_online_hit_rate_high", labels, figure.high)
        add("recflow_monitor_online_requests", labels, figure.requests)
        add("recflow_monitor_online_feedback", labels, figure.with_feedback)
        low = (figure.version, figure.arm) in low_quality
        add("recflow_monitor_online_quality_low", labels, 1.0 if low else 0.0)
    add("recflow_monitor_requests", cloud, summary.rows)
    add("recflow_monitor_sampled_requests", cloud, summary.sampled_rows)
    add("recflow_monitor_skipped_files", cloud, len(summary.skipped))
    if summary.window.until is not None:
        add("recflow_monitor_window_end_timestamp_seconds", cloud, summary.window.until.timestamp())
    add("recflow_monitor_last_run_timestamp_seconds", cloud, _aware(now).timestamp())
    return tuple(
        Gauge(name=name, help=HELP[name], samples=tuple(found))
        for name, found in samples.items()
        if found
    )


def textfile(found: Iterable[Gauge]) -> str:
    """The gauges in Prometheus' text format: ``# HELP``, ``# TYPE gauge``, then samples."""
    lines: list[str] = []
    for gauge in found:
        lines.append(f"# HELP {gauge.name} {_escape_help(gauge.help)}")
        lines.append(f"# TYPE {gauge.name} gauge")
        for labels, value in gauge.samples:
            inner = ",".join(f'{key}="{_escape_label(text)}"' for key, text in labels)
            lines.append(f"{gauge.name}{{{inner}}} {_format(value)}")
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, summary: MonitorSummary, *, now: dt.datetime) -> None:
    """Write the gauges of ``summary`` to ``path`` (``metrics.prom``) atomically."""
    write_text(path, textfile(gauges(summary, now=now)))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no timezone: give the monitor's time in UTC")
    return moment


def _format(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
