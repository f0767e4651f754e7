"""The monitor's outputs: the summary contract and latest.json, the gauges, the trend page and
the alerts (log line and webhook)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import math
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.core.contracts import schema_text
from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file
from pipelines.core.judgment import Check, Outcome
from pipelines.core.params.monitor import MonitorConfig, QualityConfig
from pipelines.monitoring import alerts, gauges, summary, trend
from pipelines.monitoring.summary import MonitorSummary

UTC = dt.UTC
SINCE = dt.datetime(2025, 3, 1, tzinfo=UTC)


def window_of(hours: int) -> tuple[str, dt.datetime, dt.datetime]:
    since = SINCE + dt.timedelta(hours=hours)
    until = since + dt.timedelta(hours=1)
    name = f"{since:%Y%m%dT%H%M%SZ}--{until:%Y%m%dT%H%M%SZ}"
    return name, since, until


def figure(version: str, arm: str, *, feedback: int, hits: int) -> dict[str, Any]:
    rate = hits / feedback if feedback else math.nan
    return {
        "version": version,
        "arm": arm,
        "requests": 1000,
        "with_feedback": feedback,
        "hits": hits,
        "hit_rate": rate,
        "low": max(rate - 0.01, 0.0) if feedback else None,
        "high": rate + 0.01 if feedback else None,
        "no_feedback_share": 1 - feedback / 1000,
    }


def make_summary(
    *,
    hours: int = 0,
    scores: dict[str, float] | None = None,
    reference: str = "v1",
    quality: tuple[dict[str, Any], ...] = (),
    rows: int = 1000,
) -> MonitorSummary:
    """A traffic window's summary: a check per feature score (limit 0.1) and popularity_js."""
    scores = {"history_length": 0.05, "history_category": 0.02} if scores is None else scores
    checks = [
        Check(
            metric=name,
            outcome="fail" if score >= 0.1 else "pass",
            value=score,
            limit=0.1,
            detail=f"{name} {score}",
        )
        for name, score in scores.items()
    ]
    checks.append(Check(metric="top_category", outcome="skipped", detail="no predictions"))
    checks.append(Check(metric="popularity_js", outcome="pass", value=0.03, limit=0.1))
    drifted = [
        {"feature": c.metric, "method": "wasserstein", "score": c.value, "threshold": 0.1}
        for c in checks
        if c.outcome == "fail"
    ]
    outcome: Outcome = "fail" if drifted else "pass"
    name, since, until = window_of(hours)
    requests = pa.table(
        {
            "model_version": [reference] * (rows - 1) + ["v9"],
            "arm": ["stable"] * (rows - 1) + ["canary"],
        }
    )
    return summary.build_summary(
        outcome=outcome,
        overall=outcome,
        cloud="private",
        window=name,
        since=since,
        until=until,
        source="traffic",
        reference_version=reference,
        reference_kind="version",
        requests=requests,
        sampled=min(rows, 500),
        checks=checks,
        drifted=drifted,
        quality=quality,
        skipped=[{"path": "date=2025-03-01/requests-0.parquet", "reason": "empty (0 bytes)"}],
        files=3,
        created=until + dt.timedelta(minutes=5),
    )


def written(root: Path, document: MonitorSummary) -> Path:
    path = root / document.window.name / summary.SUMMARY_FILE
    summary.write_summary(path, document)
    return path


# --- summary.json and latest.json ------------------------------------------------------------


