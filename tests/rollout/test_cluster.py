"""Rollouts to the serving Deployments of Kubernetes mode (``recflow deploy --fleets kubernetes``).

No API server runs here: each cloud's cluster is the stand-in of ``cluster_standin.py`` (the
Kubernetes REST API over HTTP for the official client, schema-validated objects, and pods that
are real ``recflow serve`` processes started from the Deployment's own ``args``). The controller
reaches each cluster through a kubeconfig with one context per cloud, as a deploy pod would with
``KUBECONFIG`` set; the tokens come from the environment, as the deploy pod reads its Secret.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipelines.core.errors import InputError
from pipelines.registry import ledger
from pipelines.registry.names import file_key
from pipelines.registry.pseudonyms import served_key
from pipelines.rollout.cluster import (
    ClusterError,
    KubernetesApi,
    ready_pod_urls,
    rollout_problem,
    tokens_from_env,
    with_version,
)
from pipelines.rollout.controller import RolloutFailed, deploy
from pipelines.rollout.processes import free_port
from pipelines.rollout.record import Records
from pipelines.rollout.replay import check_loopback
from tests.rollout.cluster_standin import Cluster, standin_clusters
from tests.rollout.conftest import Project

CONTEXTS = {"private": "recflow-private", "public": "recflow-public"}
NAMESPACE = "recflow-serving"
DEPLOYER = "recflow-deployer"


# ---------------------------------------------------------------------- the rules, on their own
def test_the_version_is_swapped_in_the_servers_args_only() -> None:
    args = ["serve", "--cloud", "private", "--version", "a" * 8, "--port", "8000"]
    assert with_version(args, "b" * 8) == [
        "serve", "--cloud", "private", "--version", "b" * 8, "--port", "8000",
    ]  # fmt: skip
    assert args[4] == "a" * 8  # not changed in place
    with pytest.raises(InputError, match="no --version"):
        with_version(["serve", "--cloud", "private"], "b")


def _status(observed: int, updated: int, available: int, replicas: int) -> dict[str, int]:
    return {
        "observedGeneration": observed,
        "updatedReplicas": updated,
        "availableReplicas": available,
        "replicas": replicas,
    }


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        ({"observedGeneration": 1}, "has not seen the latest change"),
        (_status(2, 1, 2, 2), "1 of 2 replicas updated"),
        (_status(2, 2, 1, 2), "1 of 2 replicas available"),
        (_status(2, 2, 2, 3), "1 old replica"),
        (_status(2, 2, 2, 2), None),
    ],
)
def test_a_deployment_is_rolled_out_only_when_every_replica_is_new_and_available(
    status: dict[str, int], problem: str | None
) -> None:
    deployment = {"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status}
    found = rollout_problem(deployment)
    assert found == problem if problem is None else problem in (found or "")


def test_only_ready_pods_that_are_not_going_away_are_served() -> None:
    def pod(name: str, ip: str | None, ready: bool, deleting: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if deleting:
            metadata["deletionTimestamp"] = "2026-12-07T00:00:00Z"
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        return {"metadata": metadata, "status": {"podIP": ip, "conditions": [condition]}}

    pods = [
        pod("b", "10.0.0.2", True),
        pod("a", "10.0.0.1", True),
        pod("c", "10.0.0.3", False),
        pod("d", None, True),
        pod("e", "10.0.0.5", True, deleting=True),
    ]
    assert ready_pod_urls(pods, 8000) == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]


def test_pod_addresses_are_accepted_only_where_the_cluster_gave_them() -> None:
    with pytest.raises(InputError, match="loopback"):
        check_loopback("http://10.0.0.1:8000")
    assert check_loopback("http://10.0.0.1:8000/", loopback_only=False) == "http://10.0.0.1:8000"
    with pytest.raises(InputError, match="http://host:port"):
        check_loopback("https://10.0.0.1:8000", loopback_only=False)


def test_the_tokens_come_from_the_environment_or_the_deploy_refuses() -> None:
    tokens = tokens_from_env({"RECFLOW_ADMIN_TOKEN": "adm", "RECFLOW_API_TOKENS": " c1 ,c2"})
    assert (tokens.admin, tokens.client) == ("adm", "c1")
    with pytest.raises(InputError, match="RECFLOW_ADMIN_TOKEN and RECFLOW_API_TOKENS"):
        tokens_from_env({"RECFLOW_API_TOKENS": "c1"})


def test_a_context_that_is_nowhere_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match="no kubeconfig context 'recflow-private'"):
        KubernetesApi.connect("recflow-private", NAMESPACE)


# ---------------------------------------------------------------------- rollouts in the clusters
def _deployer_may(project_root: Path) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) the deploy pods' Role grants in docker/k8s/rbac.yaml."""
    documents = yaml.safe_load_all((project_root / "docker" / "k8s" / "rbac.yaml").read_text())
    (role,) = [d for d in documents if d["kind"] == "Role" and d["metadata"]["name"] == DEPLOYER]
    assert role["metadata"]["namespace"] == NAMESPACE
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _asked(method: str, path: str) -> tuple[str, str, str]:
    """(API group, resource, verb) of one request the rollout sent to a cluster."""
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    at = parts.index("namespaces")
    named = len(parts) > at + 3
    verb = {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch"}.get(
        method, method.lower()
    )
    return group, parts[at + 2], verb


