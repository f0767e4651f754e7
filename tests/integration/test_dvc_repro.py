"""``dvc repro`` from a fresh copy runs the chain, reruns as a no-op, and round-trips the remote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.core.io import sha256_file
from tests.integration.project import copy_project, dvc

pytestmark = pytest.mark.slow

STAGES = ("generate", "ingest", "validate", "prepare", "train", "optimize", "reference", "evaluate")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("dvc") / "project")
    result = dvc(root, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout, result.stdout
    return root


def test_repro_records_every_stage(reproduced: Path) -> None:
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    batch = reproduced / "data" / "raw" / "events" / str(params["run"]["logical_date"])
    assert (batch / "events.parquet").is_file()
    assert (reproduced / "data" / "validated" / "events.parquet").is_file()
    assert (reproduced / "data" / "prepared" / "reference.json").is_file()
    metrics = json.loads((reproduced / "metrics" / "validation.json").read_text())
    assert metrics["success"] is True


def test_second_repro_is_a_noop(reproduced: Path) -> None:
    before = (reproduced / "dvc.lock").read_bytes()
    result = dvc(reproduced, "repro")
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout
    assert (reproduced / "dvc.lock").read_bytes() == before
    assert dvc(reproduced, "status", "--quiet", check=False).returncode == 0


def test_param_change_reruns_only_downstream(reproduced: Path, tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(reproduced, root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare"]["max_sequence_length"] = 50
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(root, "repro")
    assert "Running stage 'prepare'" in result.stdout
    for stage in ("generate", "ingest", "validate"):
        assert f"Running stage '{stage}'" not in result.stdout


def test_push_and_pull_restore_outputs_byte_for_byte(reproduced: Path, tmp_path: Path) -> None:
    # on a copy: emptying the cache would break every later test of the shared project
    root = tmp_path / "project"
    shutil.copytree(reproduced, root, symlinks=True)
    dvc(root, "push")
    prepared = root / "data" / "prepared"
    digests = {p.name: sha256_file(p) for p in sorted(prepared.iterdir()) if p.is_file()}
    shutil.rmtree(prepared)
    shutil.rmtree(root / ".dvc" / "cache")
    dvc(root, "pull", "prepare")
    assert {p.name: sha256_file(p) for p in sorted(prepared.iterdir()) if p.is_file()} == digests
