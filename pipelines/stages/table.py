"""The stage table: every task of the chain, its command line and its upstream tasks.

One list feeds everything that names stages: the ``recflow`` command's subcommands
(``pipelines/cli.py``), the Airflow DAG's tasks and edges (``dags/``, through the task factory
in ``plugins/recflow_airflow``), and the checks against ``dvc.yaml``
(``tests/dags/test_parity.py`` compares commands and edges with DVC's own reading of it).

``COMMANDS`` lists the ``recflow`` commands that are not tasks (``serve``, ``registry``,
``replay``); each is a module ``pipelines/commands/<name>.py``. A stage may have operator
commands of its own (``recflow deploy status``): its ``subcommands`` name them, and they run
from ``pipelines/commands/<stage>.py``.

Each stage is a thin module beside this one, ``pipelines/stages/<name>.py``, run as
``python -m pipelines.stages.<name>``; it parses its paths, loads its typed config and calls
one domain package. Nothing imports a stage module: this table names them as text.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.core.params import ConfigError, Params

# Set by the task from the DAG run's date; the shell expands it, so no user input is ever
# pasted into the command text.
LOGICAL_DATE_ENV = "RECFLOW_LOGICAL_DATE"
# Set by the task from the asset events that started the run (JSON; empty when none did), for
# the register command's --trigger; expanded by the shell like the date.
TRIGGER_ENV = "RECFLOW_TRIGGER"
# The run's trigger form as JSON (every field, rendered by Airflow), for the first task's --form.
RUN_FORM_ENV = "RECFLOW_RUN_FORM"
# ``--require-approval`` or ``--no-require-approval``, from the run's form, for a deploy task.
APPROVAL_FLAG_ENV = "RECFLOW_APPROVAL_FLAG"
# ``true`` when the run's form asks to retrain although DVC finds the stage up to date.
FORCE_ENV = "RECFLOW_FORCE"

# The stage the chain expands into one task per target of ``deploy.targets``.
DEPLOY_STAGE = "deploy"

_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class StageSpec:
    """One task of the chain.

    Attributes:
        name: Task id, subcommand of ``recflow``, module ``pipelines.stages.<name>``, and the
            stage name in ``dvc.yaml`` for tracked stages.
        help: One line for ``recflow --help``.
        args: Command-line arguments; ``${section.key}`` is filled in from ``params.yaml``
            the way DVC templating does it.
        upstream: Names of the tasks that must finish first (the DAG's edges).
        tracked: True for a DVC stage (skipped when up to date, recorded in ``dvc.lock``).
        deterministic_failure: True where a failure is a verdict on the input that a retry
            would only repeat (a rejected batch): the task gets no retries.
        launcher: What runs the module (``python``).
        subcommands: First words of ``recflow <name> ...`` that run the stage's operator
            commands (module ``pipelines.commands.<name>``) instead of the stage.
        forceable: True where the run's form may ask to run the stage although DVC finds it
            up to date (``force_retrain``, through ``$RECFLOW_FORCE``).
    """

    name: str
    help: str
    args: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    tracked: bool = True
    deterministic_failure: bool = False
    launcher: tuple[str, ...] = ("python",)
    subcommands: tuple[str, ...] = ()
    forceable: bool = False

    @property
    def module(self) -> str:
        """The module ``python -m`` runs."""
        return f"pipelines.stages.{self.name}"

    @property
    def commands_module(self) -> str | None:
        """The module of the stage's operator commands, None when it has none."""
        return f"pipelines.commands.{self.name}" if self.subcommands else None


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="set_logical_date",
        help="record the run's trigger form (its data date and overrides) for the later stages",
        args=("--params", "params.yaml", "--form", f'"${RUN_FORM_ENV}"'),
        tracked=False,
    ),
    StageSpec(
        name="pin_production",
        help="pin the production version the gate compares against (from the registry)",
        args=("--params", "params.yaml", "--out", "models/production.json"),
        upstream=("set_logical_date",),
        # it reads the registry, which DVC cannot track; evaluate depends on the file it writes
        tracked=False,
    ),
    StageSpec(
        name="generate",
        help="generate the synthetic clickstream (embedded default)",
        args=("--params", "params.yaml", "--out", "data/source/synthetic"),
        upstream=("pin_production",),
    ),
    StageSpec(
        name="ingest",
        help="write the run's immutable raw batch from a source",
        # the source is params.yaml's ``ingest.path``, or the run's form's (read through
        # load_params): never a command-line argument, so a run's source never changes the command
        args=("--params", "params.yaml", "--out", "data/raw/events"),
        upstream=("generate",),
    ),
    StageSpec(
        name="validate",
        help="validate a batch with Great Expectations",
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
        help="build user sequences, splits and reference statistics",
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
        help="train the SASRec recommender (under torchrun for DDP)",
        # --torchrun: the stage starts torchrun itself with train.nproc_per_node workers, read
        # when it runs (the run's form may change it), so the command never carries the number
        args=(
            "--torchrun",
            "--params",
            "params.yaml",
            "--prepared",
            "data/prepared",
            "--out",
            "models/candidate",
        ),
        upstream=("prepare",),
        # the form's force_retrain: retrain the same data on purpose (a new seed, a new image)
        forceable=True,
    ),
    StageSpec(
        name="optimize",
        help="export to ONNX, build runtime artifacts, check parity",
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
        name="reference",
        help="featurize the held-out requests and the shipped model's answers (the monitor's "
        "reference)",
        args=(
            "--params",
            "params.yaml",
            "--prepared",
            "data/prepared",
            "--model",
            "models/candidate/optimized",
            "--out",
            "models/candidate/monitoring",
        ),
        upstream=("optimize", "prepare"),
    ),
    StageSpec(
        name="evaluate",
        help="regression gate of the candidate against production",
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
            "--production-pin",
            "models/production.json",
        ),
        upstream=("optimize", "train", "prepare", "pin_production"),
        # the gate's verdict on a candidate: a retry would judge the same candidate again
        deterministic_failure=True,
    ),
    StageSpec(
        name="register",
        help="register the gated candidate in the model registry, replicate it, name it candidate",
        args=(
            "--params",
            "params.yaml",
            "--candidate",
            "models/candidate",
            "--lock",
            "dvc.lock",
            "--validation",
            "metrics/validation.json",
            "--trigger",
            f'"${TRIGGER_ENV}"',
        ),
        # the version holds the candidate's monitoring reference too
        upstream=("evaluate", "reference"),
        # it writes to the object stores, a side effect DVC cannot track; a rerun is a no-op
        tracked=False,
    ),
    StageSpec(
        name="deploy",
        help="roll the candidate out to the fleets: shadow, canary, full, or rolled back",
        args=(
            "--params",
            "params.yaml",
            "--from-alias",
            "${registry.candidate_alias}",
            "--prepared",
            "data/prepared",
        ),
        upstream=("register",),
        # a side effect on the fleets and the registry; the rollout record resumes a killed run
        tracked=False,
        # a rolled-back candidate is a verdict: a retry would report the same rollback
        deterministic_failure=True,
        subcommands=("approve", "reject", "status", "manifests"),
    ),
    StageSpec(
        name="monitor",
        help="drift and online quality of the served traffic (Evidently), per cloud",
        args=(
            "--params",
            "params.yaml",
            "--all-clouds",
            "--feedback-prepared",
            "data/prepared",
        ),
        # the traffic the rollout served, against the reference of what serves now
        upstream=("deploy",),
        # it reads the request log and the registry, which DVC cannot track
        tracked=False,
    ),
)


