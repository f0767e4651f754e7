"""The task factory: each stage of the stage table becomes one Airflow task on the chosen backend.

Both backends run the same script around the stage command (``recflow_airflow.scripts``): skip
when DVC finds the stage up to date, else run the command and record it with ``dvc commit``, so
an Airflow run leaves the same ``dvc.lock`` as ``dvc repro``. :func:`chain_tasks` builds every
task of the table and wires the edges the table declares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import BaseOperator

from pipelines.core.params import Params
from pipelines.stages.table import LOGICAL_DATE_ENV, STAGES, stage
from recflow_airflow.scripts import LOGICAL_DATE_TEMPLATE, stage_script


def task_env() -> dict[str, str]:
    """Environment added to the task's own: ``python`` and ``dvc`` of Airflow's interpreter.

    Returns:
        Variables for the operator's ``env`` (used with ``append_env=True``).
    """
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {
        "PATH": path,
        "GX_ANALYTICS_ENABLED": "false",
        LOGICAL_DATE_ENV: LOGICAL_DATE_TEMPLATE,
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
