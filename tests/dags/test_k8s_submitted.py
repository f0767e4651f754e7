"""Every object the DAGs submit on the kubernetes backend, built by the real operators, offline.

The DAGs are parsed with ``execution.backend: kubernetes`` (a copy of ``params.yaml`` found
through ``RECFLOW_PROJECT_ROOT``). For each task, the operator that would talk to the cluster
(the task itself, or the pod operator a stage task hands the stage to at run time) renders its
templates with the context Airflow gives a task of a run, then builds its request objects
exactly as its ``execute`` does: ``KubernetesPodOperator.build_pod_request_obj``,
``KubernetesJobOperator.build_job_request_obj`` and the Job's headless Service. Each is
serialized by the Kubernetes client (what it would send) and validated against the Kubernetes
schema in strict mode. The serving Deployments come from ``recflow deploy manifests``.

No cluster is contacted: the ``kubernetes_default`` connection points at a kubeconfig of a
cluster that does not exist, which the operators only read.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipelines.core.params import Params, load_params
from pipelines.stages.table import STAGES

K8S_VERSION = kubernetes_validate.latest_version()
RUN_DAG = "recsys_retrain"
MONITOR_DAG = "recsys_drift_monitor"
DATA_DATE = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
    # the current one, and the contexts of the placement policy's clouds (params.yaml)
    "contexts": [
        {"name": name, "context": {"cluster": "nowhere", "user": "nobody"}}
        for name in ("nowhere", "recflow-private", "recflow-public")
    ],
    "current-context": "nowhere",
}


def _kubernetes_params(project_root: Path) -> dict[str, Any]:
    raw = yaml.safe_load((project_root / "params.yaml").read_text(encoding="utf-8"))
    raw["execution"]["backend"] = "kubernetes"
    return raw


@pytest.fixture(scope="module")
def k8s_root(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root whose ``params.yaml`` is the project's with the kubernetes backend."""
    root = tmp_path_factory.mktemp("k8s-project")
    text = yaml.safe_dump(_kubernetes_params(project_root), sort_keys=False)
    (root / "params.yaml").write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def k8s_params(k8s_root: Path) -> Params:
    return load_params(k8s_root / "params.yaml")


@pytest.fixture(scope="module")
def k8s_dagbag(project_root: Path, k8s_root: Path) -> Any:
    """The DAG folder parsed with the kubernetes backend."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECFLOW_PROJECT_ROOT", str(k8s_root))
        bag = DagBag(dag_folder=str(project_root / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag


@pytest.fixture(autouse=True)
def nowhere_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kubernetes_default`` reads a kubeconfig; nothing ever connects to its server."""
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(KUBECONFIG), encoding="utf-8")
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))


def task_context(task: Any, conf: dict[str, Any] | None = None) -> Any:
    """The context Airflow's task runner gives ``task`` in a manual run for ``DATA_DATE``."""
    from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    run_id = f"manual__{DATA_DATE.isoformat()}"
    dag_run = DagRun(
        dag_id=task.dag_id,
        run_id=run_id,
        logical_date=DATA_DATE,
        data_interval_start=DATA_DATE,
        data_interval_end=DATA_DATE,
        run_after=DATA_DATE,
        start_date=DATA_DATE,
        end_date=None,
        run_type="manual",
        state="running",
        conf=conf or {},
        consumed_asset_events=[],
        partition_key=None,
    )
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=task.dag_id,
        run_id=run_id,
        try_number=1,
        map_index=-1,
        dag_version_id=uuid.uuid4(),
        task=task,
        max_tries=task.retries,
        start_date=DATA_DATE,
        _ti_context_from_server=TIRunContext(dag_run=dag_run, max_tries=task.retries),
    )
    return ti.get_template_context()


