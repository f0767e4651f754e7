"""The cluster objects of docker/k8s/ are valid Kubernetes and match what the pods ask for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from recflow_airflow.kubernetes import render_stage_pod
from recflow_airflow.pods import PSEUDONYM_KEY_ITEM
from recflow_airflow.training_job import render_job

from pipelines.core.params import Params
from pipelines.rollout.kubernetes import APP, SECRET, deployment
from pipelines.stages.table import stage

K8S_VERSION = kubernetes_validate.latest_version()


def _objects(project_root: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every object of docker/k8s/, by (kind, namespace, name)."""
    objects: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted((project_root / "docker" / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            meta = document["metadata"]
            objects[(document["kind"], meta.get("namespace", ""), meta["name"])] = document
    return objects


@pytest.fixture(scope="module")
def objects(project_root: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    return _objects(project_root)


def test_every_object_is_valid_kubernetes(objects: dict[Any, dict[str, Any]]) -> None:
    assert objects
    for document in objects.values():
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_kustomization_applies_everything_but_the_secret_templates(project_root: Path) -> None:
    folder = project_root / "docker" / "k8s"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secrets.example.yaml"}


def test_names_match_params(objects: dict[Any, dict[str, Any]], params: Params) -> None:
    execution = params.execution
    namespace = execution.namespace
    assert ("Namespace", "", namespace) in objects
    claim = objects[("PersistentVolumeClaim", namespace, execution.workspace_volume_claim)]
    # the training Job's pods on several nodes share it
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    assert ("ServiceAccount", namespace, execution.service_account) in objects
    for name in (execution.secrets.store_credentials, execution.secrets.pseudonym_key):
        assert ("Secret", namespace, name) in objects


def test_what_the_pods_reference_exists(objects: dict[Any, dict[str, Any]], params: Params) -> None:
    """Service account, claim and secrets of a stage pod, the Job and a serving Deployment."""
    on_k8s = params.model_copy(
        update={"execution": params.execution.model_copy(update={"backend": "kubernetes"})}
    )
    namespace = on_k8s.execution.namespace
    for pod in (render_stage_pod(stage("ingest"), on_k8s)["spec"], render_job(on_k8s)["spec"]):
        spec = pod["template"]["spec"] if "template" in pod else pod
        assert ("ServiceAccount", namespace, spec["serviceAccountName"]) in objects
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", namespace, claim) in objects
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert ("Secret", namespace, source["secretRef"]["name"]) in objects
            for env in container["env"]:
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = objects[("Secret", namespace, ref["name"])]
                    assert ref["key"] == PSEUDONYM_KEY_ITEM and ref["key"] in secret["stringData"]
    serving = deployment(params, "private", "0123456789abcdef")
    serving_ns = serving["metadata"]["namespace"]
    assert ("Namespace", "", serving_ns) in objects
    pod = serving["spec"]["template"]["spec"]
    assert ("ServiceAccount", serving_ns, pod["serviceAccountName"]) == (
        "ServiceAccount",
        serving_ns,
        APP,
    )
    assert ("ServiceAccount", serving_ns, APP) in objects
    tokens = objects[("Secret", serving_ns, SECRET)]
    (container,) = pod["containers"]
    for env in container["env"]:
        assert env["valueFrom"]["secretKeyRef"]["key"] in tokens["stringData"]


def test_secret_templates_hold_no_values(objects: dict[Any, dict[str, Any]]) -> None:
    secrets = [d for (kind, _, _), d in objects.items() if kind == "Secret"]
    assert secrets
    for secret in secrets:
        assert "data" not in secret
        assert all(value == "" for value in secret["stringData"].values()), secret["metadata"]


def test_airflow_may_create_what_the_dag_submits(
    objects: dict[Any, dict[str, Any]], params: Params
) -> None:
    namespace = params.execution.namespace
    role = objects[("Role", namespace, "recflow-airflow")]
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = [
        ("", "pods", "create"), ("", "pods", "watch"), ("", "pods", "delete"),
        ("", "pods/log", "get"), ("batch", "jobs", "create"), ("batch", "jobs", "get"),
        ("", "services", "create"), ("", "services", "patch"),
    ]  # fmt: skip
    assert [n for n in needed if n not in allowed] == []
    binding = objects[("RoleBinding", namespace, "recflow-airflow")]
    assert binding["roleRef"]["name"] == "recflow-airflow"
    (subject,) = binding["subjects"]
    assert ("ServiceAccount", subject["namespace"], subject["name"]) in objects


def test_what_the_deploy_pods_reference_exists(
    objects: dict[Any, dict[str, Any]], params: Params
) -> None:
    """The deploy pods' service account (with a token: they call the API), its Role in the
    serving namespace, and the copy of the serving tokens in their own namespace."""
    import dataclasses

    from pipelines.stages.table import deploy_args

    on_k8s = params.model_copy(
        update={"execution": params.execution.model_copy(update={"backend": "kubernetes"})}
    )
    namespace, serving = on_k8s.execution.namespace, on_k8s.deploy.kubernetes.namespace
    spec = dataclasses.replace(stage("deploy"), args=deploy_args("private"))
    pod = render_stage_pod(spec, on_k8s)["spec"]
    account = objects[("ServiceAccount", namespace, pod["serviceAccountName"])]
    assert account.get("automountServiceAccountToken", True) is True
    binding = objects[("RoleBinding", serving, pod["serviceAccountName"])]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": namespace}
    ]
    assert ("Role", serving, binding["roleRef"]["name"]) in objects
    (container,) = pod["containers"]
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in objects[("Secret", namespace, ref["name"])]["stringData"]
