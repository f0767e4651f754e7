"""The local task script: runs and records, skips when current, fails on errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from recflow_airflow.execution import stage_script, task_env
from recflow_airflow.stages import LOGICAL_DATE_ENV, StageSpec, stage_command

from pipelines.config import load_params

# a harmless stage: it rewrites the date in its own output file, a copy of params.yaml
STAMP = StageSpec(
    "stamp", "run_params", ("--params", "out.yaml", "--set-logical-date", "2031-01-01")
)
MISSING = StageSpec(
    "nosuch", "run_params", ("--params", "out.yaml", "--set-logical-date", "2032-01-01")
)


@pytest.fixture
def dvc_project(tmp_path: Path, project_root: Path, params: Any) -> Path:
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    shutil.copy(project_root / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(project_root / "params.yaml", tmp_path / "out.yaml")
    pipeline = {"stages": {"stamp": {"cmd": stage_command(STAMP, params), "outs": ["out.yaml"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    return tmp_path


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **task_env()}
    env.pop(LOGICAL_DATE_ENV)  # an Airflow template; these stages do not read it
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_changed_stage_runs_and_is_recorded_then_skipped(dvc_project: Path, params: Any) -> None:
    first = _run(stage_script(STAMP, params), dvc_project)
    assert first.returncode == 0, first.stderr
    assert "stamp changed:" in first.stdout
    assert load_params(dvc_project / "out.yaml").run.logical_date.isoformat() == "2031-01-01"
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text(encoding="utf-8"))
    assert lock["stages"]["stamp"]["cmd"] == stage_command(STAMP, params)

    second = _run(stage_script(STAMP, params), dvc_project)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "stamp is up to date"


def test_dvc_error_fails_without_running_the_stage(dvc_project: Path, params: Any) -> None:
    before = (dvc_project / "out.yaml").read_bytes()
    result = _run(stage_script(MISSING, params), dvc_project)
    assert result.returncode != 0
    assert "'nosuch' does not exist" in result.stderr
    assert (dvc_project / "out.yaml").read_bytes() == before