def submitting_operator(task: Any) -> Any:
    """The operator that talks to the cluster for ``task``; None for a task that does not."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    if isinstance(task, KubernetesPodOperator):
        return task
    pod_operator = getattr(task, "pod_operator", None)
    return pod_operator() if pod_operator is not None else None


def submitted_objects(task: Any, conf: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What ``task`` would send to the cluster in a run, as the Kubernetes client sends it."""
    from kubernetes.client import ApiClient
    from recflow_airflow.kubernetes import TrainingJobOperator

    operator = submitting_operator(task)
    context = task_context(task, conf)
    operator.render_template_fields(context, jinja_env=task.dag.get_template_env())
    if isinstance(operator, TrainingJobOperator):
        built = [operator.build_service_request_obj(), operator.build_job_request_obj(context)]
    else:
        built = [operator.build_pod_request_obj(context)]
    return [ApiClient().sanitize_for_serialization(obj) for obj in built]


def _edges(dag: Any) -> dict[str, set[str]]:
    return {task.task_id: set(task.upstream_task_ids) for task in dag.tasks}


@pytest.mark.parametrize("dag_id", [RUN_DAG, MONITOR_DAG])
def test_kubernetes_mode_has_the_local_tasks_and_edges(
    dag_id: str, dagbag: Any, k8s_dagbag: Any
) -> None:
    local, on_k8s = dagbag.dags[dag_id], k8s_dagbag.dags[dag_id]
    assert [t.task_id for t in on_k8s.topological_sort()] == [
        t.task_id for t in local.topological_sort()
    ]
    assert _edges(on_k8s) == _edges(local)
    on_k8s.check_cycle()


def _pod_tasks(dag: Any) -> Iterator[Any]:
    for task in dag.topological_sort():
        if submitting_operator(task) is not None:
            yield task


def test_every_stage_task_submits_to_the_cluster(k8s_dagbag: Any) -> None:
    """Each task of the stage table, and each monitor task, has an operator for the cluster."""
    chain = {t.task_id for t in _pod_tasks(k8s_dagbag.dags[RUN_DAG])}
    stages = {spec.name for spec in STAGES}
    # every stage is a task of its own, but deploy, which is a task per target
    assert stages - {"deploy"} <= chain
    assert any(task_id.startswith("deploy") for task_id in chain)
    monitors = [t.task_id for t in _pod_tasks(k8s_dagbag.dags[MONITOR_DAG])]
    assert monitors and all(task_id.startswith("monitor") for task_id in monitors)


def _all_pod_tasks(bag: Any) -> list[tuple[str, str]]:
    return [(d, t.task_id) for d in (RUN_DAG, MONITOR_DAG) for t in _pod_tasks(bag.dags[d])]


def test_every_submitted_object_is_valid_kubernetes(k8s_dagbag: Any, k8s_params: Params) -> None:
    execution = k8s_params.execution
    kinds: dict[str, int] = {}
    for dag_id, task_id in _all_pod_tasks(k8s_dagbag):
        task = k8s_dagbag.dags[dag_id].get_task(task_id)
        for obj in submitted_objects(task, {"execution": "kubernetes"}):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
            assert obj["metadata"]["namespace"] == execution.namespace, task_id
            # no template is left unrendered in what goes to the cluster
            assert "{{" not in json.dumps(obj), task_id
    assert kinds["Job"] == 1 and kinds["Service"] == 1
    assert kinds["Pod"] == len(_all_pod_tasks(k8s_dagbag)) - 1


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]
    return spec


