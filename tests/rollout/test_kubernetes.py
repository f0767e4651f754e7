"""Serving manifests per cloud, rendered from params.yaml and validated offline against the
Kubernetes schema: Deployment (probes, resources, replicas, GPU where asked), Service,
HorizontalPodAutoscaler (autoscaling/v2), PodDisruptionBudget, NetworkPolicy."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipelines.core.params import Params, load_params
from pipelines.rollout.kubernetes import GPU_RESOURCE, SECRET, render_manifests

K8S_VERSION = kubernetes_validate.latest_version()
VERSION = "0123456789abcdef"
KINDS = ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"]


@pytest.fixture
def params(project_root: Path) -> Params:
    return load_params(project_root / "params.yaml")


def _with_gpu(params: Params, cloud: str) -> Params:
    fleets = params.deploy.fleets.model_copy(
        update={cloud: getattr(params.deploy.fleets, cloud).model_copy(update={"gpu": True})}
    )
    return params.model_copy(update={"deploy": params.deploy.model_copy(update={"fleets": fleets})})


@pytest.mark.parametrize("cloud", ["private", "public"])
@pytest.mark.parametrize("gpu", [False, True])
def test_every_manifest_is_valid(cloud: str, gpu: bool, params: Params) -> None:
    manifests = render_manifests(_with_gpu(params, cloud) if gpu else params, cloud, VERSION)
    assert [m["kind"] for m in manifests] == KINDS
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def _deployment(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in manifests if m["kind"] == "Deployment")


def test_the_deployment_serves_the_version_from_its_cloud(params: Params) -> None:
    deployment = _deployment(render_manifests(params, "public", VERSION))
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == params.deploy.kubernetes.image
    args = container["args"]
    assert args[:5] == ["serve", "--cloud", "public", "--version", VERSION]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    assert args[args.index("--workers") + 1] == "2"  # one worker per core of the limit
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secrets == {
        "RECFLOW_API_TOKENS": SECRET,
        "RECFLOW_ADMIN_TOKEN": SECRET,
        "RECFLOW_PSEUDONYM_KEY": SECRET,
    }
    assert GPU_RESOURCE not in container["resources"]["limits"] and "tolerations" not in pod
    gpu = _deployment(render_manifests(_with_gpu(params, "public"), "public", VERSION))
    gpu_pod = gpu["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"][GPU_RESOURCE] == 1
    assert gpu_pod["tolerations"][0]["key"] == GPU_RESOURCE


def test_autoscaling_budget_and_network_policy(params: Params) -> None:
    manifests = {m["kind"]: m for m in render_manifests(params, "private", VERSION)}
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)
    cpu, latency = hpa["spec"]["metrics"]
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert latency["pods"]["metric"]["name"] == "recflow_request_latency_p99_seconds"
    assert latency["pods"]["target"]["averageValue"] == "50m"
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    policy = manifests["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule["from"][0]["podSelector"]["matchLabels"] == {"recflow/client": "true"}
    selector = manifests["Service"]["spec"]["selector"]
    assert selector == manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector == policy["podSelector"]["matchLabels"]


def _no_probe_port(manifests: list[dict[str, Any]]) -> None:
    del _deployment(manifests)["spec"]["template"]["spec"]["containers"][0]["readinessProbe"][
        "httpGet"
    ]["port"]


def _replicas_as_text(manifests: list[dict[str, Any]]) -> None:
    _deployment(manifests)["spec"]["replicas"] = "3"


def _hpa_metric_typo(manifests: list[dict[str, Any]]) -> None:
    manifests[2]["spec"]["metrics"][0]["resource"]["targt"] = {}


@pytest.mark.parametrize("breakage", [_no_probe_port, _replicas_as_text, _hpa_metric_typo])
def test_the_schema_check_rejects_a_broken_manifest(breakage: Any, params: Params) -> None:
    manifests = copy.deepcopy(render_manifests(params, "private", VERSION))
    breakage(manifests)
    with pytest.raises(kubernetes_validate.ValidationError):
        for manifest in manifests:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_manifests_command(project_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "public.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "deploy", "manifests", "--cloud", "public",
         "--version", VERSION, "--out", str(out)],
        cwd=project_root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    documents = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in documents] == KINDS
    bad = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "deploy", "manifests", "--cloud", "public",
         "--version", "../etc"],
        cwd=project_root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "is not a version id" in bad.stderr
