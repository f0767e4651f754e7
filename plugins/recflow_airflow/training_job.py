"""Multi-node training on Kubernetes: an Indexed Job of torchrun pods and its headless Service.

Each of the ``nodes`` pods runs ``torchrun`` with ``nproc_per_node`` workers (the run form's
training processes per node when it gives them). The pods find each
other through c10d rendezvous on the first pod, reached by its stable DNS name: an Indexed Job
gives pod ``i`` the hostname ``<job>-<i>``, and a headless Service named like the pods'
``subdomain`` makes ``<job>-0.<service>`` resolvable. The Job's name is only known once the
operator has given it a unique suffix (one Job per try, so a retry never collides with the Job
of the try before), so the pods read it from their own label ``batch.kubernetes.io/job-name``
(the downward API) instead of having it written into the command.

The workspace volume (a checkout of the project with its DVC cache, ``ReadWriteMany``) is shared
by all pods: the prepared data is read from it, and rank 0 writes checkpoints and the model to
it; a restarted group resumes from the last checkpoint there. Like a local task, the pods ask
DVC first and skip training when the stage is up to date; the first pod records the stage in
``dvc.lock`` afterwards.

Everything here is plain data, rendered from ``params.yaml``; ``recflow_airflow.kubernetes``
turns it into the ``train`` task (the provider's ``KubernetesJobOperator``), and tests validate
what that operator would submit against the Kubernetes schema, without a cluster.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.core.params import Params
from pipelines.core.placement import record_path
from pipelines.stages.table import FORCE_ENV, stage, stage_command
from recflow_airflow.pods import (
    CONTAINER,
    gpu_resources,
    labels,
    run_env,
    security_context,
    workspace_mount,
    workspace_volume,
)

TRAIN_STAGE = "train"
# The Job's name before the operator's suffix, the Service's name and the pods' subdomain.
JOB_NAME = "recflow-train"
SERVICE_NAME = JOB_NAME
# The pods' own Job name (with the suffix), from the label the Job controller gives them.
JOB_NAME_ENV = "RECFLOW_TRAINING_JOB"
# The run form's training processes per node, else params.yaml's
# execution.training.nproc_per_node: rendered by Airflow for the run into the pods' variables.
NPROC_ENV = "RECFLOW_NPROC_PER_NODE"


def nproc_template(params: Params) -> str:
    """The Airflow template of the pods' processes per node (:data:`NPROC_ENV`)."""
    default = params.execution.training.nproc_per_node
    return "{{ params.nproc_per_node or " + str(default) + " }}"


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Set by Kubernetes in every pod of an Indexed Job: 0 .. nodes-1.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
# A finished Job (and its record of which pod failed) stays this long before it is removed.
TTL_AFTER_FINISHED_S = 24 * 3600
# The placement record of this run (``recflow_airflow.kubernetes.TrainingJobOperator.place``),
# JSON; pod 0 writes it where the register step reads it into the version's lineage.
PLACEMENT_ENV = "RECFLOW_PLACEMENT_RECORD"
PLACEMENT_RECORD = record_path(TRAIN_STAGE).as_posix()
# The pods start together and DVC locks the repository for a moment: tries of `dvc status`.
STATUS_ATTEMPTS = 5


def rendezvous_endpoint(params: Params) -> str:
    """``host:port`` of the c10d rendezvous, the first pod of the Job through the Service.

    The host starts with ``$RECFLOW_TRAINING_JOB``, which the pod's shell expands to its Job's
    name.
    """
    return f"${JOB_NAME_ENV}-0.{SERVICE_NAME}:{params.execution.training.rdzv_port}"


def torchrun_launcher(params: Params) -> tuple[str, ...]:
    """torchrun over all pods: what replaces the train stage's one-node launcher."""
    topology = params.execution.training
    return (
        "torchrun",
        f"--nnodes={topology.nodes}",
        # the run form's value when it has one, else params.yaml's (nproc_template)
        f'--nproc_per_node="${NPROC_ENV}"',
        "--rdzv_backend=c10d",
        f'--rdzv_endpoint="{rendezvous_endpoint(params)}"',
        f'--rdzv_id="${JOB_NAME_ENV}"',
        f"--max_restarts={topology.max_restarts}",
    )


def training_command(params: Params) -> str:
    """The train stage's own command line, launched by torchrun over all pods."""
    base = stage(TRAIN_STAGE)
    # the stage's --torchrun starts a one-node torchrun itself: here torchrun spans the pods
    args = tuple(arg for arg in base.args if arg != "--torchrun")
    spec = dataclasses.replace(base, launcher=torchrun_launcher(params), args=args)
    return stage_command(spec, params)


