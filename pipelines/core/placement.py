"""Where a task runs: the hybrid placement policy over the private and the public cloud.

``execution.placement`` in ``params.yaml`` names the clouds a task may run in (each a
Kubernetes context, a namespace and the store it works with), their free GPUs, the hours
until those GPUs can be had, the price of a GPU-hour, and whether the cloud may see private
data; per task, its estimated GPU-hours, the GPUs it runs on and its deadline. The rule:

- ``private_first`` (the default): run in a cloud that may see private data when it has the
  GPUs and finishes before the deadline; burst to another cloud otherwise.
- ``private_only``: never burst.
- ``cheapest``: the cheapest cloud that can run the task before its deadline.

Under every rule a task runs only where it may read its inputs. Raw events and validated
batches never leave the private cloud; training reads the prepared sequences, which never
cross either, so in a cloud that may not see private data it reads a pseudonymized training
set instead, a crossing kind of its own (:data:`TRAINING_SET`) that crosses only with
``execution.placement.train_on_public: true`` (off by default). When the only cloud with
capacity may not see the data, or no cloud has capacity before the deadline, the task is
refused with an error that names why.

:func:`decide` is pure: the registry's crossing rule comes in as data (:class:`CrossingRule`),
so this module stands on nothing but pydantic. Its :class:`Decision` (the cloud, the reason,
every cloud considered and the estimated cost, GPU-hours times the price) is written by
``recflow placement`` to :data:`RECORDS` and read back, checked, into the run's lineage by
:func:`read_decision`.

The config models stand on pydantic alone, not on :mod:`pipelines.core.params`: the
``execution`` section (``pipelines/core/params/execution.py``) imports them, and the other way
round would be an import cycle. They are as strict as every other section.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.core.errors import InputError, RecflowError

log = logging.getLogger("recflow.placement")

CloudName = Literal["private", "public"]
PlacedTask = Literal["train"]
Rule = Literal["private_first", "private_only", "cheapest"]

# The pseudonymized training set: user ids replaced by keyed hashes, what training reads in a
# cloud that may not see private data. A crossing kind of its own, off by default.
TRAINING_SET = "training_set"
# What each task reads where it may see private data, as object kinds of the crossing policy.
TASK_INPUTS: dict[str, tuple[str, ...]] = {"train": ("prepared_sequences",)}
# The form in which a private input may reach a cloud that may not see private data. A private
# input without one (raw events, validated batches) stays in the private cloud.
CROSSING_FORMS: dict[str, str] = {"prepared_sequences": TRAINING_SET}
# Where ``recflow placement`` records a task's decision (``<task>.json``) for the lineage.
RECORDS = Path("models/placement")
FORMAT = 1


class _Strict(BaseModel):
    """Frozen, unknown keys rejected, no silent coercion: ``params.base.StrictModel``'s rules."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PlacementCloud(_Strict):
    """One cloud a task may run in."""

    # the kubeconfig context of its cluster, and the namespace its pods run in
    context: str = Field(min_length=1, pattern=r"^\S+$")
    namespace: str = Field("recflow", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    # the store of ``stores`` its tasks read from and write to
    store: CloudName
    free_gpus: int = Field(ge=0)
    # hours until those GPUs can be had (a queue); 0: now
    wait_hours: float = Field(0.0, ge=0.0)
    price_per_gpu_hour: float = Field(ge=0.0)
    # whether private data (raw events, validated batches, prepared sequences) may be read there
    private_data: bool = False


class TaskEstimate(_Strict):
    """What a task needs: its GPU-hours, the GPUs it runs on, and when it must be done."""

    gpu_hours: float = Field(gt=0.0)
    # None: the training topology's nodes × gpus_per_node (``execution.training``)
    gpus: int | None = Field(None, ge=1)
    # hours from its start; a cloud that would finish later has no capacity for it
    deadline_hours: float = Field(gt=0.0)


def _default_clouds() -> dict[CloudName, PlacementCloud]:
    return {
        "private": PlacementCloud(
            context="recflow-private",
            store="private",
            free_gpus=4,
            price_per_gpu_hour=1.2,
            private_data=True,
        ),
        "public": PlacementCloud(
            context="recflow-public", store="public", free_gpus=16, price_per_gpu_hour=2.5
        ),
    }


def _default_tasks() -> dict[PlacedTask, TaskEstimate]:
    return {"train": TaskEstimate(gpu_hours=2.0, deadline_hours=6.0)}


class PlacementConfig(_Strict):
    """``execution.placement``: the clouds a task may run in, its estimate, and the rule."""

    rule: Rule = "private_first"
    # in order of preference within each group (the clouds that may see private data first)
    clouds: dict[CloudName, PlacementCloud] = Field(default_factory=_default_clouds)
    tasks: dict[PlacedTask, TaskEstimate] = Field(default_factory=_default_tasks)
    # let a pseudonymized training set cross, so that training may burst to a cloud that may
    # not see private data
    train_on_public: bool = False
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")

    @model_validator(mode="after")
    def _clouds(self) -> PlacementConfig:
        if not self.clouds:
            raise ValueError("placement names no cloud a task may run in")
        if self.rule == "private_only" and not any(c.private_data for c in self.clouds.values()):
            raise ValueError("rule private_only needs a cloud with private_data: true")
        return self


class PlacementError(RecflowError):
    """The placement cannot be decided: its config does not fit the run's."""


class PlacementRefused(RecflowError):
    """No cloud may run the task: none has capacity before its deadline, or none that has may
    see its inputs. A verdict on the run, not a config error."""

    exit_code = 1


@dataclass(frozen=True)
class CrossingRule:
    """The registry's crossing policy as data: which object kinds may reach a cloud that may
    not see private data.

    Attributes:
        allow: Kinds that may cross (``registry.crossing.allow``).
        never: Kinds that never cross, whatever ``allow`` says (``NEVER_CROSS``).
    """

    allow: frozenset[str]
    never: frozenset[str]


@dataclass(frozen=True)
class Assessment:
    """One cloud, weighed for a task.

    Attributes:
        cloud: Its name.
        private_data: Whether it may see private data.
        free_gpus: Its free GPUs.
        finish_hours: Hours until the task would be done there (wait plus run); None where it
            has too few GPUs to start.
        has_capacity: Enough GPUs, done before the deadline.
        short_of: Why it has no capacity; None when it has.
        inputs: The kinds the task would read there; empty where it may not read them.
        refusal: Why the task may not run there (its inputs may not cross, or the rule keeps
            it out); None when it may.
        cost: The estimated cost there: GPU-hours times its price.
    """

    cloud: str
    private_data: bool
    free_gpus: int
    finish_hours: float | None
    has_capacity: bool
    short_of: str | None
    inputs: tuple[str, ...]
    refusal: str | None
    cost: float

    @property
    def eligible(self) -> bool:
        """Whether the task may run here: capacity in time, and inputs it may read."""
        return self.has_capacity and self.refusal is None

    def line(self, currency: str) -> str:
        """One line for a person: ``public: 16 free GPUs, done in 1.0 h, reads training_set``."""
        parts = [f"{self.free_gpus} free GPUs"]
        parts.append(self.short_of or f"done in {_hours(self.finish_hours)}")
        parts.append(f"may not run it: {self.refusal}" if self.refusal else _reads(self.inputs))
        parts.append(f"{self.cost:.2f} {currency}")
        return f"{self.cloud}: " + ", ".join(parts)


@dataclass(frozen=True)
class Decision:
    """Where a task runs, why, and what it costs.

    Attributes:
        task: The task (``train``).
        cloud: The cloud it runs in.
        context: That cloud's Kubernetes context.
        namespace: Its namespace there.
        store: The store it works with there.
        rule: The rule that chose it.
        reason: Why, in one sentence.
        inputs: The object kinds it reads there.
        gpus: The GPUs it runs on.
        gpu_hours: Its estimated GPU-hours.
        deadline_hours: Hours it must be done in.
        price_per_gpu_hour: The cloud's price of a GPU-hour.
        estimated_cost: ``gpu_hours`` times the cloud's price per GPU-hour.
        currency: Of the prices and the cost.
        train_on_public: Whether a pseudonymized training set may cross.
        considered: Every cloud, weighed (in order of preference).
    """

    task: str
    cloud: str
    context: str
    namespace: str
    store: str
    rule: str
    reason: str
    inputs: tuple[str, ...]
    gpus: int
    gpu_hours: float
    deadline_hours: float
    price_per_gpu_hour: float
    estimated_cost: float
    currency: str
    train_on_public: bool
    considered: tuple[Assessment, ...]

    def to_json(self) -> dict[str, Any]:
        """The decision as plain JSON values (tuples as lists)."""
        document: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return document

    def lines(self) -> list[str]:
        """The decision for a person, a few lines."""
        return [
            f"{self.task} -> {self.cloud} (context {self.context}, namespace {self.namespace}, "
            f"store {self.store})",
            f"reason: {self.reason}",
            f"inputs: {', '.join(self.inputs) or 'none'}",
            f"estimated cost: {self.gpu_hours:g} GPU-h x {self.price_per_gpu_hour:.2f} "
            f"{self.currency} = {self.estimated_cost:.2f} {self.currency}",
            f"considered (rule {self.rule}, deadline {_hours(self.deadline_hours)}, "
            f"{self.gpus} GPUs):",
            *(f"  {a.line(self.currency)}" for a in self.considered),
        ]


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} h"


