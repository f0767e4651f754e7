"""The main job end to end on a copy of the project: the ``recsys_retrain`` DAG on SQLite.

The run leaves the project as ``dvc repro`` would: every stage recorded in ``dvc.lock`` and
``dvc status`` clean; a second run for the same date finds every stage up to date. Airflow
records the run with the times it really ran, and the console shows a line per task start and
end with the stage's key figure. A rejected batch fails the job on a copy of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.params import load_params
from pipelines.main_job.airflow_cli import DAG_ID
from pipelines.main_job.figures import key_figure
from pipelines.stages.table import STAGES, chain_task_ids, chain_upstream
from tests.integration.conftest import (
    AirflowCli,
    JobRun,
    airflow,
    copy_after_run,
    run_main_job,
)
from tests.integration.project import dvc

pytestmark = pytest.mark.slow

PARAMS = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
# the chain's tasks, the deploy stage once per cloud with an approval between them
TASKS = list(chain_task_ids(PARAMS))
UPSTREAM = chain_upstream(PARAMS)
# the run's form does not require approval (params.yaml's default): the approval skips itself
APPROVALS = [task for task in TASKS if task.startswith("approve_")]
RUN_TASKS = [task for task in TASKS if task not in APPROVALS]
DVC_STAGES = [spec.name for spec in STAGES if spec.tracked]
# not the date in params.yaml: the run must set it
RUN_DATE = "2026-11-20"
BAD_DATE = "2026-11-21"
TASK_LINE = re.compile(r"^(?P<clock>\d{2}:\d{2}:\d{2}) (?P<state>\S+)\s+(?P<task>\S+)(?P<rest>.*)$")
# a tall screen: in a pipe every task keeps its start line, and each deploy task shows a line
# per step
ONE_SCREEN = 52


def _json_rows(stdout: str) -> list[dict[str, Any]]:
    # Airflow may print warnings on stdout before the JSON document
    (document,) = [line for line in stdout.splitlines() if line.startswith("[")][-1:]
    rows: list[dict[str, Any]] = json.loads(document)
    return rows


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _run_in(cli: AirflowCli, job: JobRun) -> dict[str, Any]:
    """The DAG run that started while ``job`` ran."""
    runs = cli("dags", "list-runs", DAG_ID, "-o", "json")
    assert runs.returncode == 0, runs.stderr[-3000:]
    (run,) = [
        r for r in _json_rows(runs.stdout) if job.started <= _time(r["start_date"]) <= job.ended
    ]
    return run


def _task_rows(cli: AirflowCli, run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    states = cli("tasks", "states-for-dag-run", DAG_ID, run["run_id"], "-o", "json")
    assert states.returncode == 0, states.stderr[-3000:]
    return {row["task_id"]: row for row in _json_rows(states.stdout)}


def _task_lines(job: JobRun) -> list[tuple[str, str, str]]:
    """(state, task, rest) of each console line about a task."""
    matches = [TASK_LINE.match(line) for line in job.console]
    return [(m["state"], m["task"], m["rest"]) for m in matches if m and m["task"] in TASKS]


@pytest.fixture(scope="module")
def first_run(airflow_project: Path, loopback: dict[str, str]) -> JobRun:
    assert load_params(airflow_project / "params.yaml").run.logical_date.isoformat() != RUN_DATE
    # the public store's server is the test's, so the replica can be read after the job
    return run_main_job(airflow_project, "--logical-date", RUN_DATE, env=loopback)


@pytest.fixture(scope="module")
def recorded(
    first_run: JobRun, airflow_cli: AirflowCli
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """What Airflow recorded of the first run: the DAG run, and its task instances by task."""
    assert first_run.returncode == 0, first_run.failure()
    run = _run_in(airflow_cli, first_run)
    return run, _task_rows(airflow_cli, run)


def test_the_job_and_every_task_succeed(
    recorded: tuple[dict[str, Any], dict[str, dict[str, Any]]],
) -> None:
    run, tasks = recorded
    assert run["state"] == "success"
    assert {name: row["state"] for name, row in tasks.items()} == {
        **dict.fromkeys(RUN_TASKS, "success"),
        **dict.fromkeys(APPROVALS, "skipped"),
    }


def test_the_gated_model_is_registered_replicated_and_promoted(
    first_run: JobRun,
    airflow_project: Path,
    loopback: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.registry import ledger
    from pipelines.registry.clouds import open_registry
    from pipelines.registry.promotion import resolve
    from pipelines.registry.versions import verify_version

    assert first_run.returncode == 0, first_run.failure()
    for name, value in loopback.items():
        monkeypatch.setenv(name, value)
    registry = open_registry(load_params(airflow_project / "params.yaml"), airflow_project)
    version = resolve(registry, "production", "private")
    assert resolve(registry, "production", "public") == version
    assert verify_version(registry.store("public"), version) == []
    entries = ledger.entries(registry.record)
    # register names the gated version the candidate; its rollout makes it production
    assert [(e.alias, e.cloud, e.version) for e in entries] == [
        ("candidate", "private", version),
        ("candidate", "public", version),
        ("production", "private", version),
        ("production", "public", version),
    ]
    assert entries[0].change["run"]["dag_id"] == DAG_ID
    assert entries[0].change["reason"] == "gate verdict pass (first-model rule)"
    # the first rollout: nothing served before, so a bake against the popularity fallback
    assert entries[2].change["reason"] == "rollout passed in private: infra, bake"
    assert entries[2].change["run"]["task_id"] == "deploy_private"
    assert entries[3].change["run"]["task_id"] == "deploy_public"
    assert re.search(
        rf"success\s+register .* version {version}: candidate in private, public", first_run.stdout
    )
    for cloud in ("private", "public"):
        assert re.search(
            rf"success\s+deploy_{cloud} .* {version[:12]} serves in {cloud} \(bake\)",
            first_run.stdout,
        )
    console = first_run.console
    start = next(
        i for i, line in enumerate(console) if re.search(r" start\s+deploy_private$", line)
    )
    steps = [line.strip() for line in console[start + 1 :] if line.startswith(" ")]
    for cloud in ("private", "public"):
        assert any(s.startswith(f"{cloud} infra: pass") for s in steps), steps
        assert any(s.startswith(f"{cloud} bake: pass") for s in steps), steps
        assert any(s.startswith(f"{cloud} full: {version[:12]} serves 100%") for s in steps)
    # the job's console and its full Airflow log never show the store's secret
    secret = loopback["AWS_SECRET_ACCESS_KEY"]
    assert secret not in first_run.stdout + first_run.stderr
    logs = airflow_project / ".airflow" / "logs"
    assert all(secret not in p.read_text(errors="replace") for p in logs.rglob("*.log"))


def test_the_run_is_recorded_with_the_times_it_really_ran(
    first_run: JobRun, recorded: tuple[dict[str, Any], dict[str, dict[str, Any]]]
) -> None:
    """``dags test DAG <date>`` would record the logical date as the start (days ago)."""
    run, tasks = recorded
    window = (first_run.started, first_run.ended)
    assert window[0] <= _time(run["start_date"]) <= _time(run["end_date"]) <= window[1]
    assert window[0] <= _time(run["logical_date"]) <= window[1]
    for name, row in tasks.items():
        start, end = _time(row["start_date"]), _time(row["end_date"])
        assert window[0] <= start <= end <= window[1], name


def test_the_run_names_its_data_date_in_its_note(
    airflow_project: Path, recorded: tuple[dict[str, Any], dict[str, dict[str, Any]]]
) -> None:
    """The header's date is when ``dags test`` ran; the run's note names the data date."""
    run, _ = recorded
    database = airflow_project / ".airflow" / "airflow.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        notes = connection.execute(
            "SELECT n.content FROM dag_run r JOIN dag_run_note n ON n.dag_run_id = r.id "
            "WHERE r.dag_id = ? AND r.run_id = ?",
            (DAG_ID, run["run_id"]),
        ).fetchall()
    assert notes == [(f"data date {RUN_DATE}",)]


def test_the_console_has_a_line_per_task_start_and_end(
    first_run: JobRun, airflow_project: Path
) -> None:
    assert first_run.returncode == 0, first_run.failure()
    lines = _task_lines(first_run)
    # tasks without an edge between them (evaluate and reference) may run in either order:
    # each task has one start and then one success, after every upstream task's success
    order = [(state, task) for state, task, _ in lines if task in RUN_TASKS]
    assert sorted(order) == sorted((state, t) for t in RUN_TASKS for state in ("start", "success"))
    for task in RUN_TASKS:
        begun = order.index(("start", task))
        assert begun < order.index(("success", task)), task
        for upstream in UPSTREAM[task]:
            if upstream in RUN_TASKS:
                assert order.index(("success", upstream)) < begun, (upstream, task)
    for state, task, rest in lines:
        figure = key_figure(task, airflow_project)
        if state == "success" and figure is not None:
            assert rest.endswith(f"  {figure}"), (task, rest)
    # what the figures say, not only that they match the files
    text = first_run.stdout
    assert re.search(r"success\s+validate .* [\d,]+ rows accepted \(\d+/\d+ expectations\)", text)
    assert re.search(r"success\s+prepare .* [\d,]+ users, [\d,]+ sequences", text)
    assert re.search(r"success\s+train .* 2 epochs, test NDCG@10 0\.\d{4} vs transition", text)
    assert re.search(r"success\s+optimize .* ships \S+, [\d.]+x torch eager at batch 1", text)
    assert re.search(r"success\s+evaluate .* gate verdict: pass", text)


def test_training_shows_a_rate_line_per_epoch_under_its_task(first_run: JobRun) -> None:
    assert first_run.returncode == 0, first_run.failure()
    console = first_run.console
    start = next(i for i, line in enumerate(console) if re.search(r" start\s+train$", line))
    end = next(i for i, line in enumerate(console) if re.search(r" success\s+train ", line))
    epochs = [line.strip() for line in console[start + 1 : end] if "epoch" in line]
    assert len(epochs) == 2, console[start : end + 1]
    for number, line in enumerate(epochs, start=1):
        assert re.fullmatch(
            rf"epoch {number}: loss [\d.]+, valid ndcg@10 [\d.]+ ±[\d.]+, "
            rf"[\d.]+ s \(\d+ windows/s\)",
            line,
        )


def test_the_console_fits_a_screen_and_the_full_log_is_in_a_file(
    first_run: JobRun, airflow_project: Path
) -> None:
    assert first_run.returncode == 0, first_run.failure()
    assert len(first_run.console) <= ONE_SCREEN, first_run.stdout
    # Airflow's own records stay off the console ...
    for wrapper in ("[DAG TEST]", "SubprocessHook", "Task instance state updated", "::group::"):
        assert wrapper not in first_run.stdout
    assert "Metric" not in first_run.stdout  # no `dvc metrics show` table
    # ... and go to the log file the job names
    (named,) = [line for line in first_run.console if line.startswith("full log: ")]
    log = airflow_project / named.removeprefix("full log: ")
    text = log.read_text(encoding="utf-8")
    for task in RUN_TASKS:
        assert f"[DAG TEST] starting task_id={task} " in text
    assert "[train output]" in text and "recflow.train: rank 0 of 2" in text


def test_the_summary_names_each_output_and_where_it_is(first_run: JobRun) -> None:
    assert first_run.returncode == 0, first_run.failure()
    text = first_run.stdout
    assert re.search(r" done +dvc repro: up to date \(", text), text
    assert f"recflow: chain done for {RUN_DATE} in " in text
    summary = text[text.index("recflow: chain done") :].splitlines()
    places = {
        "validate": "report reports/validation/data_docs/index.html",
        "prepare": "in data/prepared/",
        "train": "in models/candidate/",
        "optimize": "in models/candidate/optimized/",
        "evaluate": "report models/candidate/evaluation/report.html",
    }
    for stage, place in places.items():
        (line,) = [line for line in summary if line.startswith(f"  {stage} ")]
        assert line.endswith(f"; {place}"), line


def test_the_run_date_reaches_the_stages(first_run: JobRun, airflow_project: Path) -> None:
    assert first_run.returncode == 0, first_run.failure()
    assert load_params(airflow_project / "params.yaml").run.logical_date.isoformat() == RUN_DATE
    assert (airflow_project / "data" / "raw" / "events" / RUN_DATE).is_dir()


def test_outputs_exist(first_run: JobRun, airflow_project: Path) -> None:
    assert first_run.returncode == 0, first_run.failure()
    for folder in (
        "data/source/synthetic",
        "data/validated",
        "data/prepared",
        "reports/validation",
    ):
        assert any((airflow_project / folder).iterdir()), folder
    for metrics in ("metrics/validation.json", "metrics/prepare.json"):
        assert json.loads((airflow_project / metrics).read_text(encoding="utf-8")), metrics


def test_dvc_record_matches_dvc_repro(first_run: JobRun, airflow_project: Path) -> None:
    assert first_run.returncode == 0, first_run.failure()
    status = dvc(airflow_project, "status", check=False)
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout, status.stdout
    lock = yaml.safe_load((airflow_project / "dvc.lock").read_text(encoding="utf-8"))
    assert set(lock["stages"]) == set(DVC_STAGES)
    dry = dvc(airflow_project, "repro", "--dry", check=False)
    assert dry.returncode == 0, dry.stderr
    assert "Running stage" not in dry.stdout, dry.stdout


def test_rerunning_the_same_date_changes_nothing(
    first_run: JobRun, airflow_project: Path, loopback: dict[str, str]
) -> None:
    """The first run promoted its own model; a rerun of its date keeps the pin the first run
    judged against (not the model itself): every stage is up to date, the same version is
    registered again as a no-op, and nothing is rolled out a second time."""
    assert first_run.returncode == 0, first_run.failure()
    lock_before = (airflow_project / "dvc.lock").read_bytes()
    pin_before = (airflow_project / "models" / "production.json").read_bytes()
    rollouts = airflow_project / "data" / "serving" / "deploy"
    records_before = {p: p.read_bytes() for p in rollouts.rglob("rollout.json")}
    again = run_main_job(airflow_project, "--logical-date", RUN_DATE, env=loopback)
    assert again.returncode == 0, again.failure()
    assert (airflow_project / "dvc.lock").read_bytes() == lock_before
    assert (airflow_project / "models" / "production.json").read_bytes() == pin_before
    ended = {task: rest for state, task, rest in _task_lines(again) if state == "success"}
    for stage in DVC_STAGES:
        assert ended[stage].endswith("(up to date)"), (stage, ended[stage])
    (version,) = re.findall(r"version (\w{16}): candidate", first_run.stdout)
    assert re.search(rf"success\s+register .* version {version}", again.stdout), again.stdout
    # the rollout record of that version is the first run's, untouched: no second rollout
    assert {p: p.read_bytes() for p in rollouts.rglob("rollout.json")} == records_before
    assert "canary" not in again.stdout and "bake:" not in again.stdout


@pytest.fixture(scope="module")
def rejected(
    first_run: JobRun, airflow_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the project after the first run, whose next batch fails validation."""
    assert first_run.returncode == 0, first_run.failure()
    root = copy_after_run(airflow_project, tmp_path_factory.mktemp("rejected") / "project")
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["validate"]["price_max"] = 1.0  # every synthetic price is above this
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _production(root: Path, store_env: dict[str, str]) -> tuple[str | None, int]:
    """The version production names in the store of record, and the ledger's length."""
    from pipelines.registry import ledger
    from pipelines.registry.clouds import open_registry
    from pipelines.registry.promotion import resolve

    with pytest.MonkeyPatch.context() as patch:
        for name, value in store_env.items():
            patch.setenv(name, value)
        registry = open_registry(load_params(root / "params.yaml"), root)
        return resolve(registry, "production", "private"), len(ledger.entries(registry.record))


