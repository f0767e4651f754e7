"""DAG integrity and policy: it parses, takes its settings from params.yaml, imports light."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from recflow_airflow.project import PROJECT_ROOT_ENV, project_root
from recflow_airflow.scripts import LOGICAL_DATE_TEMPLATE

from pipelines.stages.table import LOGICAL_DATE_ENV, STAGES, TRIGGER_ENV

DAG_ID = "recsys_retrain"
DAG_FILES = ("recsys_retrain.py", "recsys_drift_monitor.py")
EXPECTED_TASKS = [
    "set_logical_date",
    "pin_production",
    "generate",
    "ingest",
    "validate",
    "prepare",
    "train",
    "optimize",
    "reference",
    "evaluate",
    "register",
    "deploy",
    "monitor",
]
HEAVY = ("torch", "pandas", "numpy", "pyarrow", "great_expectations", "evidently")


def test_dag_folder_parses_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == ["recsys_drift_monitor", DAG_ID]


def test_tasks_and_edges_follow_the_stage_table(dag: Any) -> None:
    assert [t.task_id for t in dag.topological_sort()] == EXPECTED_TASKS
    for spec in STAGES:
        assert set(dag.get_task(spec.name).upstream_task_ids) == set(spec.upstream), spec.name
    dag.check_cycle()  # raises on a cycle


def test_dag_settings_come_from_params(dag: Any, params: Any) -> None:
    airflow = params.airflow
    # its cron, or the drift asset (tests/dags/test_drift_monitor.py)
    assert dag.timetable.timetable.expression == airflow.schedule
    assert dag.start_date.date() == airflow.start_date
    assert dag.start_date.utcoffset() == dt.timedelta(0)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert set(dag.tags) == set(airflow.tags)
    assert dag.doc_md and "recsys_retrain" in dag.doc_md
    assert dag.description


def test_every_task_retries_with_backoff_and_a_timeout(dag: Any, params: Any) -> None:
    airflow = params.airflow
    for task in dag.tasks:
        if task.task_id in ("validate", "evaluate", "deploy"):
            # a rejected batch, a blocked or a rolled-back candidate is judged the same on
            # retry: fail at once (a deploy rerun by hand resumes an interrupted rollout)
            assert task.retries == 0
        else:
            assert task.retries >= 1, task.task_id
            assert task.retries == airflow.retries
        assert task.retry_delay == dt.timedelta(minutes=airflow.retry_delay_minutes)
        assert task.retry_exponential_backoff > 0, task.task_id
        assert task.retry_exponential_backoff == airflow.retry_exponential_backoff
        assert task.max_retry_delay == dt.timedelta(minutes=airflow.max_retry_delay_minutes)
        assert task.execution_timeout == dt.timedelta(minutes=airflow.execution_timeout_minutes)


def test_local_tasks_run_in_the_project_with_airflows_interpreter(
    dag: Any, project_root: Path
) -> None:
    bin_dir = os.path.dirname(sys.executable)
    for task in dag.tasks:
        assert type(task).__name__ == "BashOperator"
        assert Path(task.cwd) == project_root
        assert task.append_env is True
        assert task.env["PATH"].split(os.pathsep)[0] == bin_dir
        assert task.env[LOGICAL_DATE_ENV] == LOGICAL_DATE_TEMPLATE
        # a stage exiting 99 must fail the task, not skip it
        assert not task.skip_on_exit_code


def test_set_logical_date_takes_the_date_from_the_environment(dag: Any) -> None:
    script = dag.get_task("set_logical_date").bash_command
    expected = (
        "python -m pipelines.stages.set_logical_date --params params.yaml "
        f'--set-logical-date "${LOGICAL_DATE_ENV}"'
    )
    assert expected in script.splitlines()
    assert "{{" not in script


def test_register_takes_the_trigger_from_the_environment(dag: Any) -> None:
    # the reason of the asset events that started the run reaches the lineage through the
    # shell's expansion of the variable, never pasted into the command text
    script = dag.get_task("register").bash_command
    (line,) = [line for line in script.splitlines() if "-m pipelines.stages.register" in line]
    assert line.endswith(f'--trigger "${TRIGGER_ENV}"')
    assert "{{" not in script


def _render(dag: Any, logical_date: Any, run_after: Any, override: Any) -> str:
    env = dag.get_template_env()
    context = {
        "params": {"logical_date": override},
        "dag_run": SimpleNamespace(logical_date=logical_date, run_after=run_after),
    }
    return env.from_string(LOGICAL_DATE_TEMPLATE).render(**context)


@pytest.mark.parametrize(
    ("logical_date", "run_after", "override", "expected"),
    [
        (
            dt.datetime(2026, 3, 4, 2, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 5, tzinfo=dt.UTC),
            None,
            "2026-03-04",
        ),
        (None, dt.datetime(2026, 3, 5, 13, 30, tzinfo=dt.UTC), None, "2026-03-05"),
        (
            dt.datetime(2026, 3, 4, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 5, tzinfo=dt.UTC),
            "2025-12-31",
            "2025-12-31",
        ),
        (None, dt.datetime(2026, 3, 5, tzinfo=dt.UTC), "2025-12-31", "2025-12-31"),
    ],
    ids=["scheduled", "manual-without-logical-date", "form-override", "form-override-manual"],
)
def test_run_date_template(
    dag: Any, logical_date: Any, run_after: Any, override: Any, expected: str
) -> None:
    assert _render(dag, logical_date, run_after, override) == expected


def test_trigger_form_accepts_an_optional_date_only(dag: Any) -> None:
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    declared = dag.params.get_param("logical_date")
    assert declared.value is None
    form = Param(None, **declared.schema)
    assert form.resolve(None) is None
    assert form.resolve("2026-02-28") == "2026-02-28"
    with pytest.raises(ParamValidationError, match="date"):
        form.resolve("2026-02-30")
    with pytest.raises(ParamValidationError, match="date"):
        form.resolve("yesterday")


def test_project_root_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dags = tmp_path / "repo" / "dags"
    monkeypatch.delenv(PROJECT_ROOT_ENV, raising=False)
    assert project_root(dags) == (tmp_path / "repo").resolve()
    monkeypatch.setenv(PROJECT_ROOT_ENV, str(tmp_path / "elsewhere"))
    assert project_root(dags) == (tmp_path / "elsewhere").resolve()


_IMPORT_PROBE = """
import importlib.util, json, sys
heavy = {heavy!r}
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in heavy)
import airflow.sdk  # noqa: F401
from airflow.sdk import DAG  # noqa: F401
before = loaded()
spec = importlib.util.spec_from_file_location("recsys_retrain_probe", {dag_file!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({{"before": before, "after": loaded()}}))
"""


def _heavy_modules_added(dag_file: Path, home: Path) -> list[str]:
    """Heavy modules that importing ``dag_file`` loads beyond what ``airflow.sdk`` loads."""
    env = {k: v for k, v in os.environ.items() if k != PROJECT_ROOT_ENV}
    env["AIRFLOW_HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(heavy=HEAVY, dag_file=str(dag_file))],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    return sorted(set(modules["after"]) - set(modules["before"]))


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_dag_file_adds_no_heavy_imports(dag_file: str, project_root: Path, tmp_path: Path) -> None:
    added = _heavy_modules_added(project_root / "dags" / dag_file, tmp_path)
    assert added == [], f"importing the DAG file loads heavy modules: {added}"


def test_heavy_import_probe_catches_a_heavy_dag(tmp_path: Path) -> None:
    heavy_dag = tmp_path / "heavy_dag.py"
    heavy_dag.write_text("import numpy\n")
    assert "numpy" in _heavy_modules_added(heavy_dag, tmp_path)