def test_summary_round_trip_and_schema(tmp_path: Path) -> None:
    document = make_summary(
        scores={"history_length": 0.25, "history_price": 0.01},
        quality=(figure("v1", "stable", feedback=400, hits=40),),
    )
    assert document.verdict == "drift"
    assert document.versions == ("v1", "v9")
    assert document.arms == ("canary", "stable")
    assert [d.feature for d in document.drifted] == ["history_length"]
    path = tmp_path / document.window.name / summary.SUMMARY_FILE
    digest = summary.write_summary(path, document)
    assert digest == sha256_file(path)
    assert summary.read_summary(path) == document
    raw = json.loads(path.read_text())
    # checks keep the gate's keys; the window's bounds are UTC instants
    assert raw["checks"][0] == {
        "name": "history_length",
        "status": "fail",
        "value": 0.25,
        "threshold": 0.1,
        "detail": "history_length 0.25",
    }
    assert raw["window"]["since"] == "2025-03-01T00:00:00Z"
    schema = path.with_name("summary.schema.json")
    assert schema.read_text() == schema_text(MonitorSummary)
    props = json.loads(schema.read_text())["properties"]
    assert {"verdict", "checks", "drifted", "quality", "skipped", "alerts", "window"} <= set(props)
    # the same summary gives the same bytes
    summary.write_summary(path, document)
    assert sha256_file(path) == digest


def test_quality_figures_become_plain_records() -> None:
    document = make_summary(quality=(figure("v1", "stable", feedback=0, hits=0),))
    record = document.quality[0]
    assert (record.hit_rate, record.low, record.high) == (None, None, None)
    assert record.no_feedback_share == 1.0
    # an object with numpy numbers (as a vectorized computation returns them) reads the same
    found = SimpleNamespace(
        version="v2",
        arm="canary",
        requests=np.int64(300),
        with_feedback=np.int64(120),
        hits=np.int32(12),
        hit_rate=np.float64(0.1),
        low=np.float64(0.058),
        high=np.float64(0.167),
        no_feedback_share=np.float32(0.6),
    )
    record = summary.QualityRecord.of(found)
    assert (record.requests, record.with_feedback, record.hits) == (300, 120, 12)
    assert type(record.requests) is int
    assert record.no_feedback_share == pytest.approx(0.6)
    # no feedback: a placeholder interval (0, 0..1) is not kept as a measured rate
    unmeasured = {**figure("v3", "stable", feedback=0, hits=0), "hit_rate": 0.0, "low": 0.0}
    record = summary.QualityRecord.of({**unmeasured, "high": 1.0})
    assert (record.hit_rate, record.low, record.high) == (None, None, None)


def test_parts_that_make_no_summary_are_refused() -> None:
    good = make_summary()
    parts: dict[str, Any] = {
        "outcome": "pass",
        "overall": "pass",
        "cloud": "private",
        "window": good.window.name,
        "since": good.window.since,
        "until": good.window.until,
        "source": "traffic",
        "reference_version": "v1",
        "reference_kind": "version",
        "requests": pa.table({"model_version": ["v1"], "arm": ["stable"]}),
        "sampled": 1,
        "checks": (),
        "drifted": (),
        "quality": (),
        "skipped": (),
        "files": 1,
        "created": good.created,
    }
    assert summary.build_summary(**parts).verdict == "no_drift"
    with pytest.raises(InputError, match=r"window\.name"):
        summary.build_summary(**{**parts, "window": "yesterday"})
    with pytest.raises(InputError, match="an events batch has neither"):
        summary.build_summary(**{**parts, "source": "events"})
    with pytest.raises(InputError, match="sampled_rows 5 exceeds rows 1"):
        summary.build_summary(**{**parts, "sampled": 5})
    impossible = {**figure("v1", "stable", feedback=10, hits=11)}
    with pytest.raises(InputError, match="hits 11 <= with_feedback 10"):
        summary.build_summary(**{**parts, "quality": (impossible,)})
    with pytest.raises(InputError, match="created"):
        summary.build_summary(**{**parts, "created": dt.datetime(2025, 3, 1)})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw.update(verdict="no_drift"), "does not say outcome"),
        (lambda raw: raw.update(schema_version=2), "schema version 2"),
        (lambda raw: raw.update(rows="many"), "rows"),
        (lambda raw: raw.update(extra=1), "unknown field"),
        (lambda raw: raw["window"].update(name="../elsewhere"), "window.name"),
    ],
)
def test_a_changed_summary_is_refused_naming_the_file(
    tmp_path: Path, edit: Any, message: str
) -> None:
    path = written(tmp_path, make_summary(scores={"history_length": 0.3}))
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=re.escape(str(path))) as caught:
        summary.read_summary(path)
    assert message in str(caught.value)


