"""The serving fleets in Kubernetes mode: each cloud's Deployment, driven through its API.

:class:`ClusterEnvironment` is the rollout's :class:`~pipelines.rollout.environment.Environment`
when ``recflow deploy --fleets kubernetes`` runs (the deploy tasks of a run whose form chose
``kubernetes``). Per cloud it talks to the cluster of that cloud's kubeconfig context
(``execution.placement.clouds.<cloud>.context``; inside a pod without that context, the pod's own
cluster) in the namespace ``deploy.kubernetes.namespace``:

- **start**: the objects ``recflow deploy manifests`` renders (Deployment, Service,
  HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy) are created where the Deployment
  does not exist yet, serving the version the rollout starts from; an existing Deployment is
  the cloud's fleet as it is. Either way the rollout waits until the Deployment is rolled out
  and every one of its pods is ready.
- **load, shadow, canary**: over each ready pod's admin API (the pod addresses come from the
  API; the deploy pod carries the client label the NetworkPolicy lets in), as the local fleets.
- **promote**: each pod's admin API, then the Deployment's ``--version`` is set to the new
  stable version, so that pods the cluster starts later (a reschedule, the autoscaler) serve it
  too; the rollout waits for that rolling update (``maxUnavailable: 0``).
- **roll back**: each pod's admin API; after a promotion (the pods restarted on the candidate)
  the Deployment's ``--version`` goes back to the stable version instead.
- **stop** (a failed first rollout: nothing to return to): the Deployment is deleted.
- **metrics**: each pod's ``/metrics``, read directly (the cluster's Prometheus scrapes the
  same pages through the Deployment's annotations).

The tokens are the serving Secret's, which the deploy pod reads as variables
(``RECFLOW_ADMIN_TOKEN``, ``RECFLOW_API_TOKENS``); the pods never see the controller's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.waiting import wait_until
from pipelines.registry.clouds import Registry
from pipelines.rollout.context import Context, short
from pipelines.rollout.environment import FleetEnvironment
from pipelines.rollout.fleet.client import Fleet, FleetError, Tokens
from pipelines.rollout.fleet.local import FleetStartError
from pipelines.rollout.kubernetes import APP, fleet_labels, render_manifests, server_workers
from pipelines.rollout.sources import ScrapeSource
from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, API_TOKENS_ENV

log = logging.getLogger("recflow.rollout.cluster")

VERSION_LABEL = "recflow/version"


class ClusterError(RecflowError):
    """The cluster's API refused a request or could not be reached."""


class ClusterApi(Protocol):
    """What the environment asks of one cloud's cluster (one namespace)."""

    def read_deployment(self, name: str) -> dict[str, Any] | None:
        """The Deployment as the API returns it; None where it does not exist."""
        ...

    def create(self, manifest: dict[str, Any]) -> None:
        """Create one object (an existing one of the same name is left as it is)."""
        ...

    def set_version(self, name: str, args: list[str], version: str) -> None:
        """Point the Deployment's server at ``version``: its container ``args`` and label."""
        ...

    def delete_deployment(self, name: str) -> None:
        """Delete the Deployment (its pods go with it)."""
        ...

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The pods that match the labels in ``selector``."""
        ...


class KubernetesApi:
    """:class:`ClusterApi` over the official Kubernetes client.

    Args:
        api_client: A ``kubernetes.client.ApiClient`` for the cluster.
        namespace: The serving namespace.
    """

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self._create: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.create_namespaced_deployment,
            "Service": self.core.create_namespaced_service,
            "HorizontalPodAutoscaler": client.AutoscalingV2Api(
                api_client
            ).create_namespaced_horizontal_pod_autoscaler,
            "PodDisruptionBudget": client.PolicyV1Api(
                api_client
            ).create_namespaced_pod_disruption_budget,
            "NetworkPolicy": client.NetworkingV1Api(api_client).create_namespaced_network_policy,
        }

    @classmethod
    def connect(cls, context: str, namespace: str) -> KubernetesApi:
        """The cluster of kubeconfig ``context``; inside a pod whose kubeconfig lacks it, the
        pod's own cluster (its service account).

        Raises:
            ClusterError: Neither a kubeconfig with ``context`` nor a pod's service account.
        """
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        # read now: the client reads KUBECONFIG once, when it is first imported
        config_file = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        try:
            contexts, _ = config.list_kube_config_contexts(config_file)
        except (ConfigException, OSError):
            contexts = []
        if any(c.get("name") == context for c in contexts or []):
            return cls(config.new_client_from_config(config_file, context=context), namespace)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            from kubernetes import client

            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return cls(client.ApiClient(configuration), namespace)
        raise ClusterError(
            f"no kubeconfig context {context!r} (execution.placement.clouds) and not inside a "
            "pod: set KUBECONFIG to a file that has it"
        )

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            answer = call(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409 and what.startswith("create"):
                return None
            raise ClusterError(
                f"{what} in namespace {self.namespace}: {exc.status} {exc.reason}: "
                f"{(exc.body or '')[:300]}"
            ) from None
        except HTTPError as exc:
            raise ClusterError(f"{what}: the cluster's API did not answer: {exc}") from None
        data = answer.data
        return json.loads(data) if data else {}

    def read_deployment(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._call(
            f"read deployment {name}", self.apps.read_namespaced_deployment, name, self.namespace
        )
        return found

    def create(self, manifest: dict[str, Any]) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        self._call(f"create {kind} {name}", self._create[kind], self.namespace, manifest)

    def set_version(self, name: str, args: list[str], version: str) -> None:
        # a JSON patch: the args list is replaced whole, the version label set
        patch = [
            {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args},
            {"op": "add", "path": "/metadata/labels/recflow~1version", "value": version},
        ]
        self._call(
            f"patch deployment {name}",
            self.apps.patch_namespaced_deployment,
            name,
            self.namespace,
            patch,
        )

    def delete_deployment(self, name: str) -> None:
        self._call(
            f"delete deployment {name}",
            self.apps.delete_namespaced_deployment,
            name,
            self.namespace,
        )

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        labels = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        found = self._call(
            "list pods", self.core.list_namespaced_pod, self.namespace, label_selector=labels
        )
        items: list[dict[str, Any]] = (found or {}).get("items", [])
        return items


def server_args(deployment: dict[str, Any]) -> list[str]:
    """The server container's ``args`` of a Deployment."""
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def with_version(args: list[str], version: str) -> list[str]:
    """``args`` with the value after ``--version`` replaced by ``version``.

    Raises:
        InputError: The args have no ``--version`` (not a Deployment ``recflow deploy
            manifests`` renders).
    """
    if "--version" not in args[:-1]:
        raise InputError(f"the server's args {args} name no --version")
    at = args.index("--version") + 1
    return [*args[:at], version, *args[at + 1 :]]


