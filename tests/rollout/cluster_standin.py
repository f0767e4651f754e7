"""A stand-in for one cloud's Kubernetes cluster: its API over HTTP, and its pods as processes.

No API server runs here, so this answers the part of the Kubernetes REST API the rollout uses
(create the serving objects, read, patch with a JSON patch and delete the Deployment, list pods
by label), for the official client over real HTTP. Every object created is validated against
the Kubernetes schema first (422 otherwise, as the API server answers). A Deployment's pods are
real ``recflow serve`` processes started from the Deployment's own container ``args``, each on
an address of its own in 127.0.0.0/8 (a pod IP) and the Deployment's port; the paths inside the
image (run folder, request log) become folders of the test, and the Secret's values reach the
processes through their environment, as the Deployment's ``secretKeyRef`` would. A patch of
the pod template rolls the pods like the Deployment controller with ``maxUnavailable: 0``: new
pods first, the old ones stopped once the new ones are ready. What is not here: scheduling,
images, probes run by a kubelet (readiness is each process' ``/readyz``), and the objects
other than the Deployment doing anything.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import kubernetes_validate
import yaml

K8S_VERSION = kubernetes_validate.latest_version()
# pod IPs: one address of 127.0.0.0/8 per pod, never reused within a test session
_ADDRESSES = itertools.count(2)
_PLURALS = {
    "deployments": "Deployment",
    "services": "Service",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "networkpolicies": "NetworkPolicy",
}


def _pod_ip() -> str:
    n = next(_ADDRESSES)
    return f"127.0.{n // 250}.{n % 250 + 2}"


@dataclass
class Pod:
    """One pod: a ``recflow serve`` process on its own address."""

    name: str
    ip: str
    generation: int
    process: subprocess.Popen[bytes]
    log: Path
    ready: bool = False
    deleting: bool = False


@dataclass
class Cluster:
    """The objects and pods of one cluster (every namespace)."""

    folder: Path
    params_file: Path
    secret_env: dict[str, str]
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, list[Pod]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------------ pods
    def _start_pod(self, deployment: dict[str, Any], generation: int) -> Pod:
        name = f"{deployment['metadata']['name']}-{generation}-{next(self._names)}"
        ip = _pod_ip()
        folder = self.folder / "pods" / name
        folder.mkdir(parents=True)
        args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        paths = {
            "--host": ip,
            "--run-dir": str(folder / "run"),
            "--request-log-dir": str(self.folder / "requests"),
        }
        for option, value in paths.items():
            args[args.index(option) + 1] = value
        command = [sys.executable, "-m", "pipelines.cli", *args, "--params", str(self.params_file)]
        log = folder / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**_base_env(), **self.secret_env},
                start_new_session=True,
            )
        return Pod(name, ip, generation, process, log)

    def _port(self, deployment: dict[str, Any]) -> int:
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return int(args[args.index("--port") + 1])

    def _probe(self, key: tuple[str, str, str]) -> None:
        """Mark pods ready once ``/readyz`` answers; stop old pods once the new ones are."""
        with self.lock:
            deployment = self.objects.get(key)
            pods = list(self.pods.get(key[2], []))
        if deployment is None:
            return
        port = self._port(deployment)
        generation = deployment["metadata"]["generation"]
        for pod in pods:
            if not pod.ready and pod.process.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    pod.ready = httpx.get(f"http://{pod.ip}:{port}/readyz", timeout=1).is_success
        current = [p for p in pods if p.generation == generation]
        if len(current) == deployment["spec"]["replicas"] and all(p.ready for p in current):
            for pod in pods:
                if pod.generation != generation:
                    self._stop_pod(key[2], pod)

    def _stop_pod(self, deployment_name: str, pod: Pod) -> None:
        pod.deleting = True
        if pod.process.poll() is None:
            pod.process.send_signal(signal.SIGTERM)
            try:
                pod.process.wait(30)
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait()
        with self.lock:
            pods = self.pods.get(deployment_name, [])
            if pod in pods:
                pods.remove(pod)

    def probe_all(self) -> None:
        for key in [k for k in list(self.objects) if k[1] == "deployments"]:
            self._probe(key)

    def status(self, deployment: dict[str, Any]) -> dict[str, Any]:
        name = deployment["metadata"]["name"]
        generation = deployment["metadata"]["generation"]
        pods = [p for p in self.pods.get(name, []) if p.process.poll() is None]
        current = [p for p in pods if p.generation == generation]
        return {
            "observedGeneration": generation,
            "replicas": len(pods),
            "updatedReplicas": len(current),
            "readyReplicas": sum(p.ready for p in pods),
            "availableReplicas": sum(p.ready for p in current),
        }

    def roll(self, deployment: dict[str, Any]) -> None:
        """Start the pods of the Deployment's current template."""
        name = deployment["metadata"]["name"]
        generation = deployment["metadata"]["generation"]
        started = [
            self._start_pod(deployment, generation) for _ in range(deployment["spec"]["replicas"])
        ]
        with self.lock:
            self.pods.setdefault(name, []).extend(started)

    def delete(self, name: str) -> None:
        for pod in list(self.pods.get(name, [])):
            self._stop_pod(name, pod)
        self.pods.pop(name, None)

    def stop(self) -> None:
        for name in list(self.pods):
            self.delete(name)

    def pod_objects(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        items = []
        for (ns, plural, name), deployment in list(self.objects.items()):
            if ns != namespace or plural != "deployments":
                continue
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            for pod in self.pods.get(name, []):
                conditions = [{"type": "Ready", "status": "True" if pod.ready else "False"}]
                metadata: dict[str, Any] = {"name": pod.name, "namespace": ns, "labels": labels}
                if pod.deleting:
                    metadata["deletionTimestamp"] = "2026-12-07T00:00:00Z"
                items.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": metadata,
                        "status": {"podIP": pod.ip, "phase": "Running", "conditions": conditions},
                    }
                )
        return items


