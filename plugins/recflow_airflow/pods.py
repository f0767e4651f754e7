"""What every recflow pod shares: the image's user, the GPU resource, labels, the workspace."""

from __future__ import annotations

from typing import Any

from pipelines.core.params import Params

# The extended resource of NVIDIA's device plugin.
GPU_RESOURCE = "nvidia.com/gpu"
# The image's non-root user (docker/Dockerfile); fsGroup lets it write the workspace volume.
RUN_AS_USER = 10001
WORKSPACE_VOLUME = "workspace"


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


def gpu_resources(resources: dict[str, dict[str, str]], count: int) -> dict[str, dict[str, str]]:
    """``resources`` with ``count`` GPUs; an extended resource's request must equal its limit."""
    if count:
        resources["requests"][GPU_RESOURCE] = resources["limits"][GPU_RESOURCE] = str(count)
    return resources
