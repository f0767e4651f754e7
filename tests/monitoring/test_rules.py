"""The Prometheus alert rules and the Grafana dashboard: valid, tested, and about real metrics.

``promtool`` (Debian's ``prometheus`` package) checks the rules and runs their unit tests; the
metric names the rules and the dashboard query must be ones the servers export or the monitor
writes, so a renamed metric cannot leave an alert that never fires.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipelines.monitoring import gauges

RULES = Path("docker") / "prometheus" / "alerts.yml"
RULE_TESTS = Path("docker") / "prometheus" / "alerts_test.yml"
DASHBOARD = Path("docker") / "grafana" / "recflow-dashboard.json"
METRIC = re.compile(r"\brecflow_[a-z0-9_]+\b")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian's prometheus package: make prometheus)",
)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules(project_root: Path) -> list[dict[str, object]]:
    doc = yaml.safe_load((project_root / RULES).read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs(project_root: Path) -> list[str]:
    board = json.loads((project_root / DASHBOARD).read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def served_metrics(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The sample names a server exports, from the server's own metrics."""
    from pipelines.serving.server.metrics import Metrics
    from pipelines.serving.server.state import MULTIPROC_ENV

    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics = Metrics()
    metrics.arm("v1", "stable")
    metrics.errors.labels("v1", "stable", "error")
    metrics.fallbacks.labels("v1", "stable", "deadline")
    metrics.shadow.labels("v1", "scored")
    metrics.shadow_overlap.labels("v1")
    metrics.shadow_latency.labels("v1")
    metrics.batch_size.labels("v1", "stable")
    metrics.model.labels("v1", "stable", "onnx")
    families = text_string_to_metric_families(metrics.render().decode())
    return {sample.name for family in families for sample in family.samples}


@needs_promtool
def test_rules_are_valid(project_root: Path) -> None:
    checked = promtool("check", "rules", str(RULES), cwd=project_root)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


@needs_promtool
def test_rules_pass_their_unit_tests(project_root: Path) -> None:
    tested = promtool("test", "rules", str(RULE_TESTS), cwd=project_root)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test(project_root: Path) -> None:
    names = {str(rule["alert"]) for rule in alert_rules(project_root)}
    assert names == {
        "RecflowLatencyP99High",
        "RecflowErrorRateHigh",
        "RecflowFallbackRateHigh",
        "RecflowDrift",
        "RecflowOnlineQualityLow",
        "RecflowMonitorStale",
        "RecflowMonitorAbsent",
    }
    tests = yaml.safe_load((project_root / RULE_TESTS).read_text())["tests"]
    cases = [case for group in tests for case in group["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == names
    assert silent == names
    for case in cases:
        for alert in case["exp_alerts"]:
            assert alert["exp_annotations"]["summary"]


def test_rules_and_dashboard_query_real_metrics(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = served_metrics(monkeypatch) | set(gauges.HELP)
    assert "recflow_requests_total" in known
    assert "recflow_monitor_last_run_timestamp_seconds" in known
    queried = {
        name for rule in alert_rules(project_root) for name in METRIC.findall(str(rule["expr"]))
    }
    queried |= {name for expr in dashboard_exprs(project_root) for name in METRIC.findall(expr)}
    assert queried - known == set()
    # every gauge the monitor writes is on the dashboard
    shown = {name for expr in dashboard_exprs(project_root) for name in METRIC.findall(expr)}
    assert set(gauges.HELP) - shown == set()


def test_dashboard_is_plain_grafana_json(project_root: Path) -> None:
    board = json.loads((project_root / DASHBOARD).read_text())
    assert board["uid"] == "recflow-overview"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in board["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


@needs_promtool
def test_dashboard_queries_parse(project_root: Path, tmp_path: Path) -> None:
    """Each dashboard query, its variables given a value, as a recording rule promtool checks."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query_{n}",
                        "expr": expr.replace("$fleet", ".*").replace("$cloud", ".*"),
                    }
                    for n, expr in enumerate(dashboard_exprs(project_root))
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