def test_latest_points_at_the_summary_and_checks_its_bytes(tmp_path: Path) -> None:
    older = written(tmp_path, make_summary(hours=0))
    newer_doc = make_summary(hours=1, scores={"history_length": 0.4})
    newer = written(tmp_path, newer_doc)
    summary.write_latest(tmp_path, older)
    digest = summary.write_latest(tmp_path, newer)
    pointer = json.loads((tmp_path / summary.LATEST_FILE).read_text())
    assert pointer == {"summary": f"{newer_doc.window.name}/summary.json", "sha256": digest}
    latest = summary.read_latest(tmp_path)
    assert latest.path == newer
    assert latest.summary == newer_doc
    assert latest.summary.verdict == "drift"

    # a summary changed after it was pointed at (still valid JSON, still a valid summary)
    raw = json.loads(newer.read_text())
    raw["rows"] = 999
    newer.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    with pytest.raises(InputError, match=rf"{re.escape(str(newer))} was changed .*sha256"):
        summary.read_latest(tmp_path)


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ({"summary": "../summary.json", "sha256": "0" * 64}, "not a window's folder"),
        ({"summary": "../other/summary.json", "sha256": "0" * 64}, "not <window>/summary.json"),
        ({"summary": "/etc/summary.json", "sha256": "0" * 64}, "is not <window>/summary.json"),
        ({"summary": "20250301T000000Z--20250301T010000Z/summary.json"}, "exactly"),
        (
            {"summary": "20250301T050000Z--20250301T060000Z/summary.json", "sha256": "0" * 64},
            "does not exist",
        ),
    ],
)
def test_a_bad_pointer_is_refused(tmp_path: Path, pointer: dict[str, str], message: str) -> None:
    written(tmp_path, make_summary())
    (tmp_path / summary.LATEST_FILE).write_text(json.dumps(pointer))
    with pytest.raises(InputError, match=message):
        summary.read_latest(tmp_path)


def test_no_latest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"latest\.json not found"):
        summary.read_latest(tmp_path)


def test_latest_must_point_inside_the_cloud_folder(tmp_path: Path) -> None:
    path = written(tmp_path / "elsewhere", make_summary())
    with pytest.raises(InputError, match="is not inside"):
        summary.write_latest(tmp_path / "private", path)


# --- gauges -------------------------------------------------------------------------------------


def parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        assert family.documentation
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_gauges_say_the_window(tmp_path: Path) -> None:
    document = make_summary(
        scores={"history_length": 0.25, "history_category": 0.04},
        quality=(
            figure("v1", "stable", feedback=500, hits=2),
            figure('v"2\\x', "canary", feedback=0, hits=0),
        ),
    )
    document = document.model_copy(
        update={"alerts": alerts.alerts_for(document, QualityConfig(min_hit_rate=0.05))}
    )
    now = dt.datetime(2025, 3, 1, 2, 0, 7, tzinfo=UTC)
    path = tmp_path / gauges.TEXTFILE
    gauges.write_textfile(path, document, now=now)
    text = path.read_text()
    assert text.endswith("\n")
    assert [p.name for p in tmp_path.iterdir()] == [gauges.TEXTFILE]  # no temporary left
    found = parsed(text)
    cloud = (("cloud", "private"),)
    assert found["recflow_monitor_drift"] == {cloud: 1.0}
    assert found["recflow_monitor_insufficient"] == {cloud: 0.0}
    scores = found["recflow_monitor_feature_drift_score"]
    assert scores == {
        (("cloud", "private"), ("feature", "history_category")): 0.04,
        (("cloud", "private"), ("feature", "history_length")): 0.25,
    }  # the skipped top_category gives no sample
    assert found["recflow_monitor_popularity_js"] == {cloud: 0.03}
    v1 = (("arm", "stable"), ("cloud", "private"), ("version", "v1"))
    v2 = (("arm", "canary"), ("cloud", "private"), ("version", 'v"2\\x'))
    assert found["recflow_monitor_online_hit_rate"] == {v1: pytest.approx(2 / 500)}
    assert found["recflow_monitor_online_quality_low"] == {v1: 1.0, v2: 0.0}
    assert found["recflow_monitor_online_feedback"] == {v1: 500.0, v2: 0.0}
    assert found["recflow_monitor_requests"] == {cloud: 1000.0}
    assert found["recflow_monitor_sampled_requests"] == {cloud: 500.0}
    assert found["recflow_monitor_skipped_files"] == {cloud: 1.0}
    assert found["recflow_monitor_last_run_timestamp_seconds"] == {cloud: now.timestamp()}
    assert found["recflow_monitor_window_end_timestamp_seconds"] == {
        cloud: document.window.until.timestamp()  # type: ignore[union-attr]
    }
    assert set(found) <= set(gauges.HELP)
    promtool = shutil.which("promtool")
    if promtool is not None:
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        assert lint.stdout.strip() == "", lint.stdout