def rollout_problem(deployment: dict[str, Any]) -> str | None:
    """Why the Deployment is not rolled out yet (None: every replica is updated and available
    and no old pod is left)."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    want = spec.get("replicas", 1)
    generation = deployment.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return "the controller has not seen the latest change"
    for field, label in (
        ("updatedReplicas", "updated"),
        ("availableReplicas", "available"),
    ):
        if status.get(field, 0) < want:
            return f"{status.get(field, 0)} of {want} replicas {label}"
    if status.get("replicas", 0) > want:
        return f"{status['replicas'] - want} old replica(s) still running"
    return None


def ready_pod_urls(pods: list[dict[str, Any]], port: int) -> list[str]:
    """``http://<pod IP>:<port>`` of each ready pod that is not being deleted, by name."""
    urls = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            urls.append(f"http://{status['podIP']}:{port}")
    return urls


def tokens_from_env(environ: dict[str, str] | None = None) -> Tokens:
    """The serving Secret's tokens, as the deploy pod reads them.

    Raises:
        InputError: A token is missing (the deploy pod's Secret is not there).
    """
    environ = dict(os.environ) if environ is None else environ
    admin = environ.get(ADMIN_TOKEN_ENV, "")
    clients = [t.strip() for t in environ.get(API_TOKENS_ENV, "").split(",") if t.strip()]
    if not admin or not clients:
        raise InputError(
            f"{ADMIN_TOKEN_ENV} and {API_TOKENS_ENV} must be set to the serving fleets' tokens "
            "(the deploy pod reads them from the serving Secret; docker/k8s/secrets.example.yaml)"
        )
    return Tokens(admin, clients[0])


Connect = Callable[[str, str], ClusterApi]


