"""The lineage record is taken from the run: dvc.lock, params, metrics, verdict, git, Airflow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from pipelines.core.params import Params
from pipelines.registry.lineage import actor, collect, git_state
from tests.registry.helpers import make_candidate

LOCK = {
    "schema": "2.0",
    "stages": {
        "ingest": {
            "outs": [{"path": "data/raw/events", "md5": "aaa.dir", "size": 10, "nfiles": 2}]
        },
        "validate": {
            "params": {"params.yaml": {"validate": {"min_rows": 100}}},
            "outs": [{"path": "data/validated", "md5": "bbb.dir", "size": 9, "nfiles": 1}],
        },
        "prepare": {"outs": [{"path": "data/prepared", "md5": "ccc.dir", "size": 8, "nfiles": 3}]},
        "train": {
            "params": {"params.yaml": {"train": {"epochs": 20}}},
            "outs": [{"path": "models/candidate/model.pt", "md5": "ddd", "size": 7}],
        },
    },
}
AIRFLOW = {
    "AIRFLOW_CTX_DAG_ID": "recsys_retrain",
    "AIRFLOW_CTX_DAG_RUN_ID": "scheduled__2026-11-20T02:00:00+00:00",
    "AIRFLOW_CTX_TASK_ID": "register",
    "AIRFLOW_CTX_LOGICAL_DATE": "2026-11-20T02:00:00+00:00",
    "AIRFLOW_CTX_TRY_NUMBER": "1",
}


def test_the_record_of_an_airflow_run(tmp_path: Path) -> None:
    candidate = make_candidate(tmp_path / "candidate")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (tmp_path / "validation.json").write_text(json.dumps({"success": True, "rows": 5000}))
    params = Params.model_validate({"run": {"logical_date": "2026-11-20", "seed": 3}})
    record = collect(
        params, candidate, tmp_path / "dvc.lock", tmp_path / "validation.json", tmp_path, AIRFLOW
    )
    assert record["time"] == "2026-11-20T02:00:00+00:00"  # the run's, not the clock's
    assert record["logical_date"] == "2026-11-20"
    assert record["dvc"]["raw_batch"]["md5"] == "aaa.dir"
    assert record["dvc"]["validated_batch"]["md5"] == "bbb.dir"
    assert record["dvc"]["prepared"]["md5"] == "ccc.dir"
    assert record["dvc"]["model"]["md5"] == "ddd"
    assert record["params"]["train"] == {"train": {"epochs": 20}}
    assert record["params"]["run"] == {"logical_date": "2026-11-20", "seed": 3}
    assert record["validation"] == {"success": True, "rows": 5000}
    assert record["training"]["best_epoch"] == 5 and record["training"]["epochs_run"] == 7
    assert record["gate"] == {"verdict": "pass", "blocked": False, "bootstrap": True}
    assert record["airflow"]["dag_id"] == "recsys_retrain"
    assert record["airflow"]["run_id"] == AIRFLOW["AIRFLOW_CTX_DAG_RUN_ID"]
    assert record["git"] == {"commit": None, "dirty": None}  # not a git repository
    assert actor(AIRFLOW) == f"airflow:recsys_retrain/{AIRFLOW['AIRFLOW_CTX_DAG_RUN_ID']}"


def test_by_hand_the_time_is_the_logical_date(tmp_path: Path) -> None:
    candidate = make_candidate(tmp_path / "candidate")
    params = Params.model_validate({"run": {"logical_date": "2026-11-21"}})
    record = collect(params, candidate, tmp_path / "missing.lock", None, tmp_path, {})
    assert record["time"] == "2026-11-21" and record["airflow"] is None
    assert record["dvc"] == {} and record["validation"] is None
    assert actor({"RECFLOW_ACTOR": "alice"}) == "alice"


def test_the_git_commit(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-qm", "a")
    assert git_state(tmp_path) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.txt").write_text("b")
    assert git_state(tmp_path)["dirty"] is True