def test_gauges_need_an_aware_time() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        gauges.gauges(make_summary(), now=dt.datetime(2025, 3, 1, 2))


# --- trend.html ---------------------------------------------------------------------------------


def series_points(page: str, name: str) -> list[list[tuple[float, float]]]:
    """The points of every polyline of series ``name``, panel by panel."""
    pattern = rf'<g class="series" data-series="{re.escape(name)}">.*?points="([^"]*)"'
    return [
        [tuple(float(v) for v in p.split(",")) for p in points.split()]  # type: ignore[misc]
        for points in re.findall(pattern, page)
    ]


def test_trend_plots_the_newest_windows_per_version(tmp_path: Path) -> None:
    cloud = tmp_path / "private"
    written(cloud, make_summary(hours=0, reference="v0", scores={"history_length": 0.9}))
    written(
        cloud,
        make_summary(
            hours=1,
            reference="v1",
            scores={"history_length": 0.05},
            quality=(figure("v1", "stable", feedback=400, hits=80),),
        ),
    )
    written(
        cloud,
        make_summary(
            hours=2,
            reference="v2",
            scores={"history_length": 0.3},
            quality=(figure("v2", "stable", feedback=400, hits=20),),
        ),
    )
    broken = cloud / "20250301T030000Z--20250301T040000Z"
    broken.mkdir()
    (broken / "summary.json").write_text('{"schema_version": 1, "verdict": "drift"')
    moved = cloud / "20250301T050000Z--20250301T060000Z"  # another window's summary
    moved.mkdir()
    shutil.copy(cloud / "20250301T000000Z--20250301T010000Z" / "summary.json", moved)
    result = trend.write_trend(cloud, 2, min_hit_rate=0.02)
    page = result.path.read_text()

    assert result.path == cloud / "trend.html"
    assert result.windows == (
        "20250301T010000Z--20250301T020000Z",
        "20250301T020000Z--20250301T030000Z",
    )
    assert [u.path for u in result.unreadable] == [
        f"{broken.name}/summary.json",
        f"{moved.name}/summary.json",
    ]
    assert "not JSON" in result.unreadable[0].reason
    assert "not its folder" in result.unreadable[1].reason
    assert f"{broken.name}/summary.json" in page
    assert str(tmp_path) not in page  # no machine paths
    assert "<svg" in page
    assert "<script" not in page.lower()
    assert "http" not in page.lower()
    assert "v0" not in page  # the oldest window is beyond history_windows

    # online quality: a line per version and arm; v1's 0.2 sits above v2's 0.05
    (v1_quality,) = series_points(page, "v1 (stable)")
    (v2_quality,) = series_points(page, "v2 (stable)")
    assert len(v1_quality) == len(v2_quality) == 1
    assert v1_quality[0][0] < v2_quality[0][0]  # v1's window comes first
    assert v1_quality[0][1] < v2_quality[0][1]  # a higher rate is drawn higher (smaller y)
    # drift: history_length and popularity_js panels, each with a line per reference version
    v1_drift, v2_drift = series_points(page, "v1"), series_points(page, "v2")
    assert len(v1_drift) == len(v2_drift) == 2
    assert v2_drift[0][0][1] < v1_drift[0][0][1]  # 0.3 above 0.05
    (threshold,) = series_points(page, "threshold")[:1]
    assert len(threshold) == 2


