"""Serving manifests for one cloud's Kubernetes cluster, rendered from ``params.yaml``.

``deploy.kubernetes`` and ``deploy.fleets.<cloud>`` give: a Deployment of ``recflow serve
--cloud <cloud>`` pods (readiness on ``/readyz``, liveness on ``/healthz``, a startup probe for
the model's load, resources, ``replicas``, one ``nvidia.com/gpu`` where ``gpu`` is set, non-root
with a read-only root file system), a Service, a HorizontalPodAutoscaler (``autoscaling/v2``: CPU
utilization, and the p99 request latency as a pods metric that a Prometheus adapter serves), a
PodDisruptionBudget and a NetworkPolicy that lets only client pods and Prometheus reach the
servers. The tokens and the pseudonymization key come from a Secret, never from the manifests.
``tests/rollout/test_kubernetes.py`` validates them against the Kubernetes schema, offline.
"""

from __future__ import annotations

from typing import Any

from pipelines.core.params import Params

APP = "recflow-serving"
SECRET = "recflow-serving-tokens"
RUN_DIR = "/run/recflow"
REQUEST_LOG_DIR = "/var/lib/recflow/requests"
USER_ID = 10001
GPU_RESOURCE = "nvidia.com/gpu"


def fleet_labels(cloud: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "recflow/cloud": cloud}


def server_workers(cpu: str) -> int:
    """Worker processes for a CPU limit: one per whole core (``"2"`` is 2, ``"500m"`` is 1)."""
    if cpu.endswith("m"):
        return max(1, int(cpu[:-1]) // 1000)
    try:
        return max(1, int(float(cpu)))
    except ValueError:
        return 1


def _secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}


def deployment(params: Params, cloud: str, version: str) -> dict[str, Any]:
    """The Deployment of ``cloud``'s servers, serving ``version``."""
    k8s = params.deploy.kubernetes
    fleet = getattr(params.deploy.fleets, cloud)
    name = f"{APP}-{cloud}"
    limits: dict[str, Any] = {"cpu": k8s.limits.cpu, "memory": k8s.limits.memory}
    if fleet.gpu:
        limits[GPU_RESOURCE] = 1
    container: dict[str, Any] = {
        "name": "server",
        "image": k8s.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "serve",
            "--cloud",
            cloud,
            "--version",
            version,
            "--host",
            "0.0.0.0",
            "--port",
            str(k8s.port),
            "--workers",
            str(server_workers(k8s.limits.cpu)),
            "--run-dir",
            RUN_DIR,
            "--request-log-dir",
            REQUEST_LOG_DIR,
        ],
        "ports": [{"name": "http", "containerPort": k8s.port, "protocol": "TCP"}],
        "env": [
            _secret_env("RECFLOW_API_TOKENS", "api-tokens"),
            _secret_env("RECFLOW_ADMIN_TOKEN", "admin-token"),
            _secret_env("RECFLOW_PSEUDONYM_KEY", "pseudonym-key"),
        ],
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": k8s.requests.cpu, "memory": k8s.requests.memory},
            "limits": limits,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "requests", "mountPath": REQUEST_LOG_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod: dict[str, Any] = {
        "serviceAccountName": APP,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 40,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "run", "emptyDir": {}},
            {"name": "requests", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if fleet.gpu:
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": k8s.namespace,
            "labels": {**fleet_labels(cloud), "recflow/version": version},
        },
        "spec": {
            "replicas": fleet.replicas,
            "selector": {"matchLabels": fleet_labels(cloud)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": fleet_labels(cloud),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(k8s.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod,
            },
        },
    }


def service(params: Params, cloud: str) -> dict[str, Any]:
    """The Service in front of ``cloud``'s servers."""
    k8s = params.deploy.kubernetes
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{APP}-{cloud}",
            "namespace": k8s.namespace,
            "labels": fleet_labels(cloud),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": fleet_labels(cloud),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(params: Params, cloud: str) -> dict[str, Any]:
    """The HorizontalPodAutoscaler: CPU utilization and the p99 request latency per pod."""
    k8s = params.deploy.kubernetes
    scaling = k8s.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": f"{APP}-{cloud}",
            "namespace": k8s.namespace,
            "labels": fleet_labels(cloud),
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": f"{APP}-{cloud}",
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.cpu_utilization,
                        },
                    },
                },
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": scaling.latency_metric},
                        # a quantity in seconds: 50 ms is "50m"
                        "target": {
                            "type": "AverageValue",
                            "averageValue": f"{round(scaling.latency_p99_ms)}m",
                        },
                    },
                },
            ],
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 300},
            },
        },
    }


def disruption_budget(params: Params, cloud: str) -> dict[str, Any]:
    """The PodDisruptionBudget: voluntary evictions take at most ``max_unavailable`` pods."""
    k8s = params.deploy.kubernetes
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": f"{APP}-{cloud}",
            "namespace": k8s.namespace,
            "labels": fleet_labels(cloud),
        },
        "spec": {
            "maxUnavailable": k8s.max_unavailable,
            "selector": {"matchLabels": fleet_labels(cloud)},
        },
    }


def network_policy(params: Params, cloud: str) -> dict[str, Any]:
    """The NetworkPolicy: only client pods and Prometheus reach the servers, on their port."""
    k8s = params.deploy.kubernetes
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{APP}-{cloud}",
            "namespace": k8s.namespace,
            "labels": fleet_labels(cloud),
        },
        "spec": {
            "podSelector": {"matchLabels": fleet_labels(cloud)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": dict(k8s.clients)},
                        },
                        {
                            "namespaceSelector": {},
                            "podSelector": {
                                "matchLabels": {"app.kubernetes.io/name": "prometheus"}
                            },
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": k8s.port}],
                }
            ],
        },
    }


def render_manifests(params: Params, cloud: str, version: str) -> list[dict[str, Any]]:
    """Every serving manifest of ``cloud``, serving ``version``."""
    return [
        deployment(params, cloud, version),
        service(params, cloud),
        autoscaler(params, cloud),
        disruption_budget(params, cloud),
        network_policy(params, cloud),
    ]
