"""DAG integrity and policy: it parses, takes its settings from params.yaml, imports light."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from recflow_airflow.project import OWNER, PROJECT_ROOT_ENV, project_root
from recflow_airflow.scripts import LOGICAL_DATE_TEMPLATE, RUN_FORM_TEMPLATE, interpreter_line

from pipelines.stages.table import (
    LOGICAL_DATE_ENV,
    RUN_FORM_ENV,
    TRIGGER_ENV,
    chain_task_ids,
    chain_upstream,
)

DAG_ID = "recsys_retrain"
DAG_IDS = ["recsys_drift_monitor", "recsys_retrain", "recsys_rollback"]
DAG_FILES = ("recsys_retrain.py", "recsys_drift_monitor.py", "recsys_rollback.py")
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
    "deploy_private",
    "approve_public",
    "deploy_public",
    "monitor",
]
# a failure that is a verdict (or a person's decision) is not retried
NO_RETRIES = ("validate", "evaluate", "deploy_private", "approve_public", "deploy_public")
HEAVY = ("torch", "pandas", "numpy", "pyarrow", "great_expectations", "evidently")


def test_dag_folder_parses_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == DAG_IDS


def test_tasks_and_edges_follow_the_stage_table(dag: Any, params: Any) -> None:
    assert list(chain_task_ids(params)) == EXPECTED_TASKS
    assert [t.task_id for t in dag.topological_sort()] == EXPECTED_TASKS
    for task_id, upstream in chain_upstream(params).items():
        assert set(dag.get_task(task_id).upstream_task_ids) == set(upstream), task_id
    dag.check_cycle()  # raises on a cycle


def test_every_dag_has_owner_tags_docs_and_a_failure_alert(dagbag: Any, params: Any) -> None:
    from recflow_airflow.alerts import FailureAlert

    for dag_id in DAG_IDS:
        dag = dagbag.dags[dag_id]
        assert set(params.airflow.tags) <= set(dag.tags), dag_id
        assert dag.doc_md and f"### {dag_id}" in dag.doc_md, dag_id
        assert dag.owner == OWNER
        for task in dag.tasks:
            assert task.owner == OWNER
            callbacks = task.on_failure_callback
            assert [type(c) for c in callbacks] == [FailureAlert], (dag_id, task.task_id)


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
        if task.task_id in NO_RETRIES:
            # a rejected batch, a blocked or a rolled-back candidate is judged the same on
            # retry: fail at once (a deploy rerun by hand resumes an interrupted rollout); a
            # person's decision is not asked again
            assert task.retries == 0
        else:
            assert task.retries >= 1, task.task_id
            assert task.retries == airflow.retries
        assert task.retry_delay == dt.timedelta(minutes=airflow.retry_delay_minutes)
        assert task.retry_exponential_backoff > 0, task.task_id
        assert task.retry_exponential_backoff == airflow.retry_exponential_backoff
        assert task.max_retry_delay == dt.timedelta(minutes=airflow.max_retry_delay_minutes)
        assert task.execution_timeout == dt.timedelta(minutes=airflow.execution_timeout_minutes)


def test_stage_tasks_run_in_the_project_with_airflows_interpreter(
    dag: Any, project_root: Path
) -> None:
    from recflow_airflow.operators import StageOperator

    bin_dir = os.path.dirname(sys.executable)
    stage_tasks = [t for t in dag.tasks if not t.task_id.startswith("approve_")]
    for task in stage_tasks:
        assert isinstance(task, StageOperator), task.task_id
        assert Path(task.cwd) == project_root
        assert task.append_env is True
        # the interpreter comes first on PATH when the script runs, not from the parse
        assert "PATH" not in task.env
        assert task.bash_command.splitlines()[0] == interpreter_line()
        assert bin_dir in interpreter_line()
        assert task.env[LOGICAL_DATE_ENV] == LOGICAL_DATE_TEMPLATE
        # a stage exiting 99 must fail the task, not skip it
        assert not task.skip_on_exit_code


def test_set_logical_date_takes_the_form_from_the_environment(dag: Any) -> None:
    task = dag.get_task("set_logical_date")
    expected = (
        f'python -m pipelines.stages.set_logical_date --params params.yaml --form "${RUN_FORM_ENV}"'
    )
    assert expected in task.bash_command.splitlines()
    assert "{{" not in task.bash_command
    assert task.env[RUN_FORM_ENV] == RUN_FORM_TEMPLATE
    # only the first task reads the form
    assert [t.task_id for t in dag.tasks if RUN_FORM_ENV in (getattr(t, "env", None) or {})] == [
        "set_logical_date"
    ]


def test_register_takes_the_trigger_from_the_environment(dag: Any) -> None:
    # the reason of the asset events that started the run reaches the lineage through the
    # shell's expansion of the variable, never pasted into the command text
    script = dag.get_task("register").bash_command
    (line,) = [line for line in script.splitlines() if "-m pipelines.stages.register" in line]
    assert line.endswith(f'--trigger "${TRIGGER_ENV}"')
    assert "{{" not in script


def _render(dag: Any, template: str, **context: Any) -> str:
    return str(dag.get_template_env().from_string(template).render(**context))


def _run(logical_date: Any, run_after: Any, conf: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(logical_date=logical_date, run_after=run_after, conf=conf or {})


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (
            _run(dt.datetime(2026, 3, 4, 2, tzinfo=dt.UTC), dt.datetime(2026, 3, 5, tzinfo=dt.UTC)),
            "2026-03-04",
        ),
        (_run(None, dt.datetime(2026, 3, 5, 13, 30, tzinfo=dt.UTC)), "2026-03-05"),
        # a logical date picked in another time zone is the day in UTC
        (
            _run(
                dt.datetime(2026, 3, 4, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2))),
                dt.datetime(2026, 3, 6, tzinfo=dt.UTC),
            ),
            "2026-03-05",
        ),
        (
            _run(
                dt.datetime(2026, 3, 4, tzinfo=dt.UTC),
                dt.datetime(2026, 3, 5, tzinfo=dt.UTC),
                {"data_date": "2025-12-31"},
            ),
            "2025-12-31",
        ),
    ],
    ids=["scheduled", "manual-without-logical-date", "other-time-zone", "conf-data-date"],
)
def test_run_date_template(dag: Any, run: Any, expected: str) -> None:
    assert _render(dag, LOGICAL_DATE_TEMPLATE, dag_run=run) == expected


def test_the_form_reaches_the_first_task_as_json(dag: Any) -> None:
    run = _run(dt.datetime(2026, 3, 4, 2, tzinfo=dt.UTC), dt.datetime(2026, 3, 5, tzinfo=dt.UTC))
    form = dict(dag.params.validate())
    form.update(source="tiny", epochs=3)
    rendered = json.loads(_render(dag, RUN_FORM_TEMPLATE, params=form, dag_run=run))
    assert rendered == {
        "data_date": "2026-03-04",
        "source": "tiny",
        "epochs": 3,
        "nproc_per_node": None,
        "execution": "local",
        "skip_deploy": False,
        "require_approval": False,
        "force_retrain": False,
    }


def test_a_conf_data_date_that_is_not_a_date_fails_naming_the_field(dag: Any) -> None:
    run = _run(None, dt.datetime(2026, 3, 5, tzinfo=dt.UTC), {"data_date": "2026-02-30"})
    with pytest.raises(ValueError, match="data_date: '2026-02-30' is not a date of the calendar"):
        _render(dag, LOGICAL_DATE_TEMPLATE, dag_run=run)
    run = _run(None, dt.datetime(2026, 3, 5, tzinfo=dt.UTC), {"data_date": "yesterday"})
    with pytest.raises(ValueError, match="data_date: 'yesterday' is not a date written"):
        _render(dag, LOGICAL_DATE_TEMPLATE, dag_run=run)


def test_the_form_shows_one_date_airflows_own(dag: Any) -> None:
    """No date field of the project's: the logical date is the data date."""
    for name in dag.params:
        schema = dag.params.get_param(name).schema
        assert schema.get("format") not in ("date", "date-time"), name
    assert "data_date" not in dag.params
    assert sorted(dag.params) == sorted(
        [
            "source",
            "epochs",
            "nproc_per_node",
            "execution",
            "skip_deploy",
            "require_approval",
            "force_retrain",
        ]
    )


