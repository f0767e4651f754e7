"""The local task script: runs and records, skips when current, fails on errors."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from recflow_airflow.execution import task_env
from recflow_airflow.scripts import interpreter_line, stage_script

from pipelines.core.params import load_params
from pipelines.stages.table import FORCE_ENV, LOGICAL_DATE_ENV, StageSpec, stage_command

# a harmless stage: it rewrites the date in its own output file, a copy of params.yaml
STAMP = StageSpec(
    "set_logical_date", "", ("--params", "out.yaml", "--set-logical-date", "2031-01-01")
)


@pytest.fixture
def dvc_project(tmp_path: Path, project_root: Path, params: Any) -> Path:
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    shutil.copy(project_root / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(project_root / "params.yaml", tmp_path / "out.yaml")
    pipeline = {
        "stages": {"set_logical_date": {"cmd": stage_command(STAMP, params), "outs": ["out.yaml"]}}
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    return tmp_path


def _run(script: str, cwd: Path, **more: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **task_env(), **more}
    env.pop(LOGICAL_DATE_ENV)  # an Airflow template; these stages do not read it
    # the interpreter first on PATH, as a local task's first line puts it
    script = f"{interpreter_line()}\n{script}"
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_changed_stage_runs_and_is_recorded_then_skipped(dvc_project: Path, params: Any) -> None:
    first = _run(stage_script(STAMP, params), dvc_project)
    assert first.returncode == 0, first.stderr
    assert "set_logical_date changed:" in first.stdout
    assert load_params(dvc_project / "out.yaml").run.logical_date.isoformat() == "2031-01-01"
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text(encoding="utf-8"))
    assert lock["stages"]["set_logical_date"]["cmd"] == stage_command(STAMP, params)

    second = _run(stage_script(STAMP, params), dvc_project)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "set_logical_date is up to date"


def test_dvc_error_fails_without_running_the_stage(dvc_project: Path, params: Any) -> None:
    (dvc_project / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    before = (dvc_project / "out.yaml").read_bytes()
    result = _run(stage_script(STAMP, params), dvc_project)
    assert result.returncode != 0
    assert "'set_logical_date' does not exist" in result.stderr
    assert (dvc_project / "out.yaml").read_bytes() == before


def test_a_forced_stage_runs_although_up_to_date(dvc_project: Path, params: Any) -> None:
    """The form's force_retrain: a forceable stage skips DVC's check and is recorded again."""
    forceable = dataclasses.replace(STAMP, forceable=True)
    first = _run(stage_script(forceable, params), dvc_project)
    assert first.returncode == 0, first.stderr
    current = _run(stage_script(forceable, params), dvc_project, **{FORCE_ENV: "false"})
    assert current.stdout.strip() == "set_logical_date is up to date"
    forced = _run(stage_script(forceable, params), dvc_project, **{FORCE_ENV: "true"})
    assert forced.returncode == 0, forced.stderr
    assert "forced by the run's form: DVC's up-to-date check is skipped" in forced.stdout
    assert "up to date" not in forced.stdout.replace("up-to-date", "")
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text(encoding="utf-8"))
    assert lock["stages"]["set_logical_date"]["cmd"] == stage_command(STAMP, params)


def test_the_interpreter_line_puts_this_interpreter_first(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", f"{interpreter_line()}\ncommand -v python"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == Path(sys.executable).parent
