"""The task factory: each stage of the stage table becomes one Airflow task on the chosen backend.

Both backends run the same script around the stage command (``recflow_airflow.scripts``): skip
when DVC finds the stage up to date, else run the command and record it with ``dvc commit``, so
an Airflow run leaves the same ``dvc.lock`` as ``dvc repro``. :func:`chain_tasks` builds every
task of the table and wires the edges the table declares; :func:`monitor_tasks` builds the
``monitor`` stage once per cloud for ``recsys_drift_monitor``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import BaseOperator

from pipelines.core.params import Params
from pipelines.stages.table import LOGICAL_DATE_ENV, STAGES, TRIGGER_ENV, StageSpec, stage
from recflow_airflow.scripts import LOGICAL_DATE_TEMPLATE, TRIGGER_TEMPLATE, stage_script

MONITOR_STAGE = "monitor"


def base_env() -> dict[str, str]:
    """``python`` and ``dvc`` of Airflow's interpreter first on ``PATH``, GX analytics off.

    Returns:
        Variables for an operator's ``env`` (used with ``append_env=True``).
    """
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {"PATH": path, "GX_ANALYTICS_ENABLED": "false"}


def task_env() -> dict[str, str]:
    """Environment added to a chain task's own: the interpreter, the run's date and trigger.

    ``RECFLOW_TRIGGER`` is the reason of the drift event that started the run, as JSON text,
    or empty for a scheduled or manual run; the DAG must pass
    ``recflow_airflow.monitoring.TEMPLATE_FILTERS`` as its ``user_defined_filters``.

    Returns:
        Variables for the operator's ``env`` (used with ``append_env=True``).
    """
    return {
        **base_env(),
        LOGICAL_DATE_ENV: LOGICAL_DATE_TEMPLATE,
        TRIGGER_ENV: TRIGGER_TEMPLATE,
    }


def stage_task(name: str, params: Params, root: Path) -> BaseOperator:
    """Build the task for stage ``name`` on the backend ``params.execution.backend`` names.

    Args:
        name: The stage's name in the stage table (``pipelines.stages.table.STAGES``).
        params: The project's params.
        root: The project root; local tasks run there.

    Returns:
        A ``BashOperator`` (backend ``local``) or a ``KubernetesPodOperator`` (``kubernetes``),
        with the stage name as task id. Retries, timeouts and the like come from the DAG's
        default args.
    """
    spec = stage(name)
    overrides: dict[str, Any] = {"retries": 0} if spec.deterministic_failure else {}
    if params.execution.backend == "kubernetes":
        # The Kubernetes client is heavy to import: only DAGs that use it pay for it.
        from recflow_airflow.kubernetes import stage_pod_operator

        return stage_pod_operator(spec, params, **overrides)
    return BashOperator(
        task_id=spec.name,
        bash_command=stage_script(spec, params),
        cwd=str(root),
        env=task_env(),
        append_env=True,
        # exit code 99 must fail the task like any other, not skip it
        skip_on_exit_code=None,
        **overrides,
    )


def chain_tasks(params: Params, root: Path) -> dict[str, BaseOperator]:
    """Every stage of the table as a task of the DAG being defined, with its edges.

    Call inside a ``with DAG(...)`` block.

    Args:
        params: The project's params.
        root: The project root.

    Returns:
        Task by stage name, in the table's order.
    """
    tasks = {spec.name: stage_task(spec.name, params, root) for spec in STAGES}
    for spec in STAGES:
        for upstream in spec.upstream:
            tasks[upstream] >> tasks[spec.name]
    return tasks


def monitor_task_id(cloud: str) -> str:
    """The task id of the ``monitor`` stage for ``cloud`` in ``recsys_drift_monitor``."""
    return f"{MONITOR_STAGE}_{cloud}"


def monitor_tasks(params: Params, root: Path) -> dict[str, BaseOperator]:
    """The ``monitor`` stage once per cloud of ``monitor.clouds``, on the chain's backend.

    Each runs the stage table's ``monitor`` command with ``--cloud <cloud>`` in place of the
    chain's ``--all-clouds``, through the
    same script as a chain task; on Kubernetes in a pod of its own like a chain stage's. The
    run's date is not written into ``params.yaml`` first, as a chain task's is: the monitor
    watches the clouds and must not change what a retrain run on the same checkout reads.
    Call inside a ``with DAG(...)`` block.

    Args:
        params: The project's params.
        root: The project root; local tasks run there.

    Returns:
        Task by cloud, in ``monitor.clouds``' order.
    """
    tasks: dict[str, BaseOperator] = {}
    for cloud in params.monitor.clouds:
        base = stage(MONITOR_STAGE)
        args = tuple(a for a in base.args if a != "--all-clouds")
        spec = dataclasses.replace(base, args=(*args, "--cloud", cloud))
        task_id = monitor_task_id(cloud)
        if params.execution.backend == "kubernetes":
            tasks[cloud] = _monitor_pod_operator(spec, cloud, params, task_id)
        else:
            tasks[cloud] = BashOperator(
                task_id=task_id,
                bash_command=stage_script(spec, params),
                cwd=str(root),
                env=base_env(),
                append_env=True,
                skip_on_exit_code=None,
            )
    return tasks


def _monitor_pod_operator(
    spec: StageSpec, cloud: str, params: Params, task_id: str
) -> BaseOperator:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from recflow_airflow.kubernetes import render_stage_pod
    from recflow_airflow.pods import labels

    pod = render_stage_pod(spec, params)
    name = f"recflow-{MONITOR_STAGE}-{cloud}"
    pod["metadata"].update(name=name, labels=labels(name.removeprefix("recflow-")))
    (container,) = pod["spec"]["containers"]
    container["command"] = ["bash", "-c", stage_script(spec, params)]
    container["env"] = [{"name": "GX_ANALYTICS_ENABLED", "value": "false"}]
    return KubernetesPodOperator(
        task_id=task_id,
        pod_template_dict=pod,
        namespace=params.execution.namespace,
        get_logs=True,
        on_finish_action="delete_pod",
    )
