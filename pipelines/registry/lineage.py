"""Lineage: one record per version of where it came from, taken from the run's own records.

The git commit, the ``dvc.lock`` hashes of the raw batch, validated batch, prepared data and
model, the params each stage ran with (as ``dvc.lock`` recorded them), the validation result,
the training run, the gate's verdict, the Airflow dag and run when there is one, and the time,
which is the run's (Airflow's logical date, else ``run.logical_date``), never the clock's.
"""

from __future__ import annotations

import getpass
import json
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.params import Params

log = logging.getLogger("recflow.registry.lineage")

# dvc.lock outputs that identify the data and the model a version was made from
LOCKED_OUTPUTS = {
    "raw_batch": ("ingest", "data/raw/events"),
    "validated_batch": ("validate", "data/validated"),
    "prepared": ("prepare", "data/prepared"),
    "model": ("train", "models/candidate/model.pt"),
}
FORMAT = 1


def airflow_run(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The Airflow dag, run and logical date of the task, from the ``AIRFLOW_CTX_*`` variables
    every Airflow task gets; None outside Airflow."""
    dag_id = environ.get("AIRFLOW_CTX_DAG_ID")
    if not dag_id:
        return None
    return {
        "dag_id": dag_id,
        "run_id": environ.get("AIRFLOW_CTX_DAG_RUN_ID", ""),
        "task_id": environ.get("AIRFLOW_CTX_TASK_ID", ""),
        "logical_date": environ.get("AIRFLOW_CTX_LOGICAL_DATE", ""),
        "try_number": environ.get("AIRFLOW_CTX_TRY_NUMBER", ""),
    }


def git_state(root: Path) -> dict[str, Any]:
    """The commit checked out at ``root`` and whether the tree has changes (None: not known)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip()

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit or None, "dirty": None if status is None else bool(status)}


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is not readable JSON (%s): left out of the lineage", path, exc)
        return None
    return document if isinstance(document, dict) else None


def dvc_record(lock: Path) -> dict[str, Any]:
    """The hashes of the data and model outputs and each stage's params, from ``dvc.lock``."""
    try:
        document = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("%s is not readable (%s): no DVC hashes in the lineage", lock, exc)
        return {"outputs": {}, "params": {}}
    stages = document.get("stages") if isinstance(document, dict) else None
    stages = stages if isinstance(stages, dict) else {}
    outputs: dict[str, Any] = {}
    for name, (stage, path) in LOCKED_OUTPUTS.items():
        for out in (stages.get(stage) or {}).get("outs") or []:
            if isinstance(out, dict) and out.get("path") == path:
                outputs[name] = {
                    "path": path,
                    "md5": out.get("md5"),
                    "size": out.get("size"),
                    "nfiles": out.get("nfiles"),
                }
    params = {
        stage: (record.get("params") or {}).get("params.yaml", {})
        for stage, record in stages.items()
        if isinstance(record, dict)
    }
    return {"outputs": outputs, "params": params}


def _training(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    keys = ("epochs_run", "best_epoch", "stopped_early", "best_valid", "test")
    return {key: metrics.get(key) for key in keys}


def run_time(params: Params, run: dict[str, str] | None) -> str:
    """The run's time: Airflow's logical date when there is one, else ``run.logical_date``."""
    if run and run.get("logical_date"):
        return run["logical_date"]
    return params.run.logical_date.isoformat()


def collect(
    params: Params,
    candidate: Path,
    lock: Path,
    validation: Path | None,
    root: Path,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The lineage record of the version ``candidate`` would make.

    Args:
        params: The run's params.
        candidate: The candidate folder (its ``metrics.json`` and ``evaluation/verdict.json``).
        lock: The run's ``dvc.lock``.
        validation: The validate stage's metrics file (``metrics/validation.json``).
        root: The project root (its git commit).
        environ: The environment (Airflow's ``AIRFLOW_CTX_*``).

    Returns:
        The record, as plain JSON values.
    """
    run = airflow_run(environ)
    verdict = _read_json(candidate / "evaluation" / "verdict.json") or {}
    dvc = dvc_record(lock)
    return {
        "format": FORMAT,
        "time": run_time(params, run),
        "logical_date": params.run.logical_date.isoformat(),
        "git": git_state(root),
        "dvc": dvc["outputs"],
        "params": {"run": params.run.model_dump(mode="json"), **dvc["params"]},
        "validation": _read_json(validation),
        "training": _training(_read_json(candidate / "metrics.json")),
        "gate": {
            "verdict": verdict.get("outcome"),
            "blocked": verdict.get("blocked"),
            # the first-model rule, under its key in verdict.json and in earlier lineages
            "bootstrap": verdict.get("bootstrap"),
        },
        "airflow": run,
    }


def actor(environ: Mapping[str, str]) -> str:
    """Who acts: the Airflow run, else ``RECFLOW_ACTOR``, else the login name."""
    run = airflow_run(environ)
    if run is not None:
        return f"airflow:{run['dag_id']}/{run['run_id']}"
    if environ.get("RECFLOW_ACTOR"):
        return environ["RECFLOW_ACTOR"]
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"
