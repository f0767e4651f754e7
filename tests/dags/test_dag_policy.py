"""Policies of the DAGs: stable versions, no unintended scheduled run, the rollback DAG, alerts."""

from __future__ import annotations

import copy
import datetime as dt
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recflow_airflow.alerts import FailureAlert, failure_payload
from recflow_airflow.execution import LATE_GRACE
from recflow_airflow.operators import past_due
from recflow_airflow.project import PROJECT_ROOT_ENV
from recflow_airflow.rollback import ALIAS_ENV, CLOUD_ENV, REASON_ENV, VERSION_ENV

DUE = dt.datetime(2026, 12, 2, 2, tzinfo=dt.UTC)

# --- the same DAG version from every parse ---------------------------------------------------

_SERIALIZE = """
import hashlib, json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization, LazyDeserializedDAG
bag = DagBag(dag_folder={dags!r})
assert not bag.import_errors, bag.import_errors
out = {{}}
for dag_id, dag in sorted(bag.dags.items()):
    data = DagSerialization.to_dict(dag)
    text = json.dumps(data["dag"]["tasks"], sort_keys=True, default=str)
    out[dag_id] = {{"tasks": hashlib.sha256(text.encode()).hexdigest(),
                   "version_hash": LazyDeserializedDAG.from_dag(dag).hash}}
print(json.dumps(out))
"""