def _reads(inputs: tuple[str, ...]) -> str:
    return f"reads {', '.join(inputs)}" if inputs else "reads nothing"


def readable_inputs(
    inputs: tuple[str, ...], crossing: CrossingRule, train_on_public: bool
) -> tuple[tuple[str, ...], str | None]:
    """What a task reads in a cloud that may not see private data, or why it may not run there.

    Args:
        inputs: The kinds it reads where private data may be seen (:data:`TASK_INPUTS`).
        crossing: The registry's crossing rule.
        train_on_public: Whether the pseudonymized training set may cross.

    Returns:
        The kinds it would read there, and None; or ``()`` and the reason it may not run there.
    """
    read: list[str] = []
    for kind in inputs:
        if kind not in crossing.never:
            if kind not in crossing.allow:
                return (), f"{kind} is not in registry.crossing.allow"
            read.append(kind)
            continue
        form = CROSSING_FORMS.get(kind)
        if form is None or form in crossing.never:
            return (), f"{kind} never leaves the private cloud"
        if not train_on_public:
            return (), (
                f"{kind} never leaves the private cloud, and its pseudonymized form ({form}) "
                "crosses only with execution.placement.train_on_public: true"
            )
        read.append(form)
    return tuple(read), None


def check_stores(cfg: PlacementConfig, roles: Mapping[str, str]) -> None:
    """Check each cloud's store against ``stores``: it exists, and a cloud that may see
    private data works with the store of record (a replica holds only what may cross).

    Args:
        cfg: The placement config.
        roles: Each store's role (``record`` or ``replica``), by name.

    Raises:
        PlacementError: A cloud names a store that does not fit.
    """
    for name, cloud in cfg.clouds.items():
        role = roles.get(cloud.store)
        if role is None:
            raise PlacementError(
                f"execution.placement.clouds.{name}.store: {cloud.store!r} is not a store "
                f"(stores: {', '.join(roles)})"
            )
        if cloud.private_data and role != "record":
            raise PlacementError(
                f"execution.placement.clouds.{name} may see private data but works with store "
                f"{cloud.store!r}, a {role}: private data lives only in the store of record"
            )


