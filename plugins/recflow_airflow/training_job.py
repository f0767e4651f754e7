"""Multi-node training on Kubernetes: an Indexed Job of torchrun pods and its headless Service.

Each of the ``nodes`` pods runs ``torchrun`` with ``nproc_per_node`` workers. The pods find each
other through c10d rendezvous on the first pod, reached by its stable DNS name: an Indexed Job
gives pod ``i`` the hostname ``<job>-<i>``, and a headless Service of the same name as the
pods' ``subdomain`` makes ``<job>-0.<service>`` resolvable. The workspace volume (a checkout of
the project with its DVC cache, ``ReadWriteMany``) is shared by all pods, so the prepared data
is read from it and rank 0 writes checkpoints and the model to it; a restarted group resumes
from the last checkpoint there.

Everything here is plain data, rendered from ``params.yaml`` and checked against the
Kubernetes schema in tests, without a cluster. Only the tests call the renderer so far: no task
of the DAG applies these manifests yet (the ``train`` task runs torchrun on one node, locally or
in its stage pod), and wiring it in is still to come.
"""

from __future__ import annotations

import shlex
from typing import Any

from pipelines.core.params import Params
from pipelines.stages.table import stage
from recflow_airflow.pods import gpu_resources, labels, security_context, workspace_volume

JOB_NAME = "recflow-train"
# the train stage's module and arguments from the stage table (its launcher, torchrun on one
# node, is replaced by the multi-node torchrun below)
TRAIN_ARGS = ("-m", stage("train").module, *stage("train").args)


def rendezvous_endpoint(params: Params, job_name: str = JOB_NAME) -> str:
    """``host:port`` of the c10d rendezvous: the first pod of the job, through the Service."""
    topology = params.execution.training
    return f"{job_name}-0.{job_name}:{topology.rdzv_port}"


def torchrun_command(params: Params, job_name: str = JOB_NAME) -> list[str]:
    """The container command: torchrun over all pods, then the trainer's own arguments."""
    topology = params.execution.training
    return [
        "torchrun",
        f"--nnodes={topology.nodes}",
        f"--nproc_per_node={topology.nproc_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={rendezvous_endpoint(params, job_name)}",
        f"--rdzv_id={job_name}",
        f"--max_restarts={topology.max_restarts}",
        *TRAIN_ARGS,
    ]


def render_service(params: Params, job_name: str = JOB_NAME) -> dict[str, Any]:
    """The headless Service that gives every training pod a stable DNS name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job_name,
            "namespace": params.execution.namespace,
            "labels": labels(job_name),
        },
        "spec": {
            "clusterIP": "None",
            # rendezvous must resolve before the pods report ready
            "publishNotReadyAddresses": True,
            "selector": labels(job_name),
            "ports": [
                {
                    "name": "rendezvous",
                    "port": params.execution.training.rdzv_port,
                    "targetPort": params.execution.training.rdzv_port,
                }
            ],
        },
    }


def render_job(params: Params, job_name: str = JOB_NAME) -> dict[str, Any]:
    """The Indexed Job: one pod per node, torchrun in each, GPUs and the shared workspace."""
    execution = params.execution
    topology = execution.training
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": topology.cpu, "memory": topology.memory},
        "limits": {"cpu": topology.cpu, "memory": topology.memory},
    }
    resources = gpu_resources(resources, topology.gpus_per_node)
    command = torchrun_command(params, job_name)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": execution.namespace,
            "labels": labels(job_name),
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": topology.nodes,
            "parallelism": topology.nodes,
            # torchrun restarts the worker group itself; a pod that still fails is retried
            # by the Job, and the new pod resumes from the last checkpoint on the workspace
            "backoffLimit": max(1, topology.nodes),
            "template": {
                "metadata": {"labels": labels(job_name)},
                "spec": {
                    "subdomain": job_name,
                    "restartPolicy": "Never",
                    "serviceAccountName": execution.service_account,
                    "securityContext": security_context(),
                    "containers": [
                        {
                            "name": "trainer",
                            "image": execution.image,
                            "imagePullPolicy": "IfNotPresent",
                            "workingDir": execution.workspace_dir,
                            "command": ["bash", "-c", shlex.join(command)],
                            "env": [
                                {"name": "GX_ANALYTICS_ENABLED", "value": "false"},
                                {"name": "NCCL_DEBUG", "value": "WARN"},
                                {"name": "PYTHONUNBUFFERED", "value": "1"},
                            ],
                            "ports": [{"name": "rendezvous", "containerPort": topology.rdzv_port}],
                            "resources": resources,
                            "volumeMounts": [
                                {"name": "workspace", "mountPath": execution.workspace_dir},
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


def render_training_manifests(params: Params, job_name: str = JOB_NAME) -> list[dict[str, Any]]:
    """The Service and the Job, in the order to apply them."""
    return [render_service(params, job_name), render_job(params, job_name)]
