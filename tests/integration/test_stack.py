"""``make up`` / ``make down`` for real, on a copy of the project whose registry has a production
version in both clouds: up returns once every part answers, everything listens on 127.0.0.1
only, the fleets serve the production version, Prometheus has the alert rules and scrapes the
fleets, the login from the environment works; down stops exactly what up started (a process
started outside the stack is left running).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipelines.core.params import load_params
from pipelines.core.project import interpreter_env
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import DAG_ID
from pipelines.main_job.stack import ENV_FILE, STATE_FILE, identify, read_state, stack_dir
from pipelines.registry.clouds import open_registry
from pipelines.registry.loopback import loopback_s3
from pipelines.registry.names import CLOUDS
from pipelines.registry.promotion import promote
from pipelines.registry.publish import publish
from pipelines.registry.stores.credentials import endpoint_env
from pipelines.rollout.fleet.client import Fleet, Tokens
from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, API_TOKENS_ENV
from tests.integration.conftest import AIRFLOW_OVERRIDES
from tests.integration.project import copy_project
from tests.serving.conftest import served_folder, tiny_model, tiny_prepared

__all__ = ["served_folder", "tiny_model", "tiny_prepared"]

pytestmark = pytest.mark.slow

AT = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)
# limits that only end a hung test: nothing passes or fails by how fast it came
UP_TIMEOUT_S = 900
DOWN_TIMEOUT_S = 300
LOOPBACK = {"127.0.0.1", "::1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def _production_in_both_clouds(root: Path, optimized: Path, model: Path) -> str:
    """Register the tiny model in the copy's registry and make it production in both clouds.

    The public store lives in a loopback server that stops at the end of this function: what
    remains is the ledger in the store of record, from which ``make up`` restores it.
    """
    params = load_params(root / "params.yaml")
    folder = root / "candidates" / "stack"
    shutil.copytree(optimized, folder / "optimized")
    shutil.copy(model, folder / "model.pt")
    (folder / "evaluation").mkdir()
    verdict = {"outcome": "pass", "verdict": "pass", "blocked": False, "bootstrap": False}
    (folder / "evaluation" / "verdict.json").write_text(json.dumps(verdict))
    (folder / "metrics.json").write_text("{}")
    with loopback_s3(params.stores) as server, _environ(server.env):
        registry = open_registry(params, root)
        version = publish(registry, folder, {"format": 1}, actor="test", at=AT).version.id
        for cloud in CLOUDS:
            promote(registry, version, "production", cloud, reason="test", actor="test", at=AT)
    shutil.rmtree(root / "candidates")
    return version


def _stack(root: Path, action: str, env: dict[str, str], *args: str, timeout: int) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.main_job.stack", action, "--root", str(root), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except json.JSONDecodeError:
        return 200, None


def _token(address: str, password: str) -> tuple[int, str | None]:
    request = urllib.request.Request(
        f"{address}/auth/token",
        data=json.dumps({"username": "admin", "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())["access_token"]
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _env_file(path: Path) -> dict[str, str]:
    pairs = [shlex.split(line.removeprefix("export "))[0] for line in path.read_text().splitlines()]
    return dict(pair.split("=", 1) for pair in pairs)


def _tree(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = {p.pid: p for p in processes}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in process.children(recursive=True)})
    return list(found.values())


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    return sorted(
        (conn.pid, conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    )


def test_make_up_serves_everything_on_loopback_and_make_down_stops_exactly_it(
    tmp_path_factory: pytest.TempPathFactory, served_folder: Path, tiny_model: Path
) -> None:
    root = copy_project(tmp_path_factory.mktemp("stack") / "project", AIRFLOW_OVERRIDES)
    version = _production_in_both_clouds(root, served_folder, tiny_model)
    password = secrets.token_urlsafe(16)
    env = interpreter_env()
    env["RECFLOW_AIRFLOW_PASSWORD"] = password
    for name in (endpoint_env("public"), API_TOKENS_ENV, ADMIN_TOKEN_ENV, "RECFLOW_AIRFLOW_DB_URL"):
        env.pop(name, None)
    port = _free_port()
    # a process of the same kind as the stack's, started outside it: down must leave it alone
    outside = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(_free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        text = _stack(root, "up", env, "--port", str(port), timeout=UP_TIMEOUT_S)

        # up returned with everything recorded and answering
        entries = read_state(root)
        names = {entry.name for entry in entries}
        expected = {"s3", "fleet-private-1", "fleet-public-1"}
        expected |= {f"airflow-{c}" for c in ("scheduler", "dag-processor", "triggerer")}
        expected |= {"airflow-api-server"}
        if shutil.which("prometheus"):
            expected.add("prometheus")
        assert names == expected, text
        assert all(identify(entry) is not None for entry in entries)
        address = f"http://127.0.0.1:{port}"
        assert f"Airflow UI      {address} (sqlite); login: admin, password from " in text, text
        assert "RECFLOW_AIRFLOW_PASSWORD" in text and password not in text
        urls = {entry.name: entry.url for entry in entries}
        status, health = _get(f"{address}/api/v2/monitor/health")
        assert status == 200
        assert {health[c]["status"] for c in ("metadatabase", "scheduler", "triggerer")} == {
            "healthy"
        }
        assert _get(f"{urls['s3']}/moto-api/")[0] == 200

        # the fleets serve the production version, with the tokens of the env file
        stack_env = _env_file(stack_dir(root) / ENV_FILE)
        assert (stack_dir(root) / ENV_FILE).stat().st_mode & 0o077 == 0
        tokens = Tokens(stack_env[ADMIN_TOKEN_ENV], stack_env[API_TOKENS_ENV])
        for cloud in CLOUDS:
            url = urls[f"fleet-{cloud}-1"]
            assert f"{cloud} fleet" in text and version in text
            assert _get(f"{url}/readyz")[0] == 200
            (state,) = Fleet(cloud, [url], tokens).states()
            assert state.stable == version

        # Prometheus has the project's alert rules and scrapes both fleets
        if "prometheus" in urls:
            prometheus = urls["prometheus"]
            _, rules = _get(f"{prometheus}/api/v1/rules")
            groups = {group["name"] for group in rules["data"]["groups"]}
            assert "recflow-serving" in groups

            def scraped() -> set[str]:
                _, targets = _get(f"{prometheus}/api/v1/targets")
                active = targets["data"]["activeTargets"]
                return {t["labels"]["fleet"] for t in active if t["health"] == "up"}

            assert wait_until(scraped, timeout_s=120, interval_s=1) == set(CLOUDS)

        # every process of the stack listens on 127.0.0.1 only; no log server on 8793/8794
        processes = _tree([p for p in map(identify, entries) if p is not None])
        listening = _listening({p.pid for p in processes})
        assert listening, "nothing of the stack listens"
        assert {ip for _, ip, _ in listening} <= LOOPBACK, listening
        assert not {p for _, _, p in listening} & {8793, 8794}, listening

        # the login comes from the environment; another password is refused
        assert _token(address, "not-the-password")[0] == 401
        status, token = _token(address, password)
        assert status == 201 and token
        dag = wait_until(
            lambda: _get(f"{address}/api/v2/dags/{DAG_ID}", token)[1], timeout_s=180, interval_s=1
        )
        assert dag and dag["dag_id"] == DAG_ID

        # down stops exactly what up started, and what those started
        processes = _tree([p for p in map(identify, entries) if p is not None])
        text = _stack(root, "down", env, timeout=DOWN_TIMEOUT_S)
        assert "stopped 9 process(es)" in text or "stopped 8 process(es)" in text, text
        _, alive = psutil.wait_procs(processes, timeout=5)
        assert not alive, [p.pid for p in alive]
        assert outside.poll() is None, "down stopped a process it did not start"
        assert not (stack_dir(root) / STATE_FILE).exists()
        assert "nothing to stop" in _stack(root, "down", env, timeout=60)
    finally:
        if (stack_dir(root) / STATE_FILE).exists():
            subprocess.run(
                [sys.executable, "-m", "pipelines.main_job.stack", "down", "--root", str(root)],
                env=env,
                timeout=DOWN_TIMEOUT_S,
                check=False,
            )
        outside.terminate()
        outside.wait(timeout=30)