def _assess(
    name: str,
    cloud: PlacementCloud,
    estimate: TaskEstimate,
    gpus: int,
    inputs: tuple[str, ...],
    cfg: PlacementConfig,
    crossing: CrossingRule,
) -> Assessment:
    finish: float | None = None
    if cloud.free_gpus < gpus:
        short_of: str | None = f"{cloud.free_gpus} of {gpus} GPUs free"
    else:
        finish = cloud.wait_hours + estimate.gpu_hours / gpus
        short_of = (
            None
            if finish <= estimate.deadline_hours
            else f"done in {_hours(finish)}, after the {_hours(estimate.deadline_hours)} deadline"
        )
    if cloud.private_data:
        read, refusal = inputs, None
    elif cfg.rule == "private_only":
        read, refusal = (), "rule private_only keeps it where private data may be seen"
    else:
        read, refusal = readable_inputs(inputs, crossing, cfg.train_on_public)
    return Assessment(
        cloud=name,
        private_data=cloud.private_data,
        free_gpus=cloud.free_gpus,
        finish_hours=finish,
        has_capacity=short_of is None,
        short_of=short_of,
        inputs=read,
        refusal=refusal,
        cost=round(estimate.gpu_hours * cloud.price_per_gpu_hour, 6),
    )


def _names(items: list[Assessment]) -> str:
    names = [a.cloud for a in items]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _refusal(task: str, estimate: TaskEstimate, considered: tuple[Assessment, ...]) -> str:
    """Why no cloud may run ``task``, naming each cloud's obstacle."""
    able = [a for a in considered if a.has_capacity]
    others = "; ".join(f"{a.cloud}: {a.short_of}" for a in considered if not a.has_capacity)
    deadline = _hours(estimate.deadline_hours)
    if able:
        only = "the only cloud" if len(able) == 1 else "the only clouds"
        why = "; ".join(f"{a.cloud}: {a.refusal}" for a in able)
        return (
            f"refused to place {task}: {_names(able)} {'is' if len(able) == 1 else 'are'} {only} "
            f"with capacity before the {deadline} deadline, and may not see its inputs ({why})"
            + (f"; {others}" if others else "")
        )
    return f"no cloud can run {task} before its {deadline} deadline: {others}"


