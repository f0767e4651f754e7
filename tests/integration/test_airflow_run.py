"""The ``recsys_retrain`` DAG end to end on a copy of the project, with Airflow on SQLite.

The run leaves the project as ``dvc repro`` would: every stage recorded in ``dvc.lock`` and
``dvc status`` clean; a second run for the same date finds every stage up to date.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pipelines.core.params import load_params
from tests.integration.project import dvc

pytestmark = pytest.mark.slow

DAG_ID = "recsys_retrain"
AirflowCli = Callable[..., subprocess.CompletedProcess[str]]
STAGES = ("generate", "ingest", "validate", "prepare", "train", "optimize", "evaluate")
TASKS = {"set_logical_date", *STAGES, "register"}
# not the date in params.yaml: the run must set it
RUN_DATE = "2026-11-20"


def _json_rows(stdout: str) -> list[dict[str, str]]:
    # Airflow may print warnings on stdout before the JSON document
    (document,) = [line for line in stdout.splitlines() if line.startswith("[")][-1:]
    rows: list[dict[str, str]] = json.loads(document)
    return rows


@pytest.fixture(scope="module")
def first_run(airflow_project: Path, airflow_cli: AirflowCli) -> subprocess.CompletedProcess[str]:
    assert load_params(airflow_project / "params.yaml").run.logical_date.isoformat() != RUN_DATE
    return airflow_cli("dags", "test", DAG_ID, RUN_DATE)


def test_every_task_succeeds(
    first_run: subprocess.CompletedProcess[str], airflow_project: Path, airflow_cli: AirflowCli
) -> None:
    assert first_run.returncode == 0, first_run.stdout[-6000:] + first_run.stderr[-3000:]
    runs = airflow_cli("dags", "list-runs", DAG_ID, "-o", "json")
    assert runs.returncode == 0, runs.stderr[-3000:]
    (run,) = [r for r in _json_rows(runs.stdout) if r["logical_date"].startswith(RUN_DATE)]
    assert run["state"] == "success"
    states = airflow_cli(
        "tasks",
        "states-for-dag-run",
        DAG_ID,
        run["run_id"],
        "-o",
        "json",
    )
    assert states.returncode == 0, states.stderr[-3000:]
    by_task = {row["task_id"]: row["state"] for row in _json_rows(states.stdout)}
    assert by_task == dict.fromkeys(TASKS, "success")


def test_the_run_date_reaches_the_stages(
    first_run: subprocess.CompletedProcess[str], airflow_project: Path
) -> None:
    assert first_run.returncode == 0
    assert load_params(airflow_project / "params.yaml").run.logical_date.isoformat() == RUN_DATE
    assert (airflow_project / "data" / "raw" / "events" / RUN_DATE).is_dir()


def test_outputs_exist(first_run: subprocess.CompletedProcess[str], airflow_project: Path) -> None:
    assert first_run.returncode == 0
    for folder in (
        "data/source/synthetic",
        "data/validated",
        "data/prepared",
        "reports/validation",
    ):
        assert any((airflow_project / folder).iterdir()), folder
    for metrics in ("metrics/validation.json", "metrics/prepare.json"):
        assert json.loads((airflow_project / metrics).read_text(encoding="utf-8")), metrics


def test_the_gated_model_is_registered_and_replicated(
    first_run: subprocess.CompletedProcess[str],
    airflow_project: Path,
    loopback: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.registry import ledger
    from pipelines.registry.clouds import open_registry
    from pipelines.registry.promotion import resolve
    from pipelines.registry.versions import verify_version

    assert first_run.returncode == 0
    for name, value in loopback.items():
        monkeypatch.setenv(name, value)
    registry = open_registry(load_params(airflow_project / "params.yaml"), airflow_project)
    version = resolve(registry, "production", "private")
    assert resolve(registry, "production", "public") == version
    assert verify_version(registry.store("public"), version) == []
    entries = ledger.entries(registry.record)
    assert [(e.cloud, e.version) for e in entries] == [("private", version), ("public", version)]
    assert entries[0].change["run"]["dag_id"] == DAG_ID
    assert entries[0].change["reason"] == "gate verdict pass (bootstrap rule)"
    # the run's logs (every task's output) never show the store's secret
    assert loopback["AWS_SECRET_ACCESS_KEY"] not in first_run.stdout + first_run.stderr


def test_dvc_record_matches_dvc_repro(
    first_run: subprocess.CompletedProcess[str], airflow_project: Path
) -> None:
    assert first_run.returncode == 0
    status = dvc(airflow_project, "status", check=False)
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout, status.stdout
    lock = yaml.safe_load((airflow_project / "dvc.lock").read_text(encoding="utf-8"))
    assert set(lock["stages"]) == set(STAGES)
    dry = dvc(airflow_project, "repro", "--dry", check=False)
    assert dry.returncode == 0, dry.stderr
    assert "Running stage" not in dry.stdout, dry.stdout


def test_second_run_finds_every_stage_up_to_date(
    first_run: subprocess.CompletedProcess[str], airflow_project: Path, airflow_cli: AirflowCli
) -> None:
    assert first_run.returncode == 0
    lock_before = (airflow_project / "dvc.lock").read_bytes()
    again = airflow_cli("dags", "test", DAG_ID, RUN_DATE)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    for stage in STAGES:
        assert f"{stage} is up to date" in again.stdout + again.stderr, stage
    assert (airflow_project / "dvc.lock").read_bytes() == lock_before


def _task_states(airflow_cli: AirflowCli, run_date: str) -> tuple[str, dict[str, str]]:
    runs = airflow_cli("dags", "list-runs", DAG_ID, "-o", "json")
    assert runs.returncode == 0, runs.stderr[-3000:]
    (run,) = [r for r in _json_rows(runs.stdout) if r["logical_date"].startswith(run_date)]
    states = airflow_cli("tasks", "states-for-dag-run", DAG_ID, run["run_id"], "-o", "json")
    assert states.returncode == 0, states.stderr[-3000:]
    return run["state"], {row["task_id"]: row["state"] for row in _json_rows(states.stdout)}


def test_rejected_batch_stops_the_run_and_is_quarantined(
    first_run: subprocess.CompletedProcess[str], airflow_project: Path, airflow_cli: AirflowCli
) -> None:
    """Runs last: a batch that fails validation fails the run at once; prepare never runs."""
    assert first_run.returncode == 0
    bad_date = "2026-11-21"
    params_path = airflow_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["validate"]["price_max"] = 1.0  # every synthetic price is above this
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    prepared_before = {
        p.name: p.read_bytes() for p in (airflow_project / "data" / "prepared").iterdir()
    }

    airflow_cli("dags", "test", DAG_ID, bad_date)

    state, tasks = _task_states(airflow_cli, bad_date)
    assert state == "failed"
    assert tasks["validate"] == "failed"
    assert tasks["prepare"] == "upstream_failed"
    quarantined = airflow_project / "data" / "quarantine" / bad_date
    assert (quarantined / "events.parquet").is_file()
    summary = (quarantined / "summary.txt").read_text()
    assert "expect_column_values_to_be_between" in summary and "price" in summary
    # nothing downstream can run on the rejected batch, and earlier outputs are intact
    assert not (airflow_project / "data" / "validated").exists()
    prepared_after = {
        p.name: p.read_bytes() for p in (airflow_project / "data" / "prepared").iterdir()
    }
    assert prepared_after == prepared_before