def test_pods_get_the_workspace_the_secrets_and_the_run(
    k8s_dagbag: Any, k8s_params: Params
) -> None:
    execution = k8s_params.execution
    dag = k8s_dagbag.dags[RUN_DAG]
    conf = {"execution": "kubernetes", "force_retrain": True}
    for task_id in ("ingest", "train"):
        objects = submitted_objects(dag.get_task(task_id), conf)
        spec = _pod_spec(objects[-1])
        (container,) = spec["containers"]
        assert spec["serviceAccountName"] == execution.service_account
        assert container["image"] == execution.image
        (claim,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert claim["persistentVolumeClaim"]["claimName"] == execution.workspace_volume_claim
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[claim["name"]] == execution.workspace_dir == container["workingDir"]
        env = {e["name"]: e for e in container["env"]}
        # the run's values, rendered by Airflow for this run
        assert env["RECFLOW_LOGICAL_DATE"]["value"] == DATA_DATE.date().isoformat()
        assert env["RECFLOW_FORCE"]["value"] == "true"
        assert env["AIRFLOW_CTX_TASK_ID"]["value"] == task_id
        assert env["AIRFLOW_CTX_DAG_RUN_ID"]["value"].startswith("manual__")
        if task_id == "ingest":
            # secrets by reference, never by value
            ref = env["RECFLOW_PSEUDONYM_KEY"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == execution.secrets.pseudonym_key
            assert container["envFrom"] == [
                {"secretRef": {"name": execution.secrets.store_credentials}}
            ]
            assert container["resources"]["limits"]["memory"] == execution.limits.memory


def test_training_job_is_indexed_torchrun_over_its_headless_service(
    k8s_dagbag: Any, k8s_params: Params
) -> None:
    from recflow_airflow.training_job import JOB_NAME_ENV, JOB_NAME_LABEL, NPROC_ENV

    topology = k8s_params.execution.training
    task = k8s_dagbag.dags[RUN_DAG].get_task("train")
    service, job = submitted_objects(task, {"execution": "kubernetes"})
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == topology.nodes
    pod = spec["template"]
    assert service["spec"]["clusterIP"] == "None"
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    # the Job's pods are found by the labels of this try, as the operator looks for them
    assert pod["metadata"]["labels"]["task_id"] == "train"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    field = env[JOB_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == f"metadata.labels['{JOB_NAME_LABEL}']"
    command = next(line for line in container["command"][2].splitlines() if "torchrun" in line)
    argv = shlex.split(command)
    # pod i of an Indexed Job is "<job>-<i>"; rendezvous on pod 0 through the Service
    endpoint = next(a for a in argv if a.startswith("--rdzv_endpoint="))
    host = f"${JOB_NAME_ENV}-0.{service['metadata']['name']}"
    assert endpoint == f"--rdzv_endpoint={host}:{topology.rdzv_port}"
    assert f"--nnodes={topology.nodes}" in argv and "--rdzv_backend=c10d" in argv
    assert job["metadata"]["name"].startswith("job-recflow-train-")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(topology.gpus_per_node)
    # the form's processes per node reach torchrun through the pods' variables; none: params
    assert env[NPROC_ENV]["value"] == str(topology.nproc_per_node)
    assert f"--nproc_per_node=${NPROC_ENV}" in argv
    _, job = submitted_objects(task, {"execution": "kubernetes", "nproc_per_node": 4})
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in container["env"]}[NPROC_ENV] == "4"


@pytest.mark.parametrize("cloud", ["private", "public"])
def test_serving_deployments_of_deploy_manifests_are_valid(
    cloud: str, project_root: Path, k8s_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / f"{cloud}.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "deploy", "manifests", "--params",
         str(k8s_root / "params.yaml"), "--cloud", cloud, "--version", "0123456789abcdef",
         "--out", str(out)],
        cwd=project_root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    documents = list(yaml.safe_load_all(out.read_text(encoding="utf-8")))
    assert "Deployment" in [d["kind"] for d in documents]
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def _with_placement(params: Params, **changes: Any) -> Params:
    """``params`` with ``execution.placement`` changed: ``free_gpus_<cloud>`` or a top-level key."""
    document = params.execution.placement.model_dump()
    for key, value in changes.items():
        if key.startswith("free_gpus_"):
            document["clouds"][key.removeprefix("free_gpus_")]["free_gpus"] = value
        else:
            document[key] = value
    placement = type(params.execution.placement).model_validate(document)
    execution = params.execution.model_copy(update={"placement": placement})
    return params.model_copy(update={"execution": execution})


def test_the_training_job_goes_where_the_placement_policy_puts_it(
    k8s_dagbag: Any, k8s_params: Params, tmp_path: Path
) -> None:
    """Before submitting, the train task places the Job: the chosen cloud's context and
    namespace for the Job and its Service, and the decision's record for pod 0 to write."""
    from kubernetes.client import ApiClient
    from recflow_airflow.training_job import PLACEMENT_ENV

    from pipelines.core.placement import read_decision

    task = k8s_dagbag.dags[RUN_DAG].get_task("train")
    operator = submitting_operator(task)
    context = task_context(task, {"execution": "kubernetes"})
    operator.render_template_fields(context, jinja_env=task.dag.get_template_env())
    record = operator.place(context)
    private = k8s_params.execution.placement.clouds["private"]
    assert record["decision"]["cloud"] == "private"
    assert record["logical_date"] == DATA_DATE.date().isoformat()
    assert operator.cluster_context == private.context
    service, job = (
        ApiClient().sanitize_for_serialization(obj)
        for obj in (operator.build_service_request_obj(), operator.build_job_request_obj(context))
    )
    assert job["metadata"]["namespace"] == service["metadata"]["namespace"] == private.namespace
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # what pod 0 writes after training is the record the register step reads, checked
    written = tmp_path / "train.json"
    written.write_text(env[PLACEMENT_ENV] + "\n", encoding="utf-8")
    assert read_decision(written, DATA_DATE.date().isoformat()) == record


def test_no_private_capacity_bursts_the_job_to_the_public_cloud_or_refuses(
    k8s_dagbag: Any, k8s_params: Params
) -> None:
    """No free GPUs in the private cloud: with a pseudonymized training set allowed to cross,
    the Job bursts to the public cloud; without, the task refuses and submits nothing."""
    from recflow_airflow.kubernetes import training_job_operator

    from pipelines.core.placement import PlacementRefused

    task = k8s_dagbag.dags[RUN_DAG].get_task("train")
    context = task_context(task, {"execution": "kubernetes"})
    burst = _with_placement(k8s_params, free_gpus_private=0, train_on_public=True)
    operator = training_job_operator(burst)
    record = operator.place(context)
    assert record is not None and record["decision"]["cloud"] == "public"
    public = burst.execution.placement.clouds["public"]
    assert operator.cluster_context == public.context
    refused = training_job_operator(_with_placement(k8s_params, free_gpus_private=0))
    with pytest.raises(PlacementRefused):
        refused.place(context)
    assert refused.cluster_context is None


def test_deploy_pods_drive_the_serving_deployments(k8s_dagbag: Any, k8s_params: Params) -> None:
    from pipelines.rollout.kubernetes import deployment, network_policy

    execution = k8s_params.execution
    dag = k8s_dagbag.dags[RUN_DAG]
    clients = network_policy(k8s_params, "private")["spec"]["ingress"][0]["from"][0]
    # the servers read their tokens under these names and keys of the serving Secret
    (server,) = deployment(k8s_params, "private", "0" * 16)["spec"]["template"]["spec"][
        "containers"
    ]
    served = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"]}
    for cloud in k8s_params.deploy.targets:
        (pod,) = submitted_objects(dag.get_task(f"deploy_{cloud}"), {"execution": "kubernetes"})
        (container,) = pod["spec"]["containers"]
        command = shlex.split(container["command"][-1].splitlines()[-1])
        assert command[command.index("--target") + 1] == cloud
        assert command[command.index("--fleets") + 1] == "kubernetes"
        assert pod["spec"]["serviceAccountName"] == execution.deploy_service_account
        # the serving NetworkPolicy lets the deploy pod reach the servers' admin API
        assert clients["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
        }
        for name in ("RECFLOW_ADMIN_TOKEN", "RECFLOW_API_TOKENS"):
            assert refs[name] == {
                "name": execution.secrets.serving_tokens,
                "key": served[name]["key"],
            }
    # every other stage pod keeps the stage's service account and no serving token
    (ingest,) = submitted_objects(dag.get_task("ingest"), {"execution": "kubernetes"})
    assert ingest["spec"]["serviceAccountName"] == execution.service_account
    assert "RECFLOW_ADMIN_TOKEN" not in {e["name"] for e in ingest["spec"]["containers"][0]["env"]}