@dataclass(frozen=True)
class CommandSpec:
    """A ``recflow`` command that is not a task of the chain (no DAG task, no DVC stage).

    Attributes:
        name: The subcommand, and its module ``pipelines.commands.<name>``.
        help: One line for ``recflow --help``.
    """

    name: str
    help: str

    @property
    def module(self) -> str:
        """The module whose ``main`` runs the command."""
        return f"pipelines.commands.{self.name}"


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        name="serve",
        help="serve recommendations over HTTP (an optimized folder or a registry version)",
    ),
    CommandSpec(
        name="registry",
        help="model registry: list, show, promote, rollback, history, verify, backup, restore",
    ),
    CommandSpec(
        name="replay",
        help="replay held-out sessions against a server: hit rate, errors, latency",
    ),
    CommandSpec(
        name="placement",
        help="decide which cloud a task runs in (private first, burst to public) and record it",
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


def deploy_task_id(cloud: str) -> str:
    """The task that rolls the candidate out to ``cloud``: ``deploy_<cloud>``."""
    return f"{DEPLOY_STAGE}_{cloud}"


def approval_task_id(cloud: str) -> str:
    """The task where a person approves the rollout to ``cloud``: ``approve_<cloud>``."""
    return f"approve_{cloud}"


def deploy_args(cloud: str) -> tuple[str, ...]:
    """The ``deploy`` stage's arguments for one target: ``--target <cloud>``, and the run's
    ``--require-approval`` / ``--no-require-approval`` (``$RECFLOW_APPROVAL_FLAG``)."""
    return (*stage(DEPLOY_STAGE).args, "--target", cloud, f'"${APPROVAL_FLAG_ENV}"')


def chain_upstream(params: Params) -> dict[str, tuple[str, ...]]:
    """Every task of the chain with its upstream tasks, in the table's order.

    The ``deploy`` stage becomes one task per target of ``deploy.targets``: ``deploy_<first>``
    after the stage's own upstream; before each later target an ``approve_<cloud>`` after the
    previous deploy, and ``deploy_<cloud>`` after both (so it runs when the approval skipped
    itself, and not when the previous deploy was skipped). A stage after ``deploy`` comes after
    the last target's task.

    Args:
        params: The project's params (``deploy.targets``).

    Returns:
        Task id to its upstream task ids.
    """
    targets = params.deploy.targets
    last = deploy_task_id(targets[-1])
    tasks: dict[str, tuple[str, ...]] = {}
    for spec in STAGES:
        upstream = tuple(last if u == DEPLOY_STAGE else u for u in spec.upstream)
        if spec.name != DEPLOY_STAGE:
            tasks[spec.name] = upstream
            continue
        tasks[deploy_task_id(targets[0])] = upstream
        for previous, cloud in itertools.pairwise(targets):
            tasks[approval_task_id(cloud)] = (deploy_task_id(previous),)
            tasks[deploy_task_id(cloud)] = (approval_task_id(cloud), deploy_task_id(previous))
    return tasks


def chain_task_ids(params: Params) -> tuple[str, ...]:
    """The chain's task ids in the table's order, ``deploy`` expanded per target.

    ``set_logical_date … register, deploy_private, approve_public, deploy_public, monitor``
    with the default targets; known without importing Airflow.
    """
    return tuple(chain_upstream(params))


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
    """The stage's command line, ``<launcher> -m pipelines.stages.<name> <args…>``, templated.

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
    words = [*spec.launcher, "-m", spec.module, *spec.args]
    resolved = [
        _PLACEHOLDER.sub(lambda m: str(_lookup(values, m.group(1).strip())), word) for word in words
    ]
    return " ".join(resolved)
