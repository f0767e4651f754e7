"""The task factory: each stage of the stage table becomes one Airflow task.

Every chain task is a :class:`~recflow_airflow.operators.StageOperator`: the same script around
the stage command (``recflow_airflow.scripts``) on this machine, or the stage's pod on
Kubernetes, as the run's form chooses when the task runs. The script skips when DVC finds the
stage up to date, else runs the command and records it with ``dvc commit``, so an Airflow run
leaves the same ``dvc.lock`` as ``dvc repro``. :func:`chain_tasks` builds the tasks of
``pipelines.stages.table.chain_upstream`` (the ``deploy`` stage once per target, with an
approval before each target after the first) and wires its edges; :func:`monitor_tasks` builds
the ``monitor`` stage once per cloud for ``recsys_drift_monitor``.

A task's definition is the same in every parse: nothing of the parsing process's environment
(``PATH`` above all) goes into it, so parsing never makes a new DAG version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import BaseOperator

from pipelines.core.params import Params
from pipelines.stages.table import (
    APPROVAL_FLAG_ENV,
    DEPLOY_STAGE,
    FORCE_ENV,
    LOGICAL_DATE_ENV,
    RUN_FORM_ENV,
    STAGES,
    TRIGGER_ENV,
    StageSpec,
    approval_task_id,
    chain_upstream,
    deploy_args,
    deploy_task_id,
    stage,
)
from recflow_airflow.form import SKIP_DEPLOY
from recflow_airflow.operators import StageOperator
from recflow_airflow.scripts import (
    APPROVAL_FLAG_TEMPLATE,
    FORCE_TEMPLATE,
    LOGICAL_DATE_TEMPLATE,
    RUN_FORM_TEMPLATE,
    TRIGGER_TEMPLATE,
    local_script,
)

MONITOR_STAGE = "monitor"
FIRST_STAGE = STAGES[0].name
# a scheduled run that starts later than this after it was due is not run (a paused DAG was
# unpaused): see recflow_airflow.operators.past_due
LATE_GRACE = dt.timedelta(hours=1)
# a deploy task after an approval: its upstream are the approval and the previous deploy; it
# runs when none failed and one succeeded, so a skipped approval (not required) lets it run and
# a skipped previous deploy (skip_deploy, which skips the approval too) does not
AFTER_APPROVAL = "none_failed_min_one_success"


def base_env() -> dict[str, str]:
    """Variables every local task adds to the worker's environment: GX analytics off.

    ``PATH`` is not among them: the script puts the interpreter's folder first when it runs
    (``recflow_airflow.scripts.interpreter_line``).

    Returns:
        Variables for an operator's ``env`` (used with ``append_env=True``).
    """
    return {"GX_ANALYTICS_ENABLED": "false"}


def task_env(spec: StageSpec | None = None) -> dict[str, str]:
    """Environment added to a chain task's own: the run's date and trigger, and what the task
    reads of the run's form (the whole form for the first task, the approval flag for a
    deploy task, the force flag for a forceable stage).

    ``RECFLOW_TRIGGER`` is the reason of the drift event that started the run, as JSON text,
    or empty for a scheduled or manual run. The DAG must pass
    ``recflow_airflow.monitoring.TEMPLATE_FILTERS`` and ``recflow_airflow.form.FORM_FILTERS``
    as its ``user_defined_filters``.

    Args:
        spec: The stage; None: the variables every chain task has.

    Returns:
        Variables for the operator's ``env`` (used with ``append_env=True``), as templates.
    """
    env = {**base_env(), LOGICAL_DATE_ENV: LOGICAL_DATE_TEMPLATE, TRIGGER_ENV: TRIGGER_TEMPLATE}
    if spec is not None and spec.name == FIRST_STAGE:
        env[RUN_FORM_ENV] = RUN_FORM_TEMPLATE
    if spec is not None and spec.name == DEPLOY_STAGE:
        env[APPROVAL_FLAG_ENV] = APPROVAL_FLAG_TEMPLATE
    if spec is not None and spec.forceable:
        env[FORCE_ENV] = FORCE_TEMPLATE
    return env


def stage_task(
    name: str,
    params: Params,
    root: Path,
    *,
    task_id: str | None = None,
    stage_args: tuple[str, ...] | None = None,
    **operator_args: Any,
) -> StageOperator:
    """Build the task for stage ``name``.

    Args:
        name: The stage's name in the stage table (``pipelines.stages.table.STAGES``).
        params: The project's params.
        root: The project root; local tasks run there.
        task_id: The task's id; None: the stage's name.
        stage_args: The stage's arguments where they differ from the table's.
        **operator_args: Further operator arguments (``trigger_rule`` ...).

    Returns:
        A :class:`StageOperator`. Retries, timeouts and the failure alert come from the DAG's
        default args; a stage whose failure is a verdict gets no retries.
    """
    spec = stage(name)
    if stage_args is not None:
        spec = dataclasses.replace(spec, args=stage_args)
    overrides: dict[str, Any] = {"retries": 0} if spec.deterministic_failure else {}
    overrides.update(operator_args)
    return StageOperator(
        task_id=task_id or spec.name,
        stage_name=spec.name,
        stage_args=stage_args,
        skip_when=SKIP_DEPLOY if spec.name == DEPLOY_STAGE else None,
        late_grace=LATE_GRACE if spec.name == FIRST_STAGE else None,
        bash_command=local_script(spec, params),
        cwd=str(root),
        env=task_env(spec),
        append_env=True,
        **overrides,
    )


def chain_tasks(params: Params, root: Path) -> dict[str, BaseOperator]:
    """Every task of the chain in the DAG being defined, with its edges.

    The ``deploy`` stage is one task per target of ``deploy.targets``, with an approval
    (``recflow_airflow.approval.RolloutApproval``) before each target after the first. A deploy
    task after an approval runs when the approval succeeded or skipped itself (approval not
    required), and not when the previous deploy task was skipped (``skip_deploy``) or failed.
    Call inside a ``with DAG(...)`` block.

    Args:
        params: The project's params.
        root: The project root.

    Returns:
        Task by task id, in the table's order.
    """
    from recflow_airflow.approval import RolloutApproval

    upstream = chain_upstream(params)
    tasks: dict[str, BaseOperator] = {}
    for index, cloud in enumerate(params.deploy.targets):
        if index:
            tasks[approval_task_id(cloud)] = RolloutApproval(
                task_id=approval_task_id(cloud),
                cloud=cloud,
                project_root=str(root),
                timeout_s=params.deploy.approval_timeout_s,
            )
        after_approval = {"trigger_rule": AFTER_APPROVAL} if index else {}
        tasks[deploy_task_id(cloud)] = stage_task(
            DEPLOY_STAGE,
            params,
            root,
            task_id=deploy_task_id(cloud),
            stage_args=deploy_args(cloud),
            **after_approval,
        )
    for spec in STAGES:
        if spec.name != DEPLOY_STAGE:
            tasks[spec.name] = stage_task(spec.name, params, root)
    ordered = {task_id: tasks[task_id] for task_id in upstream}
    for task_id, before in upstream.items():
        for name in before:
            ordered[name] >> ordered[task_id]
    return ordered


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
                bash_command=local_script(spec, params),
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
    from recflow_airflow.scripts import stage_script

    container["command"] = ["bash", "-c", stage_script(spec, params)]
    container["env"] = [{"name": "GX_ANALYTICS_ENABLED", "value": "false"}]
    return KubernetesPodOperator(
        task_id=task_id,
        pod_template_dict=pod,
        namespace=params.execution.namespace,
        get_logs=True,
        on_finish_action="delete_pod",
    )