def job_script(params: Params) -> str:
    """The bash script of every training pod: the DVC check, torchrun, and the DVC record.

    The same steps as a local task's script (``recflow_airflow.scripts.stage_script``), for a
    group of pods: each pod asks DVC (they share the workspace, so they get the same answer)
    unless the run's form forces the stage (``$RECFLOW_FORCE``), and only the first pod
    records the stage once its torchrun has finished.
    """
    name = TRAIN_STAGE
    check = [
        f"for attempt in $(seq {STATUS_ATTEMPTS}); do",
        f'  if status="$(python -m dvc status --json {name})"; then break; fi',
        f'  if [ "$attempt" = {STATUS_ATTEMPTS} ]; then exit 1; fi',
        '  sleep "$attempt"',
        "done",
        'if [ "$status" = "{}" ]; then',
        f'  echo "{name} is up to date"',
        "  exit 0",
        "fi",
        f'echo "{name} changed: $status"',
    ]
    return "\n".join(
        [
            "set -euo pipefail",
            f'if [ "${{{FORCE_ENV}:-false}}" = "true" ]; then',
            f"  echo \"{name} forced by the run's form: DVC's up-to-date check is skipped\"",
            "else",
            *(f"  {line}" for line in check),
            "fi",
            training_command(params),
            f'if [ "${COMPLETION_INDEX_ENV}" = "0" ]; then',
            f"  python -m dvc commit --force --quiet {name}",
            # where the Airflow task placed this Job, for the version's lineage (atomically)
            f'  if [ -n "${{{PLACEMENT_ENV}:-}}" ]; then',
            f"    mkdir -p {PLACEMENT_RECORD.rsplit('/', 1)[0]}",
            f'    printf "%s\\n" "${PLACEMENT_ENV}" > {PLACEMENT_RECORD}.tmp',
            f"    mv {PLACEMENT_RECORD}.tmp {PLACEMENT_RECORD}",
            "  fi",
            "fi",
            "",
        ]
    )


def render_service(params: Params) -> dict[str, Any]:
    """The headless Service that gives every training pod a stable DNS name."""
    port = params.execution.training.rdzv_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE_NAME,
            "namespace": params.execution.namespace,
            "labels": labels(JOB_NAME),
        },
        "spec": {
            "clusterIP": "None",
            # rendezvous must resolve before the pods report ready
            "publishNotReadyAddresses": True,
            "selector": labels(JOB_NAME),
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        },
    }


def render_job(params: Params) -> dict[str, Any]:
    """The Indexed Job: one pod per node, torchrun in each, GPUs and the shared workspace."""
    execution = params.execution
    topology = execution.training
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": topology.cpu, "memory": topology.memory},
        "limits": {"cpu": topology.cpu, "memory": topology.memory},
    }
    resources = gpu_resources(resources, topology.gpus_per_node)
    job_name = {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": JOB_NAME,
            "namespace": execution.namespace,
            "labels": labels(JOB_NAME),
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": topology.nodes,
            "parallelism": topology.nodes,
            # torchrun restarts the worker group itself; a pod that still fails is retried
            # by the Job, and the new pod resumes from the last checkpoint on the workspace
            "backoffLimit": max(1, topology.nodes),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "template": {
                "metadata": {"labels": labels(JOB_NAME)},
                "spec": {
                    "subdomain": SERVICE_NAME,
                    "restartPolicy": "Never",
                    "serviceAccountName": execution.service_account,
                    "securityContext": security_context(),
                    "containers": [
                        {
                            "name": CONTAINER,
                            "image": execution.image,
                            "imagePullPolicy": "IfNotPresent",
                            "workingDir": execution.workspace_dir,
                            "command": ["bash", "-c", job_script(params)],
                            "env": [
                                *run_env(),
                                {"name": "NCCL_DEBUG", "value": "WARN"},
                                {"name": "PYTHONUNBUFFERED", "value": "1"},
                                {"name": JOB_NAME_ENV, "valueFrom": job_name},
                                {"name": NPROC_ENV, "value": nproc_template(params)},
                            ],
                            "ports": [{"name": "rendezvous", "containerPort": topology.rdzv_port}],
                            "resources": resources,
                            "volumeMounts": [
                                workspace_mount(params),
                                {"name": "dshm", "mountPath": "/dev/shm"},
                            ],
                        }
                    ],
                    "volumes": [
                        workspace_volume(params),
                        {
                            "name": "dshm",
                            "emptyDir": {"medium": "Memory", "sizeLimit": topology.shm_size},
                        },
                    ],
                },
            },
        },
    }


def render_training_manifests(params: Params) -> list[dict[str, Any]]:
    """The Service and the Job, in the order the ``train`` task creates them."""
    return [render_service(params), render_job(params)]
