"""The analysis reads a real Prometheus (Debian's package, where it is installed) in PromQL, and
the same windows from the servers' /metrics: both sources count the same requests and the same
code judges them. Skipped, with the reason, where the binary is missing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.waiting import wait_until
from pipelines.rollout import analysis
from pipelines.rollout.controller import deploy
from pipelines.rollout.fleet.client import Tokens
from pipelines.rollout.fleet.local import LocalFleet
from pipelines.rollout.metrics import WANTED
from pipelines.rollout.prometheus import find_binary, running
from pipelines.rollout.replay import ReplaySettings, replay
from pipelines.rollout.sessions import load_sessions
from pipelines.rollout.sources import PrometheusSource, ScrapeSource
from tests.rollout.conftest import Project

PROMETHEUS = find_binary("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus is not installed (make setup installs Debian's package as root)",
    ),
]


def test_prometheus_and_the_metrics_pages_give_the_same_window(
    make_project: Any, served_folder: Path, tmp_path: Path
) -> None:
    assert PROMETHEUS is not None
    project: Project = make_project()
    version = project.version(served_folder, "v1")
    params = project.params
    tokens = Tokens("admin-token-for-tests", "client-token-for-tests")
    local = LocalFleet(
        "private",
        project.params_file,
        tmp_path / "fleet",
        params.deploy.fleets.private.model_copy(update={"servers": 2}),
        tmp_path / "requests",
        tokens,
        "pseudonym-key-for-tests-0123456789",
    )
    fleet = local.start(version, 120)
    try:
        with running(PROMETHEUS, tmp_path / "prometheus", 0.5, 30) as server:
            server.watch("private", fleet.urls)
            promql = PrometheusSource(server.url, "private", 2, 0.5)
            scrape = ScrapeSource(fleet.urls)
            # the first scrapes (the limit only ends a hung test)
            assert wait_until(lambda: not promql.problems(), timeout_s=30, interval_s=0.2)
            assert promql.problems() == []
            started = {"promql": promql.snapshot(time.time()), "scrape": scrape.snapshot(0)}
            held_out = load_sessions(project.prepared)
            report = replay(
                fleet.urls,
                held_out,
                tokens.client,
                ReplaySettings(rate=300, concurrency=4, max_requests=150, max_s=20),
            )
            assert report.answered == 150
            windows = {
                "promql": promql.snapshot(time.time()).minus(started["promql"]),
                "scrape": scrape.snapshot(0).minus(started["scrape"]),
            }
    finally:
        local.stop()
    promql_window, scrape_window = windows["promql"], windows["scrape"]
    assert promql_window.total("recflow_requests_total", version=version, code="200") == 150
    for name in WANTED:
        assert promql_window.samples.get(name, {}) == pytest.approx(
            scrape_window.samples.get(name, {})
        ), name
    cfg = params.deploy.analysis
    verdicts = {
        source: analysis.judge_bake(
            "bake", analysis.arm_window(window, report, version, "stable"), report, cfg
        )
        for source, window in windows.items()
    }
    assert verdicts["promql"] == verdicts["scrape"]
    assert verdicts["promql"].outcome == "pass"


def test_a_rollout_reads_its_metrics_from_prometheus(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project(
        {"targets": ["private"], "metrics": {"source": "prometheus", "scrape_interval_s": 0.5}}
    )
    stable = project.version(served_folder, "stable")
    project.make_production(stable, "private")
    version = project.version(served_folder, "next")

    record = deploy(project.context(), version)

    assert record.status == "succeeded"
    infra = record.target("private").steps[0]
    metrics = next(c for c in infra["checks"] if c["metric"] == "metrics")
    assert metrics["detail"].startswith("Prometheus at http://127.0.0.1:")
    shadow = next(s for s in record.target("private").steps if s["step"] == "shadow")
    assert shadow["window"]["stable"]["requests"] == 120
    assert shadow["window"]["shadow"]["scored"] == 120