def _submitted(dag: Any, field: str, value: Any) -> dict[str, Any]:
    """The form as Airflow checks it on trigger: the DAG's params updated with the conf."""
    form = copy.deepcopy(dag.params)
    form.update({field: value})
    return dict(form.validate())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "tiny"),
        ("source", "data/source/retailrocket"),
        ("epochs", 1),
        ("nproc_per_node", 64),
        ("execution", "kubernetes"),
        ("skip_deploy", True),
        ("require_approval", True),
        ("force_retrain", True),
        ("epochs", None),
    ],
)
def test_the_form_accepts_good_values(dag: Any, field: str, value: Any) -> None:
    assert _submitted(dag, field, value)[field] == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "data; rm -rf /"),
        ("source", ""),
        ("epochs", 0),
        ("epochs", "ten"),
        ("nproc_per_node", 65),
        ("execution", "cloud-run"),
        ("skip_deploy", "yes"),
        ("require_approval", 1),
    ],
)
def test_the_form_refuses_a_wrong_value_naming_the_field(dag: Any, field: str, value: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=f"param {field}"):
        _submitted(dag, field, value)


def test_form_defaults_come_from_params(dag: Any, params: Any) -> None:
    values = dag.params.validate()
    assert values["execution"] == params.execution.backend
    assert values["require_approval"] == params.deploy.require_approval
    assert values["skip_deploy"] is False and values["force_retrain"] is False


