"""The stage registry: what each task runs, written as ``dvc.yaml`` writes it.

``stage_command`` is the one place a stage's command line is built. The DAG runs exactly
these commands, and ``tests/dags/test_parity.py`` checks them, and the edges between stages,
against ``dvc.yaml`` as DVC itself resolves it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.config import ConfigError, Params

# Set by the task from the DAG run's date; the shell expands it, so no user input is ever
# pasted into the command text.
LOGICAL_DATE_ENV = "RECFLOW_LOGICAL_DATE"

_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class StageSpec:
    """One task of the chain.

    Attributes:
        name: Task id, and the stage name in ``dvc.yaml`` for tracked stages.
        module: Module under ``pipelines`` that the command runs with ``python -m``.
        args: Command-line arguments; ``${section.key}`` is filled in from ``params.yaml``
            the way DVC templating does it.
        upstream: Names of the tasks that must finish first.
        tracked: True for a DVC stage (skipped when up to date, recorded in ``dvc.lock``).
        deterministic_failure: True where a failure is a verdict on the input that a retry
            would only repeat (a rejected batch): the task gets no retries.
    """

    name: str
    module: str
    args: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    tracked: bool = True
    deterministic_failure: bool = False
    # what runs the module: plain ``python``, or e.g. torchrun for the DDP trainer
    launcher: tuple[str, ...] = ("python",)


SET_LOGICAL_DATE = StageSpec(
    name="set_logical_date",
    module="run_params",
    args=("--params", "params.yaml", "--set-logical-date", f'"${LOGICAL_DATE_ENV}"'),
    tracked=False,
)

STAGES: tuple[StageSpec, ...] = (
    SET_LOGICAL_DATE,
    StageSpec(
        name="generate",
        module="generate",
        args=("--params", "params.yaml", "--out", "data/source/synthetic"),
        upstream=("set_logical_date",),
    ),
    StageSpec(
        name="ingest",
        module="ingest",
        args=("--params", "params.yaml", "--source", "${ingest.path}", "--out", "data/raw/events"),
        upstream=("generate",),
    ),
    StageSpec(
        name="validate",
        module="validate",
        args=(
            "data/raw/events",
            "--params",
            "params.yaml",
            "--out",
            "data/validated",
            "--reports",
            "reports/validation",
            "--quarantine",
            "data/quarantine",
            "--metrics",
            "metrics/validation.json",
        ),
        upstream=("ingest",),
        deterministic_failure=True,
    ),
    StageSpec(
        name="prepare",
        module="prepare",
        args=(
            "--params",
            "params.yaml",
            "--validated",
            "data/validated",
            "--out",
            "data/prepared",
            "--metrics",
            "metrics/prepare.json",
        ),
        upstream=("validate",),
    ),
    StageSpec(
        name="train",
        module="train",
        args=(
            "--params",
            "params.yaml",
            "--prepared",
            "data/prepared",
            "--out",
            "models/candidate",
        ),
        upstream=("prepare",),
        launcher=("torchrun", "--standalone", "--nproc_per_node=${train.nproc_per_node}"),
    ),
    StageSpec(
        name="optimize",
        module="optimize",
        args=(
            "--params",
            "params.yaml",
            "--model",
            "models/candidate/model.pt",
            "--prepared",
            "data/prepared",
            "--out",
            "models/candidate/optimized",
            "--metrics",
            "metrics/optimize.json",
        ),
        upstream=("train", "prepare"),
    ),
    StageSpec(
        name="evaluate",
        module="evaluate",
        args=(
            "--params",
            "params.yaml",
            "--candidate",
            "models/candidate",
            "--prepared",
            "data/prepared",
            "--out",
            "models/candidate/evaluation",
            "--metrics",
            "metrics/evaluate.json",
        ),
        upstream=("optimize", "train", "prepare"),
        # the gate's verdict on a candidate: a retry would judge the same candidate again
        deterministic_failure=True,
    ),
)


def stage(name: str) -> StageSpec:
    """Look a stage up by name.

    Raises:
        KeyError: No stage has that name; the message lists the known ones.
    """
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(s.name for s in STAGES)}")


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise ConfigError(f"params.yaml has no value for ${{{dotted}}}")
        node = node[key]
    if isinstance(node, Mapping | list):
        raise ConfigError(f"${{{dotted}}} is not a single value in params.yaml")
    return node


def stage_command(spec: StageSpec, params: Params) -> str:
    """The stage's command line, ``<launcher> -m pipelines.<module> <args…>``, templated.

    Args:
        spec: The stage.
        params: The project's params; ``${section.key}`` in ``spec.args`` is replaced by
            that value, as DVC does when it reads ``dvc.yaml``.

    Returns:
        The command, exactly as ``dvc.yaml`` writes it after templating.

    Raises:
        ConfigError: An argument refers to a value ``params.yaml`` does not have.
    """
    values = params.model_dump(mode="json", by_alias=True)
    words = [*spec.launcher, "-m", f"pipelines.{spec.module}", *spec.args]
    resolved = [
        _PLACEHOLDER.sub(lambda m: str(_lookup(values, m.group(1).strip())), word) for word in words
    ]
    return " ".join(resolved)
