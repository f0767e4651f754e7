"""The multi-node training job renders from params.yaml and passes the Kubernetes schema."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from recflow_airflow.pods import GPU_RESOURCE
from recflow_airflow.scripts import stage_script
from recflow_airflow.training_job import (
    JOB_NAME,
    JOB_NAME_ENV,
    JOB_NAME_LABEL,
    NPROC_ENV,
    PLACEMENT_ENV,
    PLACEMENT_RECORD,
    job_script,
    nproc_template,
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


def _torchrun(job: dict[str, Any]) -> list[str]:
    """The torchrun line of the pods' script, as the shell splits it."""
    lines = _container(job)["command"][2].splitlines()
    (line,) = [line for line in lines if line.startswith("torchrun ")]
    return shlex.split(line)


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
    # an Indexed Job names pod i "<job>-<i>"; rendezvous on pod 0. The Job's name gets a
    # suffix per try, so the pod reads it from its own label (the downward API)
    assert host == f"${JOB_NAME_ENV}-0.{service['metadata']['name']}"
    env = {e["name"]: e for e in _container(job)["env"]}
    field = env[JOB_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == f"metadata.labels['{JOB_NAME_LABEL}']"
    assert int(port) == service["spec"]["ports"][0]["port"] == params.execution.training.rdzv_port
    assert f"--rdzv_endpoint={rendezvous_endpoint(params)}" in _torchrun(job)


@pytest.mark.parametrize(("nodes", "procs", "gpus"), [(1, 1, 0), (2, 1, 1), (4, 8, 8)])
def test_topology_follows_params(params: Params, nodes: int, procs: int, gpus: int) -> None:
    params = _with_topology(params, nodes=nodes, nproc_per_node=procs, gpus_per_node=gpus)
    job = render_job(params)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    container = _container(job)
    argv = _torchrun(job)
    assert argv[0] == "torchrun"
    assert f"--nnodes={nodes}" in argv
    assert f"--nproc_per_node=${NPROC_ENV}" in argv
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (
        env[NPROC_ENV] == nproc_template(params) == "{{ params.nproc_per_node or " + f"{procs} }}}}"
    )
    assert f"--max_restarts={params.execution.training.max_restarts}" in argv
    assert argv[argv.index("-m") + 1] == "pipelines.stages.train"
    limits = container["resources"]["limits"]
    if gpus:
        assert limits[GPU_RESOURCE] == container["resources"]["requests"][GPU_RESOURCE] == str(gpus)
    else:
        assert GPU_RESOURCE not in limits


def test_the_pods_processes_per_node_reach_torchrun(params: Params) -> None:
    """The pods' shell expands the variable Airflow rendered from the run's form (or params)."""
    params = _with_topology(params, nodes=2, nproc_per_node=3, gpus_per_node=0)
    job = render_job(params)
    lines = _container(job)["command"][2].splitlines()
    (line,) = [line for line in lines if line.startswith("torchrun ")]
    # the same line through bash, with printf in torchrun's place: one argument per line
    shown = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + line.removeprefix("torchrun ")],
        env={"PATH": os.environ["PATH"], NPROC_ENV: "5", JOB_NAME_ENV: "recflow-train-x"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "--nproc_per_node=5" in shown
    assert (
        "--rdzv_endpoint=recflow-train-x-0.recflow-train:"
        + str(params.execution.training.rdzv_port)
        in shown
    )


def test_the_job_runs_the_train_stages_own_command(params: Params) -> None:
    """After torchrun's options, the trainer's module and arguments as the DAG and DVC run them."""
    argv = _torchrun(render_job(params))
    local = shlex.split(stage_command(stage("train"), params))
    # locally the stage starts a one-node torchrun itself (--torchrun); the Job's spans the pods
    assert "--torchrun" in local
    assert "--torchrun" not in argv
    expected = [word for word in local[local.index("-m") :] if word != "--torchrun"]
    assert argv[argv.index("-m") :] == expected


def test_pods_check_and_record_the_stage_like_a_local_task(params: Params) -> None:
    """DVC's check (unless the form forces training) in every pod; the record by pod 0 only."""
    script = job_script(params)
    local = stage_script(stage("train"), params).splitlines()
    assert script.startswith("set -euo pipefail\n")
    force = next(line for line in local if "RECFLOW_FORCE" in line)
    assert force in script.splitlines()
    assert 'if status="$(python -m dvc status --json train)"; then break; fi' in script
    lines = script.splitlines()
    commit = "python -m dvc commit --force --quiet train"
    assert commit in local
    index = lines.index(f"  {commit}")
    assert lines[index - 1] == 'if [ "$JOB_COMPLETION_INDEX" = "0" ]; then'
    assert lines.index(next(line for line in lines if line.startswith("torchrun "))) < index


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


def test_pod_zero_writes_the_placement_record_it_was_given(params: Params, tmp_path: Path) -> None:
    """The pods' script hands the Airflow task's placement record to the workspace, whole."""
    lines = job_script(params).splitlines()
    start = next(i for i, line in enumerate(lines) if PLACEMENT_ENV in line and "if [" in line)
    end = start + next(i for i, line in enumerate(lines[start:]) if line.strip() == "fi")
    block = "\n".join(line.strip() for line in lines[start : end + 1])
    record = '{"decision":{"cloud":"private"},"logical_date":"2026-03-02","sha256":"x y"}'
    for value, written in ((record, record + "\n"), ("", None)):
        folder = tmp_path / ("given" if value else "none")
        folder.mkdir()
        subprocess.run(
            ["bash", "-euc", block],
            cwd=folder,
            env={"PATH": os.environ["PATH"], PLACEMENT_ENV: value},
            check=True,
        )
        path = folder / PLACEMENT_RECORD
        assert (path.read_text() if path.exists() else None) == written
        assert not path.with_name(path.name + ".tmp").exists()
