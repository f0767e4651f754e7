"""``make airflow`` for real: Airflow's UI for a copy of the project, started, probed, stopped.

One test, in the order a person meets it: the command prints the address and the login once
the UI answers; the UI answers on 127.0.0.1 and on no other address; the login works and the
project's DAG is there; the executor has one worker per core; no Airflow process listens on
another address than 127.0.0.1 (no log server on 8793/8794); Ctrl-C stops every component.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import psutil
import pytest

from pipelines.core.project import interpreter_env
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import AIRFLOW_HOME, DAG_ID
from tests.integration.conftest import AIRFLOW_OVERRIDES
from tests.integration.project import copy_project

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 360
WORKER_TITLE = "airflow worker -- LocalExecutor:"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for(condition: Any, timeout_s: float, what: str) -> Any:
    # the limit only ends a hung test: nothing passes or fails by how fast it came
    value = wait_until(condition, timeout_s=timeout_s, interval_s=1.0)
    if not value:
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
    return value


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _listening(port: int) -> list[str]:
    return sorted(
        conn.laddr.ip
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    )


def _listening_by(pids: set[int]) -> list[tuple[str, int]]:
    """The addresses and ports that processes ``pids`` listen on."""
    return sorted(
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    )


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback."""
    return [
        addr.address
        for addrs in psutil.net_if_addrs().values()
        for addr in addrs
        if addr.family == socket.AF_INET and not addr.address.startswith("127.")
    ]


def _workers(launcher: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in launcher.children(recursive=True):
        try:
            if " ".join(child.cmdline()).startswith(WORKER_TITLE):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_make_airflow_serves_the_ui_on_127_0_0_1_and_stops_on_ctrl_c(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = copy_project(tmp_path_factory.mktemp("ui") / "project", AIRFLOW_OVERRIDES)
    port = _free_port()
    output_path = root.parent / "ui.out"
    with output_path.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.main_job.ui",
                "--root",
                str(root),
                "--port",
                str(port),
            ],
            cwd=root,
            # the generated password, not one from the environment
            env={k: v for k, v in interpreter_env().items() if k != "RECFLOW_AIRFLOW_PASSWORD"},
            stdout=output,
            stderr=subprocess.STDOUT,
            # its own group, as a terminal's foreground job: SIGINT below is the Ctrl-C
            start_new_session=True,
        )
    launcher = psutil.Process(process.pid)
    components: list[psutil.Process] = []
    try:
        printed = _wait_for(
            lambda: "Airflow UI:" in output_path.read_text() or process.poll() is not None,
            START_TIMEOUT_S,
            "the UI's address",
        )
        text = output_path.read_text()
        assert printed and process.poll() is None, text
        address = f"http://127.0.0.1:{port}"
        assert f"Airflow UI: {address}\n" in text
        passwords = root / AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated"
        assert f"login: admin, password in {passwords} " in text
        assert "RECFLOW_AIRFLOW_PASSWORD" in text

        # the health endpoint answers over HTTP on 127.0.0.1 ...
        status, health = _get(f"{address}/api/v2/monitor/health")
        assert status == 200
        assert health["metadatabase"]["status"] == "healthy"
        # ... and the port is bound to 127.0.0.1 alone, not 0.0.0.0 (nor ::)
        components = launcher.children(recursive=True)
        assert _listening(port) == ["127.0.0.1"]
        for other in _other_addresses():
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=3).close()

        # the login printed works, and the UI shows the project's DAG
        password = json.loads(passwords.read_text())["admin"]
        request = urllib.request.Request(
            f"{address}/auth/token",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            token = json.loads(response.read())["access_token"]
        assert _get(f"{address}/api/v2/dags", token="not-a-token")[0] in (401, 403)
        dag = _wait_for(
            lambda: _get(f"{address}/api/v2/dags/{DAG_ID}", token)[1],
            120,
            f"the DAG {DAG_ID} in the UI",
        )
        assert dag["dag_id"] == DAG_ID

        # the local executor: one worker per core this machine lends the process
        cores = len(os.sched_getaffinity(0))
        _wait_for(lambda: len(_workers(launcher)) == cores, 120, f"{cores} executor workers")
        components = launcher.children(recursive=True)

        # no Airflow process listens on another address: no log server on 8793/8794 either
        listening = _listening_by({p.pid for p in components} | {launcher.pid})
        assert (address.split("//")[1].split(":")[0], port) in listening
        assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening
        assert not {p for _, p in listening} & {8793, 8794}, listening

        # Ctrl-C stops every component and frees the port
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
        assert "stopping Airflow" in output_path.read_text()
        _, alive = psutil.wait_procs(components, timeout=30)
        assert not alive, [p.pid for p in alive]
        assert _listening(port) == []
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
        for component in components:
            if component.is_running():
                component.kill()