def _reason(
    chosen: Assessment, considered: tuple[Assessment, ...], rule: Rule, gpus: int, deadline: float
) -> str:
    fit = (
        f"{chosen.cloud} has {chosen.free_gpus} free GPUs ({gpus} needed) and is done in "
        f"{_hours(chosen.finish_hours)}, within the {_hours(deadline)} deadline"
    )
    if rule == "cheapest":
        return f"the cheapest cloud that can run it in time: {fit}, {_reads(chosen.inputs)}"
    if chosen.private_data:
        return f"{fit}, where private data may be seen"
    passed = [a for a in considered if a.private_data]
    why = "; ".join(f"{a.cloud}: {a.short_of}" for a in passed)
    return f"burst: {why or 'no cloud may see private data'}; {fit}, {_reads(chosen.inputs)}"


def decide(cfg: PlacementConfig, task: str, crossing: CrossingRule, training_gpus: int) -> Decision:
    """Decide where ``task`` runs.

    Args:
        cfg: ``execution.placement``.
        task: The task (a key of ``cfg.tasks``).
        crossing: The registry's crossing rule.
        training_gpus: The GPUs the task runs on when its estimate names none
            (``execution.training``: nodes × gpus_per_node).

    Returns:
        The decision, with every cloud weighed.

    Raises:
        PlacementError: The task has no estimate, or runs on no GPU.
        PlacementRefused: No cloud may run it (the message names why, per cloud).
    """
    if task not in cfg.tasks or task not in TASK_INPUTS:
        raise PlacementError(f"execution.placement.tasks has no estimate for {task!r}")
    estimate = cfg.tasks[task]
    gpus = estimate.gpus if estimate.gpus is not None else training_gpus
    if gpus < 1:
        raise PlacementError(
            f"{task} runs on no GPU (execution.training): give "
            f"execution.placement.tasks.{task}.gpus"
        )
    clouds: dict[str, PlacementCloud] = dict(cfg.clouds.items())
    # the clouds that may see private data first, each group in the order written
    order = sorted(clouds.items(), key=lambda item: not item[1].private_data)
    considered = tuple(
        _assess(name, cloud, estimate, gpus, TASK_INPUTS[task], cfg, crossing)
        for name, cloud in order
    )
    eligible = [a for a in considered if a.eligible]
    if not eligible:
        raise PlacementRefused(_refusal(task, estimate, considered))
    chosen = min(eligible, key=lambda a: a.cost) if cfg.rule == "cheapest" else eligible[0]
    cloud = clouds[chosen.cloud]
    return Decision(
        task=task,
        cloud=chosen.cloud,
        context=cloud.context,
        namespace=cloud.namespace,
        store=cloud.store,
        rule=cfg.rule,
        reason=_reason(chosen, considered, cfg.rule, gpus, estimate.deadline_hours),
        inputs=chosen.inputs,
        gpus=gpus,
        gpu_hours=estimate.gpu_hours,
        deadline_hours=estimate.deadline_hours,
        price_per_gpu_hour=cloud.price_per_gpu_hour,
        estimated_cost=chosen.cost,
        currency=cfg.currency,
        train_on_public=cfg.train_on_public,
        considered=considered,
    )


def _digest(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def decision_record(decision: Decision, logical_date: str) -> dict[str, Any]:
    """The record of a decision for the run's lineage: the decision, the run's logical date,
    and a sha256 over both, which :func:`read_decision` checks."""
    body = {"format": FORMAT, "logical_date": logical_date, "decision": decision.to_json()}
    return {**body, "sha256": _digest(body)}


def record_path(task: str, records: Path = RECORDS) -> Path:
    """Where ``recflow placement`` records ``task``'s decision."""
    return records / f"{task}.json"


def read_decision(path: Path, logical_date: str) -> dict[str, Any] | None:
    """The recorded decision of this run, for its lineage.

    Args:
        path: The record (:func:`record_path`).
        logical_date: The run's logical date; a record of another run is left out.

    Returns:
        The record; None when there is none or it is another run's (logged).

    Raises:
        InputError: The record is unreadable or was changed after it was written.
    """
    if not path.is_file():
        log.info("no placement recorded at %s: the lineage has none", path)
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"placement record {path} is not readable JSON: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("decision"), dict):
        raise InputError(f"placement record {path} holds no decision")
    body = {key: value for key, value in record.items() if key != "sha256"}
    if record.get("sha256") != _digest(body):
        raise InputError(
            f"placement record {path} does not match its sha256: it was changed after "
            "it was recorded"
        )
    if record.get("logical_date") != logical_date:
        log.warning(
            "placement record %s is of the run of %s, not of %s: left out of the lineage",
            path,
            record.get("logical_date"),
            logical_date,
        )
        return None
    return record
