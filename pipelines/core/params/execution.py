"""Where and when stages run: the ``airflow`` and ``execution`` sections."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from pipelines.core.params.base import Date, Items, StrictModel
from pipelines.core.placement import PlacementConfig


class AirflowConfig(StrictModel):
    """Scheduling of the ``recsys_retrain`` DAG."""

    schedule: str = "0 2 * * *"
    start_date: Date = dt.date(2026, 1, 1)
    retries: int = Field(2, ge=0)
    retry_delay_minutes: float = Field(5.0, ge=0.0)
    # multiplier between successive retry delays (0 = constant delay), capped by the max below
    retry_exponential_backoff: float = Field(2.0, ge=0.0)
    max_retry_delay_minutes: float = Field(60.0, ge=0.0)
    execution_timeout_minutes: float = Field(120.0, gt=0.0)
    tags: Items[str] = ("recflow", "recsys")


class PodResources(StrictModel):
    """CPU and memory of a stage pod, as Kubernetes quantities (``"500m"``, ``"2Gi"``)."""

    cpu: str = "1"
    memory: str = "2Gi"


class PodSecrets(StrictModel):
    """Names of the Kubernetes Secrets the stage pods read (templates in ``docker/k8s/``)."""

    # every key becomes a variable: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or an
    # AIRFLOW_CONN_<ID> a store's `connection` names), RECFLOW_STORE_<NAME>_ENDPOINT_URL
    store_credentials: str = "recflow-store-credentials"
    # its key `pseudonym-key` becomes RECFLOW_PSEUDONYM_KEY
    pseudonym_key: str = "recflow-pseudonym-key"
    # the serving fleets' tokens for the deploy pods: `admin-token` -> RECFLOW_ADMIN_TOKEN,
    # `api-tokens` -> RECFLOW_API_TOKENS (a copy of the serving namespace's Secret)
    serving_tokens: str = "recflow-serving-tokens"


class TrainingTopology(StrictModel):
    """Multi-node training on Kubernetes: an Indexed Job of ``nodes`` pods running torchrun."""

    nodes: int = Field(2, ge=1, le=1024)
    nproc_per_node: int = Field(1, ge=1, le=64)
    gpus_per_node: int = Field(1, ge=0, le=64)
    rdzv_port: int = Field(29400, ge=1024, le=65535)
    max_restarts: int = Field(3, ge=0)
    shm_size: str = "8Gi"
    cpu: str = "8"
    memory: str = "32Gi"


class ExecutionConfig(StrictModel):
    """Where stage commands run: this machine, or pods on Kubernetes."""

    backend: Literal["local", "kubernetes"] = "local"
    namespace: str = "recflow"
    image: str = "recflow:0.1.0"
    service_account: str = "recflow"
    # the deploy pods': it may change the serving Deployments (docker/k8s/rbac.yaml)
    deploy_service_account: str = "recflow-deployer"
    # a volume holding a checkout of the project (git clone + dvc pull) and its DVC cache
    workspace_volume_claim: str = "recflow-workspace"
    # where the workspace volume is mounted in stage pods; the stage commands run there
    workspace_dir: str = "/workspace"
    requests: PodResources = PodResources(cpu="1", memory="2Gi")
    limits: PodResources = PodResources(cpu="2", memory="4Gi")
    gpu_stages: Items[str] = ()
    secrets: PodSecrets = PodSecrets()
    training: TrainingTopology = TrainingTopology()
    # which cloud a GPU task runs in (recflow placement; pipelines/core/placement.py)
    placement: PlacementConfig = PlacementConfig()