def test_trend_without_windows(tmp_path: Path) -> None:
    result = trend.write_trend(tmp_path / "public", 30)
    assert result.windows == ()
    assert "No readable window yet" in result.path.read_text()


# --- alerts -------------------------------------------------------------------------------------


def test_alerts_for_drift_and_low_quality() -> None:
    quiet = make_summary(quality=(figure("v1", "stable", feedback=400, hits=80),))
    assert alerts.alerts_for(quiet, QualityConfig()) == ()

    document = make_summary(
        scores={"history_length": 0.3, "history_price": 0.2},
        quality=(
            figure("v1", "stable", feedback=400, hits=2),  # high 0.015 < 0.02
            figure("v9", "canary", feedback=10, hits=0),  # too little feedback to judge
        ),
    )
    raised = alerts.alerts_for(document, QualityConfig(min_hit_rate=0.02, min_feedback=50))
    assert [a.kind for a in raised] == ["drift", "online_quality"]
    assert raised[0].features == ("history_length", "history_price")
    assert (raised[1].version, raised[1].arm) == ("v1", "stable")
    assert "below 0.02" in raised[1].detail


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers["Content-Type"], body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []
    status = getattr(request, "param", 200)
    handler = type("Handler", (Hook,), {"received": received, "status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def drift_alerts() -> tuple[summary.Alert, ...]:
    return alerts.alerts_for(make_summary(scores={"history_length": 0.3}), QualityConfig())


def test_alerts_are_logged_and_posted(
    webhook: tuple[str, list[tuple[str, bytes]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, received = webhook
    raised = drift_alerts()
    with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
        assert alerts.raise_alerts(raised, MonitorConfig(webhook_url=url)) == "posted"
    assert [(r.name, r.levelname) for r in caplog.records] == [("recflow.monitor", "WARNING")]
    assert "history_length" in caplog.records[0].getMessage()
    ((content_type, body),) = received
    assert content_type == "application/json"
    sent = json.loads(body)
    assert sent["source"] == "recflow.monitor"
    assert sent["alerts"] == [a.model_dump(mode="json") for a in raised]
    assert sent["alerts"][0]["features"] == ["history_length"]


def test_no_alerts_posts_nothing(webhook: tuple[str, list[tuple[str, bytes]]]) -> None:
    url, received = webhook
    assert alerts.raise_alerts((), MonitorConfig(webhook_url=url)) == "none"
    assert received == []


def test_without_a_webhook_alerts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
        assert alerts.raise_alerts(drift_alerts(), MonitorConfig()) == "logged"
    assert len(caplog.records) == 1


@pytest.mark.parametrize("webhook", [500], indirect=True)
def test_a_refusing_webhook_is_logged_not_raised(
    webhook: tuple[str, list[tuple[str, bytes]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, received = webhook
    with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
        assert alerts.raise_alerts(drift_alerts(), MonitorConfig(webhook_url=url)) == "failed"
    assert len(received) == 1
    assert "500" in caplog.records[-1].getMessage()


def test_a_webhook_that_is_down_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = MonitorConfig(webhook_url=f"http://127.0.0.1:{port}/alerts", webhook_timeout_s=2.0)
    with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
        assert alerts.raise_alerts(drift_alerts(), cfg) == "failed"
    assert f"alert webhook http://127.0.0.1:{port}/alerts failed" in caplog.records[-1].getMessage()


def test_a_silent_webhook_times_out(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        cfg = MonitorConfig(webhook_url=f"http://127.0.0.1:{port}/", webhook_timeout_s=0.2)
        with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
            assert alerts.raise_alerts(drift_alerts(), cfg) == "failed"
    assert "timed out" in caplog.records[-1].getMessage()
