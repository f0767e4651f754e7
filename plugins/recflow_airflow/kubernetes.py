"""The ``kubernetes`` backend: each stage a pod of the project's image, training a multi-node Job.

The image supplies the environment; the pods share a workspace volume that holds a checkout of
the project (``git clone`` + ``dvc pull``) with its ``dvc.lock`` and DVC cache, so a stage pod
sees exactly what a local task sees: the same script around the same command, the same
up-to-date check, the same DVC record afterwards, and the run's values, which the first task
writes into the workspace for every later one. Secrets come from Kubernetes Secrets named in
``execution.secrets``: the object stores' credentials (every key of their Secret becomes a
variable) and the pseudonymization key.

:func:`stage_pod_operator` builds the provider's operators: a ``KubernetesPodOperator`` per
stage, and for ``train`` a :class:`TrainingJobOperator`, the provider's
``KubernetesJobOperator`` that first creates the Job's headless Service
(``recflow_airflow.training_job``). This module imports the Kubernetes provider and client, so
only a DAG on this backend imports it.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import ApiClient, V1EnvVar, V1Service
from kubernetes.client.exceptions import ApiException

from pipelines.core.params import ConfigError, Params
from pipelines.stages.table import DEPLOY_STAGE, STAGES, StageSpec
from recflow_airflow.pods import (
    CONTAINER,
    gpu_resources,
    labels,
    run_env,
    secret_env,
    secret_env_from,
    security_context,
    serving_token_env,
    workspace_mount,
    workspace_volume,
)
from recflow_airflow.scripts import stage_script
from recflow_airflow.training_job import PLACEMENT_ENV, TRAIN_STAGE, render_job, render_service

__all__ = [
    "CONTAINER",
    "TrainingJobOperator",
    "pod_name",
    "render_stage_pod",
    "stage_pod_operator",
    "training_job_operator",
]


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
    gpus = 1 if spec.name in execution.gpu_stages else 0
    return gpu_resources({"requests": requests, "limits": limits}, gpus)


def render_stage_pod(stage_spec: StageSpec, params: Params) -> dict[str, Any]:
    """The pod manifest that runs ``stage``, with the run's date left as an Airflow template.

    Args:
        stage_spec: The stage.
        params: The project's params; ``execution`` gives image, namespace, service account,
            data volume claim, resources, the stages that get a GPU, and the Secrets.

    Returns:
        A ``v1/Pod`` manifest as a dict.

    A ``deploy`` pod drives the serving Deployments (``recflow deploy --fleets kubernetes``):
    it runs as ``execution.deploy_service_account``, carries the client label the serving
    NetworkPolicy lets in, and reads the fleets' tokens from ``execution.secrets.serving_tokens``.

    Raises:
        ConfigError: ``execution.gpu_stages`` names a stage that does not exist.
    """
    execution = params.execution
    pod_labels = labels(pod_name(stage_spec).removeprefix("recflow-"))
    account, env = execution.service_account, [*run_env(), *secret_env(params)]
    if stage_spec.name == DEPLOY_STAGE:
        stage_spec = dataclasses.replace(
            stage_spec, args=(*stage_spec.args, "--fleets", "kubernetes")
        )
        pod_labels = {**pod_labels, **params.deploy.kubernetes.clients}
        account, env = execution.deploy_service_account, [*env, *serving_token_env(params)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(stage_spec),
            "namespace": execution.namespace,
            "labels": pod_labels,
        },
        "spec": {
            "serviceAccountName": account,
            "restartPolicy": "Never",
            "securityContext": security_context(),
            "containers": [
                {
                    "name": CONTAINER,
                    "image": execution.image,
                    "imagePullPolicy": "IfNotPresent",
                    "workingDir": execution.workspace_dir,
                    "command": ["bash", "-c", stage_script(stage_spec, params)],
                    "env": env,
                    "envFrom": secret_env_from(params),
                    "resources": _resources(stage_spec, params),
                    "volumeMounts": [workspace_mount(params)],
                }
            ],
            "volumes": [workspace_volume(params)],
        },
    }


class TrainingJobOperator(KubernetesJobOperator):
    """The provider's Job operator, which places the Job and makes sure its Service exists.

    Before it submits anything, the task decides where the Job runs under the placement policy
    (``execution.placement``, :meth:`place`: the private cloud when it has the GPUs before the
    deadline, a burst to the public one otherwise, never a cloud that may not read the
    training data): the Job and its Service go to the chosen cloud's Kubernetes context and
    namespace, the decision is logged, and pod 0 writes its record to the workspace after
    training, where the register step copies it, checked, into the version's lineage. A
    refusal (no cloud may run it) fails the task with the reason, submitting nothing.

    The Service (``recflow_airflow.training_job.render_service``) does not depend on the run:
    it is created once, brought up to date from ``params.yaml`` when it differs, and kept for
    the next run.

    Args:
        service: The Service manifest.
        project_params: The project's params (the placement policy); None: no placement, the
            operator's own context and namespace.
        **kwargs: ``KubernetesJobOperator``'s arguments.
    """

    def __init__(
        self, *, service: dict[str, Any], project_params: Params | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.project_params = project_params

    def build_service_request_obj(self) -> V1Service:
        """The Service this task creates, as the Kubernetes client sends it."""
        response = SimpleNamespace(data=json.dumps(self.service))
        service: V1Service = ApiClient().deserialize(response, "V1Service")
        return service

    def place(self, context: Any) -> dict[str, Any] | None:
        """Decide where the Job runs, and point this task's Job and Service there.

        Returns:
            The decision's record (``pipelines.core.placement.decision_record``) for the run's
            data date, also handed to the pods as ``$RECFLOW_PLACEMENT_RECORD``; None without
            ``project_params``.

        Raises:
            PlacementRefused: No cloud may run the task (nothing is submitted).
        """
        if self.project_params is None:
            return None
        from pipelines.core.placement import decision_record
        from pipelines.core.placing import place
        from recflow_airflow.form import data_date

        decision = place(self.project_params, TRAIN_STAGE)
        record = decision_record(decision, data_date(context["dag_run"]))
        self.cluster_context = decision.context
        self.namespace = decision.namespace
        self.service = {
            **self.service,
            "metadata": {**self.service["metadata"], "namespace": decision.namespace},
        }
        value = json.dumps(record, sort_keys=True, separators=(",", ":"))
        # KubernetesPodOperator keeps its variables as V1EnvVar objects
        kept = [e for e in self.env_vars or [] if getattr(e, "name", None) != PLACEMENT_ENV]
        self.env_vars = [*kept, V1EnvVar(name=PLACEMENT_ENV, value=value)]
        return record

    def execute(self, context: Any) -> Any:
        self.place(context)
        service = self.build_service_request_obj()
        name, namespace = service.metadata.name, service.metadata.namespace
        api = self.hook.core_v1_client
        try:
            api.create_namespaced_service(namespace=namespace, body=service)
            self.log.info("Created Service %s/%s", namespace, name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            api.patch_namespaced_service(name=name, namespace=namespace, body=service)
            self.log.info("Service %s/%s exists; brought up to date", namespace, name)
        return super().execute(context)


def training_job_operator(params: Params, **operator_args: Any) -> TrainingJobOperator:
    """The ``train`` task: the Indexed Job and Service of ``recflow_airflow.training_job``.

    Args:
        params: The project's params; ``execution.training`` gives the topology.
        **operator_args: Further operator arguments, which win over the ones set here.

    Returns:
        The operator. It waits for the Job to finish and fetches its pods' logs; a try's Job
        has a name of its own (the operator's random suffix).
    """
    job = render_job(params)
    spec, template = job["spec"], job["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", **template}
    pod["metadata"] = {**template["metadata"], "name": job["metadata"]["name"]}
    arguments: dict[str, Any] = {
        "task_id": TRAIN_STAGE,
        "service": render_service(params),
        "project_params": params,
        "name": job["metadata"]["name"],
        "namespace": job["metadata"]["namespace"],
        "labels": job["metadata"]["labels"],
        "pod_template_dict": pod,
        "base_container_name": CONTAINER,
        "completion_mode": spec["completionMode"],
        "completions": spec["completions"],
        "parallelism": spec["parallelism"],
        "backoff_limit": spec["backoffLimit"],
        "ttl_seconds_after_finished": spec["ttlSecondsAfterFinished"],
        "wait_until_job_complete": True,
        "get_logs": True,
        # a failed pod stays for `kubectl logs`; the Job's TTL removes it with the Job
        "on_finish_action": "delete_succeeded_pod",
    }
    return TrainingJobOperator(**{**arguments, **operator_args})


def stage_pod_operator(
    stage_spec: StageSpec, params: Params, **operator_args: Any
) -> KubernetesPodOperator:
    """The task that runs ``stage_spec`` on Kubernetes: the Job for ``train``, else a pod.

    Works inside a ``with DAG(...)`` block (the operator becomes a task of that DAG) and
    outside one (a standalone operator, e.g. built by another operator at run time, which then
    renders its templates with its own DAG's environment:
    ``op.render_template_fields(context, jinja_env=dag.get_template_env())``).

    Args:
        stage_spec: The stage; its name is the task id.
        params: The project's params.
        **operator_args: Further operator arguments, e.g. ``retries`` or ``env_vars`` (added
            to the container's environment); they win over the ones set here.

    Returns:
        A ``KubernetesPodOperator`` running ``render_stage_pod(stage_spec, params)``, or for
        ``train`` the :class:`TrainingJobOperator` (a subclass of it). Airflow renders the pod
        template per try, which fills in the run's date.
    """
    if stage_spec.name == TRAIN_STAGE:
        return training_job_operator(params, **operator_args)
    arguments: dict[str, Any] = {
        "task_id": stage_spec.name,
        "pod_template_dict": render_stage_pod(stage_spec, params),
        "namespace": params.execution.namespace,
        "base_container_name": CONTAINER,
        "get_logs": True,
        "on_finish_action": "delete_pod",
    }
    return KubernetesPodOperator(**{**arguments, **operator_args})
