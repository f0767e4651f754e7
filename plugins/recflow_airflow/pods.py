"""What every recflow pod shares: the image's user, the GPU resource, labels, the workspace, and
the secrets it reads from Kubernetes Secrets (never from the manifests or ``params.yaml``)."""

from __future__ import annotations

from typing import Any

from pipelines.core.params import Params
from pipelines.stages.table import (
    APPROVAL_FLAG_ENV,
    FORCE_ENV,
    LOGICAL_DATE_ENV,
    RUN_FORM_ENV,
    TRIGGER_ENV,
)
from recflow_airflow.scripts import (
    APPROVAL_FLAG_TEMPLATE,
    FORCE_TEMPLATE,
    LOGICAL_DATE_TEMPLATE,
    RUN_FORM_TEMPLATE,
    TRIGGER_TEMPLATE,
)

# The extended resource of NVIDIA's device plugin.
GPU_RESOURCE = "nvidia.com/gpu"
# The image's non-root user (docker/Dockerfile); fsGroup lets it write the workspace volume.
RUN_AS_USER = 10001
WORKSPACE_VOLUME = "workspace"
# The container KubernetesPodOperator (and the Job operator, its subclass) watches for the outcome.
CONTAINER = "base"
# The variable the servers and the monitor read the pseudonymization key from
# (pipelines.serving.server.pseudonyms), and the key of the Secret that holds it.
PSEUDONYM_KEY_ENV = "RECFLOW_PSEUDONYM_KEY"
PSEUDONYM_KEY_ITEM = "pseudonym-key"
# The variables the servers and a deploy pod read the fleets' tokens from
# (pipelines.serving.server.auth), and the keys of the Secret that holds them.
ADMIN_TOKEN_ENV, ADMIN_TOKEN_ITEM = "RECFLOW_ADMIN_TOKEN", "admin-token"
API_TOKENS_ENV, API_TOKENS_ITEM = "RECFLOW_API_TOKENS", "api-tokens"


def labels(component: str) -> dict[str, str]:
    """The labels of a recflow object."""
    return {"app.kubernetes.io/name": "recflow", "app.kubernetes.io/component": component}


def security_context() -> dict[str, Any]:
    """Pod security context: the image's non-root user, which may write the workspace."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "fsGroup": RUN_AS_USER}


def workspace_volume(params: Params) -> dict[str, Any]:
    """The volume holding a checkout of the project and its DVC cache."""
    return {
        "name": WORKSPACE_VOLUME,
        "persistentVolumeClaim": {"claimName": params.execution.workspace_volume_claim},
    }


def workspace_mount(params: Params) -> dict[str, str]:
    """Where a container mounts the workspace: its working directory."""
    return {"name": WORKSPACE_VOLUME, "mountPath": params.execution.workspace_dir}


# What a local task's environment tells its script about the run, as Airflow templates: the
# run's date, trigger form, trigger, approval flag and force flag, and the ``AIRFLOW_CTX_*``
# variables a BashOperator exports (the register command records them in the lineage).
RUN_ENV = {
    LOGICAL_DATE_ENV: LOGICAL_DATE_TEMPLATE,
    RUN_FORM_ENV: RUN_FORM_TEMPLATE,
    TRIGGER_ENV: TRIGGER_TEMPLATE,
    APPROVAL_FLAG_ENV: APPROVAL_FLAG_TEMPLATE,
    FORCE_ENV: FORCE_TEMPLATE,
    "AIRFLOW_CTX_DAG_ID": "{{ dag.dag_id }}",
    "AIRFLOW_CTX_TASK_ID": "{{ ti.task_id }}",
    "AIRFLOW_CTX_DAG_RUN_ID": "{{ run_id }}",
    "AIRFLOW_CTX_TRY_NUMBER": "{{ ti.try_number }}",
    "AIRFLOW_CTX_LOGICAL_DATE": (
        "{{ dag_run.logical_date.isoformat() if dag_run.logical_date else '' }}"
    ),
}


def run_env() -> list[dict[str, str]]:
    """A container's variables: GX analytics off, and :data:`RUN_ENV` (rendered per try)."""
    return [
        {"name": "GX_ANALYTICS_ENABLED", "value": "false"},
        *({"name": name, "value": value} for name, value in RUN_ENV.items()),
    ]


def secret_env(params: Params) -> list[dict[str, Any]]:
    """The pseudonymization key, from its Secret, as ``RECFLOW_PSEUDONYM_KEY``."""
    ref = {"name": params.execution.secrets.pseudonym_key, "key": PSEUDONYM_KEY_ITEM}
    return [{"name": PSEUDONYM_KEY_ENV, "valueFrom": {"secretKeyRef": ref}}]


def serving_token_env(params: Params) -> list[dict[str, Any]]:
    """The serving fleets' tokens, from their Secret: what a deploy pod drives the fleets with
    (``pipelines.rollout.cluster.tokens_from_env``)."""
    name = params.execution.secrets.serving_tokens
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
        for env, key in ((ADMIN_TOKEN_ENV, ADMIN_TOKEN_ITEM), (API_TOKENS_ENV, API_TOKENS_ITEM))
    ]


def secret_env_from(params: Params) -> list[dict[str, Any]]:
    """The object stores' credentials: every key of their Secret becomes a variable.

    The Secret holds what ``pipelines.registry.stores.credentials`` reads from the environment:
    ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, or an ``AIRFLOW_CONN_<ID>`` a store's
    ``connection`` names, and optionally ``RECFLOW_STORE_<NAME>_ENDPOINT_URL``.
    """
    return [{"secretRef": {"name": params.execution.secrets.store_credentials}}]


def gpu_resources(resources: dict[str, dict[str, str]], count: int) -> dict[str, dict[str, str]]:
    """``resources`` with ``count`` GPUs; an extended resource's request must equal its limit."""
    if count:
        resources["requests"][GPU_RESOURCE] = resources["limits"][GPU_RESOURCE] = str(count)
    return resources