def _server_args(cluster: Cluster, cloud: str) -> list[str]:
    deployment = cluster.objects[(NAMESPACE, "deployments", f"recflow-serving-{cloud}")]
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _served(cluster: Cluster, cloud: str, admin: str) -> list[str | None]:
    """The stable version each running pod of ``cloud``'s Deployment reports."""
    name = f"recflow-serving-{cloud}"
    port = int(_server_args(cluster, cloud)[_server_args(cluster, cloud).index("--port") + 1])
    versions = []
    for pod in cluster.pods.get(name, []):
        answer = httpx.get(
            f"http://{pod.ip}:{port}/admin/state",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        answer.raise_for_status()
        versions.append(answer.json()["desired"]["stable"])
    return versions


@pytest.mark.slow
def test_rollouts_create_promote_and_roll_back_the_deployments_of_both_clouds(
    make_project: Any,
    served_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    project_root: Path,
) -> None:
    port = free_port()
    project: Project = make_project(
        {
            "fleets": {
                "private": {"servers": 1, "workers": 1, "replicas": 2},
                "public": {"servers": 1, "workers": 1, "replicas": 1},
            },
            "kubernetes": {
                "namespace": NAMESPACE,
                "port": port,
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
        }
    )
    admin, client = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    secret_env = {
        "RECFLOW_ADMIN_TOKEN": admin,
        "RECFLOW_API_TOKENS": client,
        "RECFLOW_PSEUDONYM_KEY": served_key(project.registry().record),
    }
    v1 = project.version(served_folder, "v1")
    v2 = project.version(served_folder, "v2")
    with standin_clusters(
        tmp_path / "clusters", project.params_file, list(CONTEXTS.values()), secret_env
    ) as (kubeconfig, clusters):
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("RECFLOW_ADMIN_TOKEN", admin)
        monkeypatch.setenv("RECFLOW_API_TOKENS", client)
        private, public = clusters[CONTEXTS["private"]], clusters[CONTEXTS["public"]]

        # a first rollout creates each cloud's objects, serving the first version
        first = deploy(project.context(), v1, fleets="kubernetes")
        assert first.status == "succeeded", first.failure
        for cloud, cluster in (("private", private), ("public", public)):
            kinds = sorted(kind for (_, kind, _) in cluster.objects)
            assert kinds == [
                "deployments", "horizontalpodautoscalers", "networkpolicies",
                "poddisruptionbudgets", "services",
            ]  # fmt: skip
            assert project.production(cloud) == v1
            assert (
                _server_args(cluster, cloud)[_server_args(cluster, cloud).index("--version") + 1]
                == v1
            )
            # the tokens reach the pods from the Secret, never through an object
            assert not {admin, client} & set(json.dumps(list(cluster.objects.values())).split('"'))
        assert _served(private, "private", admin) == [v1, v1]
        assert _served(public, "public", admin) == [v1]

        # the next version: shadow and canary over each pod's admin API in the private cloud,
        # promoted there (the Deployment's version set: its pods roll), then the public replica
        # of it is found corrupted and both clouds go back to the first version
        onnx = project.root / "stores" / "public" / file_key(v2, "optimized/model.onnx")
        onnx.write_bytes(onnx.read_bytes()[:-8] + bytes(8))
        with pytest.raises(RolloutFailed, match=r"public infra failed: .*model\.onnx"):
            deploy(project.context(), v2, fleets="kubernetes")
        # the private pods were replaced twice (v2, then v1 again); the public ones never
        assert _served(private, "private", admin) == [v1, v1]
        assert {pod.generation for pod in private.pods["recflow-serving-private"]} == {3}
        assert _served(public, "public", admin) == [v1]
        assert {pod.generation for pod in public.pods["recflow-serving-public"]} == {1}

    record = Records(project.root / "deploy").load(v2)
    assert record is not None and record.status == "rolled_back"
    private_steps = dict((s["step"], s["outcome"]) for s in record.target("private").steps)
    assert private_steps == {
        "infra": "pass", "shadow": "pass", "canary 10%": "pass", "canary 50%": "pass",
    }  # fmt: skip
    entries = ledger.entries(project.registry().record)
    production = [(e.cloud, e.version) for e in ledger.select(entries, "production")]
    assert production[-2:] == [("private", v2), ("private", v1)]
    assert project.production("private") == v1 and project.production("public") == v1
    patches = [path for method, path in private.requests if method == "PATCH"]
    # promoted to v2, then rolled back to v1: two rolling updates of the private Deployment
    assert len(patches) == 2
    assert not [r for r in public.requests if r[0] == "PATCH"]
    # the deploy pods' Role allows every request the rollouts made, in both clusters
    allowed = _deployer_may(project_root)
    for cluster in (private, public):
        assert {_asked(*r) for r in cluster.requests} <= allowed
    private_args = _server_args(private, "private")
    assert private_args[private_args.index("--version") + 1] == v1