def test_form_flags_reach_the_deploy_and_train_tasks(dag: Any) -> None:
    from pipelines.stages.table import APPROVAL_FLAG_ENV, FORCE_ENV

    for cloud in ("private", "public"):
        task = dag.get_task(f"deploy_{cloud}")
        (line,) = [x for x in task.bash_command.splitlines() if "pipelines.stages.deploy" in x]
        assert line.endswith(f'--target {cloud} "${APPROVAL_FLAG_ENV}"')
        assert task.skip_when == "skip_deploy"
        flag = task.env[APPROVAL_FLAG_ENV]
        assert _render(dag, flag, params={"require_approval": True}) == "--require-approval"
        assert _render(dag, flag, params={"require_approval": False}) == "--no-require-approval"
    train = dag.get_task("train")
    assert _render(dag, train.env[FORCE_ENV], params={"force_retrain": True}) == "true"
    assert _render(dag, train.env[FORCE_ENV], params={"force_retrain": False}) == "false"
    assert f'if [ "${{{FORCE_ENV}:-false}}" = "true" ]; then' in train.bash_command


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


_PLUGIN_PROBE = """
import json, sys
from airflow import plugins_manager
errors = plugins_manager.get_import_errors()
try:
    import kubernetes.client
except ImportError as exc:
    errors["import kubernetes.client"] = str(exc)
found = getattr(sys.modules.get("kubernetes"), "__file__", "")
print(json.dumps({"errors": errors, "kubernetes": found}))
"""


def _plugin_manager_probe(plugins: Path, home: Path) -> dict[str, Any]:
    """What Airflow's plugin manager makes of ``plugins``, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != PROJECT_ROOT_ENV}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", _PLUGIN_PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    probe: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return probe


def test_the_plugin_manager_leaves_the_package_alone(project_root: Path, tmp_path: Path) -> None:
    """``plugins/.airflowignore`` keeps Airflow's plugin manager from importing each file of
    ``recflow_airflow`` as a top-level module: ``kubernetes.py`` would stand in for the
    Kubernetes client package, and every Kubernetes operator in that process would break."""
    probe = _plugin_manager_probe(project_root / "plugins", tmp_path)
    assert probe["errors"] == {}
    assert "site-packages" in probe["kubernetes"], probe
    # without the ignore file the clash is real: the probe would catch it
    bare = tmp_path / "bare"
    shutil.copytree(project_root / "plugins", bare, ignore=shutil.ignore_patterns("__pycache__"))
    (bare / ".airflowignore").unlink()
    clashed = _plugin_manager_probe(bare, tmp_path)
    assert clashed["errors"] and clashed["kubernetes"].startswith(str(bare)), clashed