def _base_env() -> dict[str, str]:
    from pipelines.core.project import interpreter_env

    return interpreter_env()


def _json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """Apply ``add`` and ``replace`` operations of an RFC 6902 JSON patch in place."""
    for op in operations:
        if op["op"] not in ("add", "replace"):
            raise ValueError(f"op {op['op']} is not supported here")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = document
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if isinstance(target, list):
            target[int(last)] = op["value"]
        else:
            if op["op"] == "replace" and last not in target:
                raise KeyError(op["path"])
            target[last] = op["value"]


def _handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(
                code,
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                 "message": message, "code": code},
            )  # fmt: skip

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _route(self) -> tuple[str, str, str | None, dict[str, list[str]]]:
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            # /api/v1/namespaces/NS/PLURAL[/NAME] or /apis/GROUP/VERSION/namespaces/NS/...
            at = parts.index("namespaces")
            namespace, plural = parts[at + 1], parts[at + 2]
            name = parts[at + 3] if len(parts) > at + 3 else None
            return namespace, plural, name, parse_qs(url.query)

        def _handle(self, method: str) -> None:
            cluster.requests.append((method, urlsplit(self.path).path))
            if self.headers.get("Authorization") != "Bearer stand-in-token":
                self._status(401, "Unauthorized", "no or wrong bearer token")
                return
            namespace, plural, name, query = self._route()
            cluster.probe_all()
            with cluster.lock:
                if method == "GET" and plural == "pods" and name is None:
                    selector = dict(
                        pair.split("=", 1)
                        for pair in query.get("labelSelector", [""])[0].split(",")
                        if pair
                    )
                    items = cluster.pod_objects(namespace, selector)
                    self._send(200, {"apiVersion": "v1", "kind": "PodList", "items": items})
                    return
                key = (namespace, plural, name or "")
                if method == "POST":
                    self._create(namespace, plural)
                    return
                found = cluster.objects.get(key)
                if found is None:
                    self._status(404, "NotFound", f"{plural} {name!r} not found")
                    return
                if method == "GET":
                    self._send(200, {**found, "status": cluster.status(found)})
                elif method == "PATCH":
                    self._patch(found)
                elif method == "DELETE":
                    del cluster.objects[key]
                    cluster.delete(found["metadata"]["name"])
                    self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        def _create(self, namespace: str, plural: str) -> None:
            body = self._body()
            try:
                kubernetes_validate.validate(body, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                self._status(422, "Invalid", str(exc)[:500])
                return
            if body["kind"] != _PLURALS.get(plural) or body["metadata"]["namespace"] != namespace:
                self._status(400, "BadRequest", "kind or namespace does not match the path")
                return
            key = (namespace, plural, body["metadata"]["name"])
            if key in cluster.objects:
                self._status(409, "AlreadyExists", f"{plural} {key[2]!r} already exists")
                return
            body["metadata"]["generation"] = 1
            cluster.objects[key] = body
            if plural == "deployments":
                cluster.roll(body)
            self._send(201, body)

        def _patch(self, found: dict[str, Any]) -> None:
            if self.headers.get("Content-Type") != "application/json-patch+json":
                self._status(415, "UnsupportedMediaType", "a JSON patch only, here")
                return
            before = json.dumps(found["spec"]["template"], sort_keys=True)
            _json_patch(found, self._body())
            if json.dumps(found["spec"]["template"], sort_keys=True) != before:
                found["metadata"]["generation"] += 1
                cluster.roll(found)
            self._send(200, {**found, "status": cluster.status(found)})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


@contextlib.contextmanager
def standin_clusters(
    folder: Path, params_file: Path, contexts: list[str], secret_env: dict[str, str]
) -> Iterator[tuple[Path, dict[str, Cluster]]]:
    """One stand-in cluster per kubeconfig context, and the kubeconfig that names them all."""
    clusters: dict[str, Cluster] = {}
    servers: list[ThreadingHTTPServer] = []
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "contexts": [],
        "users": [{"name": "deployer", "user": {"token": "stand-in-token"}}],
        "current-context": contexts[0],
    }
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for context in contexts:
            cluster = Cluster(folder / context, params_file, secret_env)
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cluster))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            clusters[context] = cluster
            url = f"http://127.0.0.1:{server.server_address[1]}"
            config["clusters"].append({"name": context, "cluster": {"server": url}})
            config["contexts"].append(
                {"name": context, "context": {"cluster": context, "user": "deployer"}}
            )
        kubeconfig = folder / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        yield kubeconfig, clusters
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for cluster in clusters.values():
            cluster.stop()
