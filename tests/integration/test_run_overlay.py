"""A run's form reaches DVC through the run overlay: ``dvc.lock`` records it, reruns are no-ops.

On a copy of the project whose ``params.yaml`` asks for the ``default`` preset, the first task
writes a form (another date, the ``tiny`` preset); ``dvc repro`` of generate and ingest runs with
the form's values, records them under ``params.run.yaml`` in ``dvc.lock``, and DVC then finds
both stages up to date. A later form without those values is a change DVC sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.core.params import load_params
from pipelines.core.params.loading import write_overlay
from tests.integration.project import TINY_OVERRIDES, copy_project, dvc, project_env

pytestmark = pytest.mark.slow

DATE = "2026-11-20"
UP_TO_DATE = "Data and pipelines are up to date."


def _first_task(root: Path, form: dict[str, object]) -> None:
    # the DAG run's date differs from the form's: the form's wins
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.stages.set_logical_date",
            "--params",
            "params.yaml",
            "--form",
            json.dumps(form),
        ],
        cwd=root,
        env={**project_env(), "RECFLOW_LOGICAL_DATE": "2026-11-22"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = {**TINY_OVERRIDES, "generate": {"preset": "default", "days": 35}}
    root = copy_project(tmp_path_factory.mktemp("overlay") / "project", overrides)
    write_overlay(root / "params.yaml", {})  # the copy starts from params.yaml alone
    _first_task(root, {"data_date": DATE, "source": "tiny", "epochs": 1, "skip_deploy": True})
    dvc(root, "repro", "ingest")
    return root


def test_the_stages_ran_with_the_forms_values(project: Path) -> None:
    params = load_params(project / "params.yaml")
    assert (str(params.run.logical_date), params.generate.preset) == (DATE, "tiny")
    assert load_params(project / "params.yaml", overlay=False).generate.preset == "default"
    assert (project / "data" / "raw" / "events" / DATE / "events.parquet").is_file()


def test_dvc_lock_records_the_overlay(project: Path) -> None:
    stages = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    assert stages["generate"]["params"]["params.run.yaml"] == {
        "run.logical_date": DATE,
        "generate.preset": "tiny",
    }
    assert stages["ingest"]["params"]["params.run.yaml"] == {
        "run.logical_date": DATE,
        "ingest.source": None,
        "ingest.path": None,
    }
    # params.yaml's own values are recorded beside them, unchanged
    assert stages["generate"]["params"]["params.yaml"]["generate"]["preset"] == "default"


def test_after_the_run_dvc_finds_nothing_to_do(project: Path) -> None:
    for _ in range(2):
        status = dvc(project, "status", "generate", "ingest")
        assert UP_TO_DATE in status.stdout, status.stdout
    rerun = dvc(project, "repro", "ingest")
    assert "Running stage" not in rerun.stdout, rerun.stdout


def test_a_later_form_without_the_values_is_a_change(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "project"
    subprocess.run(["cp", "-a", str(project), str(root)], check=True)
    _first_task(root, {"data_date": DATE})  # no source: params.yaml's preset again

    assert load_params(root / "params.yaml").generate.preset == "default"
    status = dvc(root, "status", "--json", "generate")
    changed = json.loads(status.stdout)
    assert "generate" in changed, status.stdout
    assert "params.run.yaml" in json.dumps(changed["generate"]), status.stdout