class ClusterEnvironment(FleetEnvironment):
    """Each cloud's Deployment in its cluster, its pods' metrics and the replayed sessions.

    Args:
        ctx: The context (params, their file, the project root, the prepared folder).
        registry: The registry.
        connect: ``(kubeconfig context, namespace) -> ClusterApi``; the official client's by
            default.
        tokens: The fleets' tokens; None: from the environment (:func:`tokens_from_env`).
        interval_s: Between two looks at a Deployment that is rolling out.
    """

    def __init__(
        self,
        ctx: Context,
        registry: Registry,
        connect: Connect = KubernetesApi.connect,
        tokens: Tokens | None = None,
        interval_s: float = 1.0,
    ) -> None:
        super().__init__(ctx, registry, tokens or tokens_from_env())
        self.k8s = ctx.params.deploy.kubernetes
        self.connect = connect
        self.interval_s = interval_s
        self.apis: dict[str, ClusterApi] = {}

    def _api(self, cloud: str) -> ClusterApi:
        if cloud not in self.apis:
            clouds = self.ctx.params.execution.placement.clouds
            if cloud not in clouds:
                raise InputError(
                    f"execution.placement.clouds names no {cloud!r}: its kubeconfig context is "
                    "where its serving Deployment runs"
                )
            self.apis[cloud] = self.connect(clouds[cloud].context, self.k8s.namespace)
        return self.apis[cloud]

    def server_workers(self, cloud: str) -> int:
        return server_workers(self.k8s.limits.cpu)

    @staticmethod
    def _name(cloud: str) -> str:
        return f"{APP}-{cloud}"

    def _deployment(self, cloud: str) -> dict[str, Any] | None:
        return self._api(cloud).read_deployment(self._name(cloud))

    def _wait_rolled_out(self, cloud: str) -> list[str]:
        """Wait until the Deployment is rolled out and each pod ready; the pods' URLs.

        Raises:
            FleetStartError: Not within ``deploy.fleet_start_timeout_s`` (the message says what
                was missing).
        """
        api, name = self._api(cloud), self._name(cloud)
        seen: dict[str, Any] = {"problem": "not looked at yet", "urls": []}

        def rolled_out() -> bool:
            deployment = api.read_deployment(name)
            if deployment is None:
                seen["problem"] = f"deployment {name} does not exist"
                return False
            problem = rollout_problem(deployment)
            urls = ready_pod_urls(api.pods(fleet_labels(cloud)), self.k8s.port)
            want = deployment["spec"].get("replicas", 1)
            if problem is None and len(urls) != want:
                problem = f"{len(urls)} of {want} pods ready"
            seen["problem"], seen["urls"] = problem, urls
            return problem is None

        timeout_s = self.cfg.fleet_start_timeout_s
        if not wait_until(rolled_out, timeout_s=timeout_s, interval_s=self.interval_s):
            raise FleetStartError(
                f"{cloud} deployment {name} was not rolled out in {timeout_s:.0f} s: "
                f"{seen['problem']}"
            )
        urls: list[str] = seen["urls"]
        return urls

    def _attach(self, cloud: str, urls: list[str]) -> None:
        fleet = Fleet(cloud, urls, self.tokens, loopback_only=False)
        self.fleets[cloud] = fleet
        self.sources[cloud] = ScrapeSource(fleet.urls)

    # ------------------------------------------------------------------ fleets
    def start(self, cloud: str, version: str) -> None:
        if cloud in self.fleets:
            return
        api, name = self._api(cloud), self._name(cloud)
        if self._deployment(cloud) is None:
            for manifest in render_manifests(self.ctx.params, cloud, version):
                api.create(manifest)
            log.info("%s: created deployment %s serving %s", cloud, name, short(version))
        urls = self._wait_rolled_out(cloud)
        self._attach(cloud, urls)
        log.info("%s fleet: deployment %s, %d pod(s) ready", cloud, name, len(urls))

    def _set_version(self, cloud: str, version: str) -> None:
        """The Deployment's servers start on ``version`` from now on (a rolling update)."""
        deployment = self._deployment(cloud)
        if deployment is None:
            raise FleetError(f"{cloud} deployment {self._name(cloud)} is gone")
        args = server_args(deployment)
        wanted = with_version(args, version)
        if wanted == args:
            return
        self._api(cloud).set_version(self._name(cloud), wanted, version)
        try:
            urls = self._wait_rolled_out(cloud)
        except FleetStartError as exc:
            raise FleetError(str(exc)) from None
        self._attach(cloud, urls)

    def promote(self, cloud: str, version: str) -> None:
        super().promote(cloud, version)
        self._set_version(cloud, version)

    def roll_back(self, cloud: str, stable: str, candidate: str) -> None:
        deployment = self._deployment(cloud)
        if deployment is not None:
            args = server_args(deployment)
            if with_version(args, stable) != args:
                # promoted already: the pods restarted on the candidate and hold nothing to
                # return to, so new ones start on the stable version
                self._set_version(cloud, stable)
                return
        super().roll_back(cloud, stable, candidate)

    def stop(self, cloud: str) -> None:
        if self.fleets.pop(cloud, None) is not None:
            self._api(cloud).delete_deployment(self._name(cloud))
            log.info("%s: deleted deployment %s", cloud, self._name(cloud))
        self.sources.pop(cloud, None)

    def close(self) -> None:
        # the Deployments are the clouds' fleets: they outlive the rollout
        self.fleets.clear()
        self.sources.clear()
