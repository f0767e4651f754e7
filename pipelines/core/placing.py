"""Placing a task under the project's params: the placement policy with the run's inputs.

:mod:`pipelines.core.placement` decides on plain config; this module feeds it what
``params.yaml`` says (``execution.placement``, the stores' roles, the registry's crossing rule,
``execution.training``'s GPUs) and logs the decision. ``recflow placement`` and the Airflow
task that submits the training Job on Kubernetes both place through :func:`place`; it imports
nothing heavy, so the DAG's wiring may call it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import get_args

from pipelines.core.params import NEVER_CROSS, Params
from pipelines.core.placement import (
    CloudName,
    CrossingRule,
    Decision,
    PlacementConfig,
    PlacementError,
    check_stores,
    decide,
)

log = logging.getLogger("recflow.placement")

CLOUD_NAMES: tuple[str, ...] = get_args(CloudName)


def crossing_rule(params: Params) -> CrossingRule:
    """The registry's crossing rule as data for the placement policy."""
    return CrossingRule(allow=frozenset(params.registry.crossing.allow), never=NEVER_CROSS)


def placement_config(params: Params, free_gpus: Sequence[tuple[str, int]]) -> PlacementConfig:
    """``execution.placement`` with the free GPUs given on the command line, checked again.

    Raises:
        PlacementError: A cloud given is not one of ``execution.placement``.
    """
    cfg = params.execution.placement
    if not free_gpus:
        return cfg
    document = cfg.model_dump()
    for cloud, count in free_gpus:
        if cloud not in document["clouds"]:
            raise PlacementError(f"--free-gpus {cloud}: not a cloud of execution.placement")
        document["clouds"][cloud]["free_gpus"] = count
    return PlacementConfig.model_validate(document)


def place(params: Params, task: str, free_gpus: Sequence[tuple[str, int]] = ()) -> Decision:
    """Decide where ``task`` runs under ``params`` (``--free-gpus`` overrides applied), and log it.

    Raises:
        PlacementError: The placement config does not fit the run's.
        PlacementRefused: No cloud may run the task.
    """
    cfg = placement_config(params, free_gpus)
    check_stores(cfg, {name: getattr(params.stores, name).role for name in CLOUD_NAMES})
    training = params.execution.training
    decision = decide(cfg, task, crossing_rule(params), training.nodes * training.gpus_per_node)
    log.info(
        "placement of %s: %s (context %s, namespace %s); %s; reads %s; estimated cost "
        "%.2f %s; considered %s",
        decision.task,
        decision.cloud,
        decision.context,
        decision.namespace,
        decision.reason,
        ", ".join(decision.inputs),
        decision.estimated_cost,
        decision.currency,
        "; ".join(a.line(decision.currency) for a in decision.considered),
    )
    return decision
