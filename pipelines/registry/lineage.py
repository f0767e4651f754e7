"""Lineage: one record per version of where it came from, taken from the run's own records.

The git commit, the ``dvc.lock`` hashes of the raw batch, validated batch, prepared data and
model, the params each stage ran with (as ``dvc.lock`` recorded them), the validation result,
the training run, the gate's verdict, the Airflow dag and run when there is one, the time,
which is the run's (Airflow's logical date, else ``run.logical_date``), never the clock's, and
why the run happened (``trigger``).

The trigger is the JSON the register command is given (``--trigger``): for a retrain that a
drift finding started, the reason the monitor's asset event carried (``{"kind": "drift",
"cloud", "window", "summary_sha256", "features": [...]}``), or a list of such reasons when
several events started it. A run started by hand or by its schedule is given nothing and
records ``{"kind": "manual_or_schedule"}``, so every version registered since says why it was
made; versions registered before have no ``trigger`` key.
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

from pipelines.core.errors import InputError
from pipelines.core.params import Params
from pipelines.core.params.run_form import overlay_path
from pipelines.core.placement import read_decision

log = logging.getLogger("recflow.registry.lineage")

# dvc.lock outputs that identify the data and the model a version was made from
LOCKED_OUTPUTS = {
    "raw_batch": ("ingest", "data/raw/events"),
    "validated_batch": ("validate", "data/validated"),
    "prepared": ("prepare", "data/prepared"),
    "model": ("train", "models/candidate/model.pt"),
}
FORMAT = 1
# the trigger of a run no asset event started: by hand, or by the DAG's schedule
MANUAL_OR_SCHEDULE: dict[str, Any] = {"kind": "manual_or_schedule"}
Trigger = dict[str, Any] | list[dict[str, Any]]


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
    # each stage's params.yaml values, then what the run overlay set over them (its dotted
    # keys; null there means params.yaml's value): what the stage really ran with
    params = {}
    for stage, record in stages.items():
        if not isinstance(record, dict):
            continue
        files = record.get("params") or {}
        overlay = files.get(overlay_path(Path("params.yaml")).name) or {}
        params[stage] = {
            **(files.get("params.yaml") or {}),
            **{key: value for key, value in overlay.items() if value is not None},
        }
    return {"outputs": outputs, "params": params}


def _training(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    keys = ("epochs_run", "best_epoch", "stopped_early", "best_valid", "best_valid_users", "test")
    return {key: metrics.get(key) for key in keys}


def run_time(params: Params, run: dict[str, str] | None) -> str:
    """The run's time: Airflow's logical date when there is one, else ``run.logical_date``."""
    if run and run.get("logical_date"):
        return run["logical_date"]
    return params.run.logical_date.isoformat()


def parse_trigger(text: str) -> Trigger:
    """The trigger of a run from its JSON text (the register command's ``--trigger``).

    Args:
        text: A JSON object, or a list of them (one per asset event that started the run);
            empty or blank: the run was started by hand or by its schedule.

    Returns:
        The parsed trigger; :data:`MANUAL_OR_SCHEDULE` for an empty text.

    Raises:
        InputError: The text is not JSON, or not an object or a list of objects.
    """
    if not text.strip():
        return dict(MANUAL_OR_SCHEDULE)
    try:
        trigger = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--trigger is not valid JSON ({exc}): {text[:200]!r}") from None
    objects = trigger if isinstance(trigger, list) else [trigger]
    if not objects or not all(isinstance(item, dict) for item in objects):
        raise InputError(
            f"--trigger must be a JSON object or a list of objects, not {text[:200]!r}"
        )
    return trigger


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def _drifted(feature: Any) -> str:
    """One drifted feature: ``history_category (0.31 >= 0.1)``, or its name alone."""
    if not isinstance(feature, dict):
        return str(feature)
    name = feature.get("feature", feature.get("metric", "?"))
    score = feature.get("score", feature.get("value"))
    limit = feature.get("threshold", feature.get("limit"))
    if score is None or limit is None:
        return str(name)
    return f"{name} ({_number(score)} >= {_number(limit)})"


def _reason(trigger: Any) -> str:
    if not isinstance(trigger, dict):
        return json.dumps(trigger, sort_keys=True)
    kind = trigger.get("kind")
    if kind == MANUAL_OR_SCHEDULE["kind"]:
        return "manual or schedule"
    if kind == "drift":
        where = " ".join(str(trigger[k]) for k in ("cloud", "window") if trigger.get(k))
        features = trigger.get("features") or []
        drifted = ", ".join(_drifted(f) for f in features) if isinstance(features, list) else ""
        return f"drift in {where or '?'}" + (f": {drifted}" if drifted else "")
    rest = {k: v for k, v in trigger.items() if k != "kind"}
    return f"{kind or 'unknown'}" + (f" {json.dumps(rest, sort_keys=True)}" if rest else "")


def trigger_line(record: dict[str, Any]) -> str:
    """Why the version of the lineage ``record`` was made, in one line.

    ``trigger: drift in private 20261201T000000Z--20261202T000000Z: history_category
    (0.31 >= 0.1)``; ``trigger: manual or schedule``; ``trigger: not recorded`` for a version
    registered before triggers were.
    """
    if "trigger" not in record:
        return "trigger: not recorded (registered before the lineage kept it)"
    trigger = record["trigger"]
    reasons = trigger if isinstance(trigger, list) else [trigger]
    return "trigger: " + "; ".join(_reason(r) for r in reasons)


def collect(
    params: Params,
    candidate: Path,
    lock: Path,
    validation: Path | None,
    root: Path,
    environ: Mapping[str, str],
    trigger: Trigger | None = None,
    placement: Path | None = None,
) -> dict[str, Any]:
    """The lineage record of the version ``candidate`` would make.

    Args:
        params: The run's params.
        candidate: The candidate folder (its ``metrics.json`` and ``evaluation/verdict.json``).
        lock: The run's ``dvc.lock``.
        validation: The validate stage's metrics file (``metrics/validation.json``).
        root: The project root (its git commit).
        environ: The environment (Airflow's ``AIRFLOW_CTX_*``).
        trigger: Why the run happened (:func:`parse_trigger`); None: by hand or by schedule.
        placement: Where ``recflow placement`` recorded the training task's decision
            (``models/placement/train.json``); None, a missing file or another run's: none.

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
        "trigger": trigger if trigger is not None else dict(MANUAL_OR_SCHEDULE),
        # which cloud trained it, why, and at what estimated cost
        "placement": (
            read_decision(placement, params.run.logical_date.isoformat()) if placement else None
        ),
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