def _serialized(project_root: Path, home: Path, path: str, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != PROJECT_ROOT_ENV}
    env.update({"AIRFLOW_HOME": str(home), "PATH": path, "RECFLOW_UNRELATED": str(cwd)})
    result = subprocess.run(
        [sys.executable, "-c", _SERIALIZE.format(dags=str(project_root / "dags"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_two_parses_in_different_environments_serialize_identically(
    project_root: Path, tmp_path: Path
) -> None:
    """A task definition carries nothing of the parsing process's environment: parsing the
    DAG folder again (another PATH, another working directory) makes no new DAG version."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # one Airflow (its dags folder is part of the serialized DAG), two parsing processes
    home = tmp_path / "home"
    first = _serialized(project_root, home, "/usr/bin:/bin", tmp_path / "a")
    second = _serialized(
        project_root, home, "/opt/other/bin:/usr/local/bin:/usr/bin:/bin", tmp_path / "b"
    )
    assert set(first) == {"recsys_drift_monitor", "recsys_retrain", "recsys_rollback"}
    assert first == second


# --- a paused DAG unpaused by a manual trigger -----------------------------------------------


def test_the_cron_timetable_creates_the_missed_run_on_unpause(dag: Any) -> None:
    """What the guard is for: with catchup=False, ``CronTriggerTimetable`` proposes the most
    recent cron time already past (``run_immediately`` only applies without a start date)."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(dag.timetable.timetable)
    last = DataInterval(DUE - dt.timedelta(days=30), DUE - dt.timedelta(days=30))
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=False)
    info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
    before = dt.datetime.now(dt.UTC)
    assert info is not None
    # the proposed run is due already (the latest cron time not after now): it would start
    # at once when the DAG is unpaused
    assert info.run_after <= before
    assert before - info.run_after <= dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("run_type", "late", "expected"),
    [
        ("scheduled", dt.timedelta(minutes=5), False),
        ("scheduled", LATE_GRACE, False),
        ("scheduled", LATE_GRACE + dt.timedelta(seconds=1), True),
        ("scheduled", dt.timedelta(days=3), True),
        ("manual", dt.timedelta(days=3), False),
        ("asset_triggered", dt.timedelta(days=3), False),
    ],
)
def test_only_a_late_scheduled_run_is_past_due(
    run_type: str, late: dt.timedelta, expected: bool
) -> None:
    assert past_due(run_type, DUE, DUE + late, LATE_GRACE) is expected


def test_a_run_without_a_due_time_is_never_past_due() -> None:
    assert past_due("scheduled", None, DUE, LATE_GRACE) is False


def test_the_first_task_skips_a_past_due_scheduled_run(dag: Any) -> None:
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowSkipException

    first = dag.get_task("set_logical_date")
    assert first.late_grace == LATE_GRACE
    assert all(
        t.late_grace is None for t in dag.tasks if t is not first and hasattr(t, "late_grace")
    )
    run = SimpleNamespace(run_type="scheduled", run_after=DUE)
    with pytest.raises(AirflowSkipException, match="starts more than 1:00:00 late"):
        first.execute({"params": dict(dag.params.validate()), "dag_run": run})


# --- recsys_rollback -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rollback_dag(dagbag: Any) -> Any:
    assert not dagbag.import_errors, dagbag.import_errors
    return dagbag.dags["recsys_rollback"]


def _form(dag: Any, **values: Any) -> dict[str, Any]:
    form = copy.deepcopy(dag.params)
    form.update(values)
    return dict(form.validate())


def test_rollback_is_manual_only(rollback_dag: Any) -> None:
    assert type(rollback_dag.timetable).__name__ == "NullTimetable"  # schedule=None
    assert rollback_dag.catchup is False
    (task,) = rollback_dag.tasks
    assert task.task_id == "rollback"
    assert task.retries == 0


def test_rollback_form_defaults_and_a_good_form(rollback_dag: Any, params: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="param reason"):
        _form(rollback_dag)  # a reason is required
    form = _form(rollback_dag, reason="canary alert at 03:00")
    assert form == {
        "cloud": "private",
        "alias": params.registry.promote_alias,
        "version": "previous",
        "reason": "canary alert at 03:00",
    }
    assert _form(rollback_dag, reason="why", version="0123456789abcdef")["version"] == (
        "0123456789abcdef"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cloud", "edge"),
        ("alias", "Production"),
        ("alias", "prod; rm -rf /"),
        ("version", "last"),
        ("version", "0123456789ABCDEF"),
        ("reason", "x"),
    ],
)
def test_rollback_form_refuses_a_wrong_value_naming_the_field(
    rollback_dag: Any, field: str, value: str
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    values = {"reason": "a good reason", field: value}
    with pytest.raises(ParamValidationError, match=f"param {field}"):
        _form(rollback_dag, **values)


def _rollback_run(task: Any, project: Path, version: str) -> subprocess.CompletedProcess[str]:
    """The task's script with its form rendered, against a registry command that echoes."""
    fake_bin = project / "bin"
    fake_bin.mkdir(exist_ok=True)
    env = {
        **os.environ,
        CLOUD_ENV: "public",
        ALIAS_ENV: "production",
        VERSION_ENV: version,
        REASON_ENV: "canary alert (by ada)",
    }
    # the script's own interpreter line comes first; show what it would run instead
    script = task.bash_command.replace("python -m pipelines.commands.registry", "echo registry")
    return subprocess.run(
        ["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            "previous",
            "registry --params params.yaml rollback --alias production --cloud public "
            "--reason canary alert (by ada)",
        ),
        (
            "0123456789abcdef",
            "registry --params params.yaml promote 0123456789abcdef --alias production "
            "--cloud public --reason canary alert (by ada)",
        ),
    ],
)
def test_rollback_runs_the_registry_command_the_form_asks_for(
    rollback_dag: Any, tmp_path: Path, version: str, expected: str
) -> None:
    (task,) = rollback_dag.tasks
    assert "{{" not in task.bash_command  # the form reaches the shell as variables only
    result = _rollback_run(task, tmp_path, version)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_rollback_takes_the_form_from_rendered_variables(rollback_dag: Any) -> None:
    from types import SimpleNamespace

    (task,) = rollback_dag.tasks
    env = rollback_dag.get_template_env()
    context = {
        "params": {"cloud": "public", "alias": "production", "version": "previous", "reason": "r"},
        "dag_run": SimpleNamespace(triggering_user_name="ada"),
    }
    rendered = {k: env.from_string(v).render(**context) for k, v in task.env.items()}
    assert rendered[CLOUD_ENV] == "public"
    assert rendered[VERSION_ENV] == "previous"
    assert rendered[REASON_ENV] == "r (by ada)"


# --- the failure alert -----------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook/s3cr3t", received
    finally:
        server.shutdown()
        thread.join()


def _failed_context() -> dict[str, Any]:
    from types import SimpleNamespace

    ti = SimpleNamespace(
        dag_id="recsys_retrain", run_id="manual__2026-12-02", task_id="train", try_number=3
    )
    return {"task_instance": ti, "exception": RuntimeError("CUDA out of memory")}


def test_failure_alert_logs_and_posts_the_failure(
    webhook: tuple[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, received = webhook
    with caplog.at_level("ERROR", logger="recflow.alerts"):
        FailureAlert(url, 5.0).notify(_failed_context())
    summary = (
        "recflow: recsys_retrain.train failed in run manual__2026-12-02 (try 3): "
        "RuntimeError: CUDA out of memory"
    )
    assert summary in caplog.text
    assert received == [failure_payload(_failed_context())]
    assert received[0]["kind"] == "task_failed" and received[0]["summary"] == summary


def test_a_failing_webhook_is_logged_without_its_secret(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="recflow.alerts"):
        FailureAlert("http://127.0.0.1:9/hook/s3cr3t", 2.0).notify(_failed_context())
    assert "the failure alert's webhook at 127.0.0.1 failed" in caplog.text
    assert "s3cr3t" not in caplog.text
