"""Stage pods for the ``kubernetes`` backend, built as plain data a test can check offline.

The image supplies the environment; the stage pods share a workspace volume that holds a
checkout of the project (``git clone`` + ``dvc pull``) with its ``dvc.lock`` and DVC cache, so
a stage pod sees exactly what a local task sees: the same commands, the same up-to-date
check, and the same DVC record afterwards. Each pod first writes the run's date into
``params.yaml`` (a no-op when it is already there), then runs the same script as a local task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.core.params import ConfigError, Params
from pipelines.stages.table import LOGICAL_DATE_ENV, STAGES, TRIGGER_ENV, StageSpec, stage
from recflow_airflow.pods import (
    WORKSPACE_VOLUME,
    gpu_resources,
    labels,
    security_context,
    workspace_volume,
)
from recflow_airflow.scripts import LOGICAL_DATE_TEMPLATE, TRIGGER_TEMPLATE, stage_script

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

# The container name KubernetesPodOperator watches for the task's outcome.
CONTAINER = "base"


def pod_name(spec: StageSpec) -> str:
    """A DNS-1123 pod name for the stage (Airflow adds a random suffix per try)."""
    return "recflow-" + spec.name.replace("_", "-")


def _resources(spec: StageSpec, params: Params) -> dict[str, dict[str, str]]:
    execution = params.execution
    unknown = sorted(set(execution.gpu_stages) - {s.name for s in STAGES})
    if unknown:
        raise ConfigError(f"execution.gpu_stages names unknown stages: {', '.join(unknown)}")
    requests = {"cpu": execution.requests.cpu, "memory": execution.requests.memory}
    limits = {"cpu": execution.limits.cpu, "memory": execution.limits.memory}
    gpus = 1 if spec.name in execution.gpu_stages else 0
    return gpu_resources({"requests": requests, "limits": limits}, gpus)


def render_stage_pod(stage_spec: StageSpec, params: Params) -> dict[str, Any]:
    """The pod manifest that runs ``stage``, with the run's date left as an Airflow template.

    Args:
        stage_spec: The stage.
        params: The project's params; ``execution`` gives image, namespace, service account,
            data volume claim, resources and the stages that get a GPU.

    Returns:
        A ``v1/Pod`` manifest as a dict.

    Raises:
        ConfigError: ``execution.gpu_stages`` names a stage that does not exist.
    """
    execution = params.execution
    script = stage_script(stage_spec, params)
    set_date = stage("set_logical_date")
    if stage_spec != set_date:
        script = stage_script(set_date, params) + script.removeprefix("set -euo pipefail\n")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(stage_spec),
            "namespace": execution.namespace,
            "labels": labels(pod_name(stage_spec).removeprefix("recflow-")),
        },
        "spec": {
            "serviceAccountName": execution.service_account,
            "restartPolicy": "Never",
            "securityContext": security_context(),
            "containers": [
                {
                    "name": CONTAINER,
                    "image": execution.image,
                    "imagePullPolicy": "IfNotPresent",
                    "workingDir": execution.workspace_dir,
                    "command": ["bash", "-c", script],
                    "env": [
                        {"name": "GX_ANALYTICS_ENABLED", "value": "false"},
                        {"name": LOGICAL_DATE_ENV, "value": LOGICAL_DATE_TEMPLATE},
                        # what started the run (drift), for the register command's --trigger
                        {"name": TRIGGER_ENV, "value": TRIGGER_TEMPLATE},
                    ],
                    "resources": _resources(stage_spec, params),
                    "volumeMounts": [
                        {
                            "name": WORKSPACE_VOLUME,
                            "mountPath": execution.workspace_dir,
                        }
                    ],
                }
            ],
            "volumes": [workspace_volume(params)],
        },
    }


def stage_pod_operator(
    stage_spec: StageSpec, params: Params, **operator_args: Any
) -> KubernetesPodOperator:
    """A ``KubernetesPodOperator`` that runs ``render_stage_pod(stage_spec, params)``.

    Args:
        stage_spec: The stage; its name is the task id.
        params: The project's params.
        **operator_args: Further operator arguments, e.g. ``retries``.

    Returns:
        The operator. Its pod template is rendered by Airflow per try, which fills in the
        run's date.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(
        task_id=stage_spec.name,
        pod_template_dict=render_stage_pod(stage_spec, params),
        namespace=params.execution.namespace,
        get_logs=True,
        on_finish_action="delete_pod",
        **operator_args,
    )
