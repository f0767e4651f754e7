"""``make drift-demo`` for real on the ``tiny`` preset: day 1 once, then day 2 twice from it.

Day 1 is the main job on a copy of the project. Two copies of that state then run day 2 through
the demo (``--skip-day1``): first without drift, where the monitor says ``no_drift`` and
Airflow's database holds no asset event and no ``recsys_retrain`` run; then with the demo's
default knob (``category_shift`` 0.5), where the monitor names ``history_category``, the asset
event fires and the asset-triggered retrain registers a version whose lineage names the drift.
The public store's loopback server is the test's and outlives the runs; the copy without drift
runs first because the other one's retrain changes that store.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.params import load_params
from pipelines.core.project import interpreter_env
from pipelines.main_job.airflow_cli import AIRFLOW_HOME
from pipelines.registry.loopback import loopback_s3
from tests.integration.conftest import AIRFLOW_OVERRIDES, airflow, copy_after_run, run_main_job
from tests.integration.project import copy_project

pytestmark = pytest.mark.slow

DAY1 = "2026-11-20"
DAY2 = "2026-11-21"
# the retrain's candidate is judged against a two-epoch production model on a few hundred
# users: a difference within the noise lets it through, since the loop is under test, not the gate
DEMO_OVERRIDES = {
    **AIRFLOW_OVERRIDES,
    "evaluate": {**AIRFLOW_OVERRIDES["evaluate"], "on_inconclusive": "pass"},
}


@pytest.fixture(scope="module")
def day1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project whose day 1 ran, and the loopback store's environment (alive for the module)."""
    root = copy_project(tmp_path_factory.mktemp("drift-demo") / "day1", DEMO_OVERRIDES)
    with loopback_s3(load_params(root / "params.yaml").stores) as server:
        job = run_main_job(root, "--logical-date", DAY1, env=server.env)
        assert job.returncode == 0, job.failure()
        yield root, server.env


def _demo(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.main_job.drift_demo", "--root", str(root),
         "--skip-day1", "--day2", DAY2, *args],
        cwd=root,
        env={**interpreter_env(), **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )  # fmt: skip


def _summary(root: Path, cloud: str) -> dict[str, Any]:
    out = root / "reports" / "monitoring" / cloud
    pointer = json.loads((out / "latest.json").read_text())
    summary: dict[str, Any] = json.loads((out / pointer["summary"]).read_text())
    return summary


def _retrain_runs(root: Path) -> list[dict[str, Any]]:
    listed = airflow(root, "dags", "list-runs", "recsys_retrain", "-o", "json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    documents = [line for line in listed.stdout.splitlines() if line.startswith("[")]
    return json.loads(documents[-1]) if documents else []


def _asset_events(root: Path) -> list[tuple[str, str]]:
    """(asset uri, extra) of every asset event in the Airflow database."""
    with sqlite3.connect(root / AIRFLOW_HOME / "airflow.db") as db:
        rows = db.execute(
            "SELECT asset.uri, asset_event.extra FROM asset_event "
            "JOIN asset ON asset.id = asset_event.asset_id"
        ).fetchall()
    return [(str(uri), str(extra)) for uri, extra in rows]


def _failure(demo: subprocess.CompletedProcess[str]) -> str:
    return f"exit {demo.returncode}\n{demo.stdout[-6000:]}\n{demo.stderr[-3000:]}"


def test_a_day_without_drift_starts_nothing(
    day1: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    project, env = day1
    root = copy_after_run(project, tmp_path / "calm")
    demo = _demo(root, env, "--no-knob")
    assert demo.returncode == 0, _failure(demo)
    summary = _summary(root, "private")
    assert summary["verdict"] == "no_drift", summary
    assert summary["drifted"] == []
    assert "monitor private: no_drift" in demo.stdout
    assert "no drift asset event, no retrain" in demo.stdout
    assert _asset_events(root) == []
    assert _retrain_runs(root) == []
    # the drift knobs and the schedule's start are as before the demo
    params = load_params(root / "params.yaml")
    assert params.generate.drift.category_shift == 0.0
    assert params.airflow.start_date == load_params(project / "params.yaml").airflow.start_date


def test_a_drifted_day_triggers_the_retrain_that_names_it(
    day1: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    project, env = day1
    root = copy_after_run(project, tmp_path / "drifted")
    demo = _demo(root, env)
    assert demo.returncode == 0, _failure(demo)
    events = _asset_events(root)
    assert [uri for uri, _ in events] == ["recflow://monitoring/drift"]
    reason = json.loads(events[0][1])
    assert reason["kind"] == "drift" and reason["cloud"] == "private"
    assert "history_category" in json.dumps(reason["features"])
    # the drift DAG's window (the retrain's own monitor wrote a later one since)
    folder = root / "reports" / "monitoring" / "private" / reason["window"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == "drift", summary
    assert "history_category" in [row["feature"] for row in summary["drifted"]]
    runs = _retrain_runs(root)
    # the CLI lists no run type: an asset-triggered run's id says it
    kinds = [(run["run_id"].split("__")[0], run["state"]) for run in runs]
    assert kinds == [("asset_triggered", "success")], runs
    trigger = [line.strip() for line in demo.stdout.splitlines() if "trigger:" in line]
    assert len(trigger) == 1 and "history_category" in trigger[0], demo.stdout
    assert load_params(root / "params.yaml").generate.drift.category_shift == 0.0