def test_rejected_batch_stops_the_run_and_is_quarantined(
    rejected: Path, loopback: dict[str, str]
) -> None:
    """A batch that fails validation fails the job at once; prepare never runs, and the
    production model keeps serving (no alias moved, no rollout)."""
    production_before = _production(rejected, loopback)
    assert production_before[0] is not None
    prepared = rejected / "data" / "prepared"
    prepared_before = {p.name: p.read_bytes() for p in prepared.iterdir()}

    job = run_main_job(rejected, "--logical-date", BAD_DATE)

    assert job.returncode == 1, job.failure()
    lines = _task_lines(job)
    assert lines[-1][:2] == ("failed", "validate")
    assert [task for state, task, _ in lines if state == "start"] == TASKS[
        : TASKS.index("validate") + 1
    ]
    after = job.console[
        job.console.index(next(line for line in job.console if " failed " in line)) :
    ]
    assert any(f"error: batch {BAD_DATE} rejected" in line for line in after), job.stdout
    assert any("expect_column_values_to_be_between(price)" in line for line in after)
    assert "recflow: the DAG run failed at validate" in job.stdout
    not_run = ", ".join(TASKS[TASKS.index("validate") + 1 :])
    assert not_run.startswith("prepare, train, optimize, reference, evaluate")
    assert f"  not run: {not_run}" in job.console
    assert job.console[-1].startswith("full log: ") and job.console[-1].endswith(".log")

    def cli(*args: str) -> Any:
        return airflow(rejected, *args)

    run = _run_in(cli, job)
    assert run["state"] == "failed"
    tasks = {name: row["state"] for name, row in _task_rows(cli, run).items()}
    assert tasks["validate"] == "failed"
    assert tasks["prepare"] == "upstream_failed"
    # production keeps serving: no deploy task ran, no alias moved, nothing in the ledger
    for task in TASKS:
        if task.startswith("deploy_"):
            assert tasks[task] == "upstream_failed", (task, tasks[task])
    assert _production(rejected, loopback) == production_before
    quarantined = rejected / "data" / "quarantine" / BAD_DATE
    assert (quarantined / "events.parquet").is_file()
    summary = (quarantined / "summary.txt").read_text()
    assert "expect_column_values_to_be_between" in summary and "price" in summary
    # nothing downstream can run on the rejected batch, and earlier outputs are intact
    assert not (rejected / "data" / "validated").exists()
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == prepared_before


def test_every_task_has_the_log_the_ui_reads(
    recorded: tuple[dict[str, Any], dict[str, dict[str, Any]]], airflow_project: Path
) -> None:
    """``dags test`` writes no task log file: the job writes each task's where the UI reads it."""
    from pipelines.main_job.progress import task_log_path

    run, tasks = recorded
    for task, row in tasks.items():
        if row["state"] == "skipped":
            continue
        path = (
            airflow_project
            / ".airflow"
            / "logs"
            / task_log_path(DAG_ID, run["run_id"], task, -1, 1)
        )
        assert f"starting task_id={task} " in path.read_text(encoding="utf-8"), task
