"""Stage pods for the ``kubernetes`` backend, built as plain data a test can check offline.

The image supplies the environment; the stage pods share a workspace volume that holds a
checkout of the project (``git clone`` + ``dvc pull``) with its ``dvc.lock`` and DVC cache, so
a stage pod sees exactly what a local task sees: the same commands, the same up-to-date
check, and the same DVC record afterwards. Each pod first writes the run's date into
``params.yaml`` (a no-op when it is already there), then runs the same script as a local task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.config import ConfigError, Params
from recflow_airflow.execution import LOGICAL_DATE_TEMPLATE, stage_script
from recflow_airflow.stages import LOGICAL_DATE_ENV, SET_LOGICAL_DATE, STAGES, StageSpec

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

# The container name KubernetesPodOperator watches for the task's outcome.
CONTAINER = "base"
WORKSPACE_VOLUME = "workspace"
GPU_RESOURCE = "nvidia.com/gpu"
# The image's non-root user (docker/Dockerfile); fsGroup lets it write the data volume.
RUN_AS_USER = 10001


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
    if spec.name in execution.gpu_stages:
        # an extended resource: Kubernetes requires the request to equal the limit
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = "1"
    return {"requests": requests, "limits": limits}


def render_stage_pod(stage: StageSpec, params: Params) -> dict[str, Any]:
    """The pod manifest that runs ``stage``, with the run's date left as an Airflow template.

    Args:
        stage: The stage.
        params: The project's params; ``execution`` gives image, namespace, service account,
            data volume claim, resources and the stages that get a GPU.

    Returns:
        A ``v1/Pod`` manifest as a dict.

    Raises:
        ConfigError: ``execution.gpu_stages`` names a stage that does not exist.
    """
    execution = params.execution
    script = stage_script(stage, params)
    if stage != SET_LOGICAL_DATE:
        script = stage_script(SET_LOGICAL_DATE, params) + script.removeprefix("set -euo pipefail\n")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(stage),
            "namespace": execution.namespace,
            "labels": {
                "app.kubernetes.io/name": "recflow",
                "app.kubernetes.io/component": pod_name(stage).removeprefix("recflow-"),
            },
        },
        "spec": {
            "serviceAccountName": execution.service_account,
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "fsGroup": RUN_AS_USER,
            },
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
                    ],
                    "resources": _resources(stage, params),
                    "volumeMounts": [
                        {
                            "name": WORKSPACE_VOLUME,
                            "mountPath": execution.workspace_dir,
                        }
                    ],
                }
            ],
            "volumes": [
                {
                    "name": WORKSPACE_VOLUME,
                    "persistentVolumeClaim": {"claimName": execution.workspace_volume_claim},
                }
            ],
        },
    }


def stage_pod_operator(
    stage: StageSpec, params: Params, **operator_args: Any
) -> KubernetesPodOperator:
    """A ``KubernetesPodOperator`` that runs ``render_stage_pod(stage, params)``.

    Args:
        stage: The stage; its name is the task id.
        params: The project's params.
        **operator_args: Further operator arguments, e.g. ``retries``.

    Returns:
        The operator. Its pod template is rendered by Airflow per try, which fills in the
        run's date.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(
        task_id=stage.name,
        pod_template_dict=render_stage_pod(stage, params),
        namespace=params.execution.namespace,
        get_logs=True,
        on_finish_action="delete_pod",
        **operator_args,
    )
