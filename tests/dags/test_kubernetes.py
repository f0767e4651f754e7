"""Stage pods for the kubernetes backend, rendered and schema-checked without a cluster."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from recflow_airflow.kubernetes import render_stage_pod, stage_pod_operator
from recflow_airflow.pods import GPU_RESOURCE, PSEUDONYM_KEY_ENV, PSEUDONYM_KEY_ITEM, RUN_ENV
from recflow_airflow.scripts import LOGICAL_DATE_TEMPLATE, stage_script

from pipelines.core.params import ConfigError, Params
from pipelines.stages.table import LOGICAL_DATE_ENV, STAGES, stage, stage_command

K8S_VERSION = kubernetes_validate.latest_version()


def _on_kubernetes(params: Params, **execution: Any) -> Params:
    updated = params.execution.model_copy(update={"backend": "kubernetes", **execution})
    return params.model_copy(update={"execution": updated})


@pytest.mark.parametrize("name", [spec.name for spec in STAGES])
def test_every_stage_pod_is_a_valid_pod(name: str, params: Params) -> None:
    pod = render_stage_pod(stage(name), _on_kubernetes(params))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def _misspell_restart_policy(pod: dict[str, Any]) -> None:
    pod["spec"]["restartPolcy"] = pod["spec"].pop("restartPolicy")


def _command_as_text(pod: dict[str, Any]) -> None:
    container = pod["spec"]["containers"][0]
    container["command"] = " ".join(container["command"])


@pytest.mark.parametrize("breakage", [_misspell_restart_policy, _command_as_text])
def test_schema_check_rejects_a_broken_pod(breakage: Any, params: Params) -> None:
    pod = copy.deepcopy(render_stage_pod(stage("ingest"), _on_kubernetes(params)))
    breakage(pod)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_pod_runs_the_stage_with_the_project_settings(params: Params) -> None:
    on_k8s = _on_kubernetes(params, namespace="ml", image="registry/recflow:1.2.3")
    spec = stage("validate")
    pod = render_stage_pod(spec, on_k8s)
    execution = on_k8s.execution
    (container,) = pod["spec"]["containers"]

    assert pod["metadata"]["namespace"] == "ml"
    assert pod["metadata"]["name"] == "recflow-validate"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["serviceAccountName"] == execution.service_account
    assert container["image"] == "registry/recflow:1.2.3"
    assert container["workingDir"] == execution.workspace_dir

    shell, flag, script = container["command"]
    assert (shell, flag) == ("bash", "-c")
    # the same script as a local task: the run's values are in the shared workspace already,
    # written there by the first task's pod
    assert script == stage_script(spec, on_k8s)
    assert stage_command(spec, on_k8s) in script.splitlines()
    assert script.splitlines()[-1] == "python -m dvc commit --force --quiet validate"

    assert {"name": LOGICAL_DATE_ENV, "value": LOGICAL_DATE_TEMPLATE} in container["env"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == execution.workspace_dir
    (volume,) = pod["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == execution.workspace_volume_claim
    assert container["resources"] == {
        "requests": {"cpu": execution.requests.cpu, "memory": execution.requests.memory},
        "limits": {"cpu": execution.limits.cpu, "memory": execution.limits.memory},
    }


def test_gpu_only_for_the_stages_that_ask(params: Params) -> None:
    on_k8s = _on_kubernetes(params, gpu_stages=("prepare",))
    gpu_pod = render_stage_pod(stage("prepare"), on_k8s)
    kubernetes_validate.validate(gpu_pod, K8S_VERSION, strict=True)
    resources = gpu_pod["spec"]["containers"][0]["resources"]
    assert resources["limits"][GPU_RESOURCE] == "1"
    assert resources["requests"][GPU_RESOURCE] == resources["limits"][GPU_RESOURCE]

    cpu_pod = render_stage_pod(stage("ingest"), on_k8s)
    cpu_resources = cpu_pod["spec"]["containers"][0]["resources"]
    assert GPU_RESOURCE not in cpu_resources["limits"]
    assert GPU_RESOURCE not in cpu_resources["requests"]


def test_gpu_for_an_unknown_stage_is_an_error(params: Params) -> None:
    with pytest.raises(ConfigError, match=r"execution\.gpu_stages names unknown stages: trian"):
        render_stage_pod(stage("prepare"), _on_kubernetes(params, gpu_stages=("trian",)))


def _image_user(project_root: Path) -> int:
    """The numeric user the image runs as (``USER`` in the Dockerfile)."""
    text = (project_root / "docker" / "Dockerfile").read_text(encoding="utf-8")
    (user,) = set(re.findall(r"^USER\s+(\d+)\s*$", text, re.MULTILINE))
    return int(user)


def test_secrets_come_from_kubernetes_secrets_by_name(params: Params) -> None:
    from pipelines.serving.server.pseudonyms import PSEUDONYM_KEY_ENV as SERVED_KEY_ENV

    on_k8s = _on_kubernetes(params)
    names = on_k8s.execution.secrets
    (container,) = render_stage_pod(stage("register"), on_k8s)["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": names.store_credentials}}]
    env = {e["name"]: e for e in container["env"]}
    assert PSEUDONYM_KEY_ENV == SERVED_KEY_ENV
    assert env[PSEUDONYM_KEY_ENV] == {
        "name": PSEUDONYM_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": names.pseudonym_key, "key": PSEUDONYM_KEY_ITEM}},
    }
    # nothing else reaches the pod from outside the templates Airflow renders
    assert {e["name"] for e in container["env"]} == {
        "GX_ANALYTICS_ENABLED",
        *RUN_ENV,
        PSEUDONYM_KEY_ENV,
    }


def test_factory_builds_the_providers_operators(params: Params, project_root: Path) -> None:
    from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import DAG

    resources = type(params.execution.requests)
    on_k8s = _on_kubernetes(
        params,
        image="registry.example/recflow:2.0.0",
        gpu_stages=("prepare",),
        requests=resources(cpu="500m", memory="1Gi"),
        limits=resources(cpu="3", memory="6Gi"),
    )
    execution = on_k8s.execution
    with DAG(dag_id="recsys_retrain_k8s_probe", schedule=None) as dag:
        gpu_task = stage_pod_operator(stage("prepare"), on_k8s)
        cpu_task = stage_pod_operator(stage("ingest"), on_k8s, retries=0)
        train_task = stage_pod_operator(stage("train"), on_k8s)

    assert isinstance(gpu_task, KubernetesPodOperator)
    assert not isinstance(gpu_task, KubernetesJobOperator)
    assert isinstance(train_task, KubernetesJobOperator)
    assert set(dag.task_ids) == {"prepare", "ingest", "train"}
    assert cpu_task.retries == 0
    for task, name in ((gpu_task, "prepare"), (cpu_task, "ingest")):
        pod = task.pod_template_dict
        (container,) = pod["spec"]["containers"]
        assert container["image"] == "registry.example/recflow:2.0.0"
        # bash runs the stage's script: the DVC check, the stage's own command, the DVC record
        shell, flag, script = container["command"]
        assert (shell, flag) == ("bash", "-c")
        assert script.startswith("set -euo pipefail\n")
        assert f"python -m pipelines.stages.{name} --params params.yaml" in script
        assert f'status="$(python -m dvc status --json {name})"' in script
        assert script.rstrip().endswith(f"python -m dvc commit --force --quiet {name}")
        assert container["workingDir"] == execution.workspace_dir
        # the image's non-root user, allowed to write the shared workspace
        assert pod["spec"]["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": _image_user(project_root),
            "fsGroup": _image_user(project_root),
        }
        (volume,) = pod["spec"]["volumes"]
        assert volume["persistentVolumeClaim"] == {"claimName": execution.workspace_volume_claim}
        assert container["volumeMounts"] == [
            {"name": volume["name"], "mountPath": execution.workspace_dir}
        ]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert (requests["cpu"], requests["memory"]) == ("500m", "1Gi")
        assert (limits["cpu"], limits["memory"]) == ("3", "6Gi")

    # one GPU, requested and limited alike, only for the stage listed in gpu_stages
    gpu_resources = gpu_task.pod_template_dict["spec"]["containers"][0]["resources"]
    assert gpu_resources["requests"]["nvidia.com/gpu"] == "1"
    assert gpu_resources["limits"]["nvidia.com/gpu"] == "1"
    cpu_resources = cpu_task.pod_template_dict["spec"]["containers"][0]["resources"]
    assert not any("gpu" in key for key in (*cpu_resources["requests"], *cpu_resources["limits"]))

    # what the operator would submit, built without a cluster
    pod = gpu_task.build_pod_request_obj(dry_run=True)
    (container,) = pod.spec.containers
    assert container.command == gpu_task.pod_template_dict["spec"]["containers"][0]["command"]
    assert container.image == "registry.example/recflow:2.0.0"
    assert pod.metadata.namespace == execution.namespace
    assert pod.metadata.name.startswith("recflow-prepare")
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert pod.spec.security_context.run_as_user == _image_user(project_root)
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == (
        execution.workspace_volume_claim
    )


def test_factory_works_outside_a_dag(params: Params) -> None:
    """Another operator may build the stage's operator when it runs: no DAG is being defined."""
    from airflow.sdk import DAG

    on_k8s = _on_kubernetes(params)
    pod_task = stage_pod_operator(stage("ingest"), on_k8s, task_id="ingest_pod", retries=4)
    job_task = stage_pod_operator(stage("train"), on_k8s)
    assert (pod_task.task_id, pod_task.retries) == ("ingest_pod", 4)
    assert job_task.task_id == "train"
    for task in (pod_task, job_task):
        assert not task.has_dag()
    # and a DAG defined afterwards does not pick them up
    with DAG(dag_id="recsys_retrain_k8s_other", schedule=None) as dag:
        pass
    assert dag.task_ids == []
