"""The multi-node training job renders from params.yaml and passes the Kubernetes schema."""

from __future__ import annotations

import shlex
from typing import Any

import kubernetes_validate
import pytest
from recflow_airflow.pods import GPU_RESOURCE
from recflow_airflow.training_job import (
    JOB_NAME,
    render_job,
    render_service,
    render_training_manifests,
    rendezvous_endpoint,
)

from pipelines.core.params import Params
from pipelines.stages.table import stage, stage_command

K8S_VERSION = kubernetes_validate.latest_version()


def _with_topology(params: Params, **topology: Any) -> Params:
    training = params.execution.training.model_copy(update=topology)
    execution = params.execution.model_copy(update={"training": training})
    return params.model_copy(update={"execution": execution})


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_manifests_are_valid_kubernetes(params: Params) -> None:
    manifests = render_training_manifests(params)
    assert [m["kind"] for m in manifests] == ["Service", "Job"]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_schema_check_catches_a_broken_job(params: Params) -> None:
    job = render_job(params)
    job["spec"]["completions"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_pods_reach_the_rendezvous_through_the_headless_service(params: Params) -> None:
    job, service = render_job(params), render_service(params)
    pod = job["spec"]["template"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    host, port = rendezvous_endpoint(params).split(":")
    # an Indexed Job names pod i "<job>-<i>"; rendezvous is on pod 0
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(port) == service["spec"]["ports"][0]["port"] == params.execution.training.rdzv_port


@pytest.mark.parametrize(("nodes", "procs", "gpus"), [(1, 1, 0), (2, 1, 1), (4, 8, 8)])
def test_topology_follows_params(params: Params, nodes: int, procs: int, gpus: int) -> None:
    params = _with_topology(params, nodes=nodes, nproc_per_node=procs, gpus_per_node=gpus)
    job = render_job(params)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    container = _container(job)
    argv = shlex.split(container["command"][2])
    assert argv[0] == "torchrun"
    assert f"--nnodes={nodes}" in argv and f"--nproc_per_node={procs}" in argv
    assert f"--max_restarts={params.execution.training.max_restarts}" in argv
    assert argv[argv.index("-m") + 1] == "pipelines.stages.train"
    limits = container["resources"]["limits"]
    if gpus:
        assert limits[GPU_RESOURCE] == container["resources"]["requests"][GPU_RESOURCE] == str(gpus)
    else:
        assert GPU_RESOURCE not in limits


def test_the_job_runs_the_train_stages_own_command(params: Params) -> None:
    """After torchrun's options, the trainer's module and arguments as the DAG and DVC run them."""
    argv = shlex.split(_container(render_job(params))["command"][2])
    local = shlex.split(stage_command(stage("train"), params))
    assert argv[argv.index("-m") :] == local[local.index("-m") :]


def test_workspace_and_shared_memory_are_mounted(params: Params) -> None:
    job = render_job(params)
    container = _container(job)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["workspace"] == params.execution.workspace_dir == container["workingDir"]
    assert mounts["dshm"] == "/dev/shm"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["workspace"]["persistentVolumeClaim"]["claimName"]
    assert claim == params.execution.workspace_volume_claim
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["name"] == JOB_NAME
