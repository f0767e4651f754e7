"""The DAG runs exactly what dvc.yaml declares: stages, commands and edges, as DVC resolves them."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from recflow_airflow.parity import parity_problems, read_dvc_stages


@pytest.fixture(scope="module")
def project_stages(project_root: Path) -> Any:
    return read_dvc_stages(project_root)


def _dvc_copy(project_root: Path, tmp_path: Path, edit: Any) -> Path:
    """A scratch DVC project with the project's params.yaml and an edited copy of dvc.yaml."""
    from dvc.repo import Repo

    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(project_root / "params.yaml", root / "params.yaml")
    pipeline = yaml.safe_load((project_root / "dvc.yaml").read_text(encoding="utf-8"))
    edit(pipeline["stages"])
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False), encoding="utf-8")
    Repo.init(str(root), no_scm=True).close()
    return root


def test_dag_matches_dvc_yaml(project_stages: Any, dag: Any, params: Any) -> None:
    assert parity_problems(project_stages, dag, params) == []


def test_dvc_sees_the_expected_chain(project_stages: Any) -> None:
    # guards the comparison itself: DVC must have resolved templating and the graph
    assert set(project_stages) == {
        "generate",
        "ingest",
        "validate",
        "prepare",
        "train",
        "optimize",
        "reference",
        "evaluate",
    }
    assert "${" not in project_stages["ingest"].cmd
    assert project_stages["prepare"].upstream == {"validate"}
    assert project_stages["generate"].upstream == set()
    assert project_stages["reference"].upstream == {"optimize", "prepare"}


def _drift_command(stages: dict[str, Any]) -> None:
    stages["prepare"]["cmd"] = stages["prepare"]["cmd"].replace("data/prepared", "data/prepared_v2")


def _drift_template(stages: dict[str, Any]) -> None:
    # DVC resolves the value; the DAG's command has no such argument
    stages["ingest"]["cmd"] += " --source ${ingest.path}"


def _drop_edge(stages: dict[str, Any]) -> None:
    stages["prepare"]["deps"] = [d for d in stages["prepare"]["deps"] if d != "data/validated"]


def _add_edge(stages: dict[str, Any]) -> None:
    stages["prepare"]["deps"].append("data/raw/events")


def _add_stage(stages: dict[str, Any]) -> None:
    stages["serve"] = {"cmd": "python -m pipelines.stages.serve", "deps": ["models/candidate"]}


def _drop_stage(stages: dict[str, Any]) -> None:
    del stages["generate"]
    stages["ingest"]["deps"] = [d for d in stages["ingest"]["deps"] if "synthetic" not in d]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_drift_command, "stage 'prepare': command differs"),
        (_drift_template, "stage 'ingest': command differs"),
        (_drop_edge, "edge validate >> prepare is in the DAG but not in dvc.yaml"),
        (_add_edge, "edge ingest >> prepare is in dvc.yaml but not in the DAG"),
        (_add_stage, "stage 'serve' is in dvc.yaml but not in the stage table"),
        (_drop_stage, "stage 'generate' is in the stage table but not in dvc.yaml"),
    ],
    ids=[
        "command",
        "templated-value",
        "dropped-edge",
        "added-edge",
        "added-stage",
        "dropped-stage",
    ],
)
def test_drift_is_reported(
    edit: Any, expected: str, project_root: Path, tmp_path: Path, dag: Any, params: Any
) -> None:
    drifted = read_dvc_stages(_dvc_copy(project_root, tmp_path, edit))
    problems = parity_problems(drifted, dag, params)
    assert any(p.startswith(expected) for p in problems), problems


def test_unmodified_copy_has_no_drift(
    project_root: Path, tmp_path: Path, dag: Any, params: Any
) -> None:
    # the scratch-copy route itself reports nothing when nothing changed
    copy = read_dvc_stages(_dvc_copy(project_root, tmp_path, lambda stages: None))
    assert parity_problems(copy, dag, params) == []


def test_task_running_another_command_is_reported(
    project_stages: Any, dag: Any, params: Any
) -> None:
    # a task whose script no longer runs the table's command, e.g. edited by hand
    # tasks that run no script (an approval) stay as they are
    tasks = [
        SimpleNamespace(
            task_id=t.task_id,
            upstream_task_ids=set(t.upstream_task_ids),
            bash_command=t.bash_command.replace("--metrics metrics/prepare.json", ""),
        )
        if hasattr(t, "bash_command")
        else t
        for t in dag.tasks
    ]
    edited = SimpleNamespace(dag_id=dag.dag_id, tasks=tasks)
    problems = parity_problems(project_stages, edited, params)
    assert problems == [
        "task 'prepare' does not run its stage command "
        "'python -m pipelines.stages.prepare --params params.yaml --validated data/validated "
        "--out data/prepared --metrics metrics/prepare.json'"
    ]
