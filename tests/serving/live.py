"""A real ``recflow serve`` process on 127.0.0.1 and a free port, always stopped."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.waiting import wait_until
from tests.serving.conftest import ADMIN, CLIENT, PSEUDONYM_KEY

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_params(tmp: Path, **serve: Any) -> Path:
    """The project's params with a ``serve`` section pointing into ``tmp``."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["serve"] = {
        **params["serve"],
        "run_dir": str(tmp / "run"),
        "reconcile_interval_s": 0.05,
        "request_log": {**params["serve"]["request_log"], "dir": str(tmp / "requests")},
        **serve,
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = CLIENT,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One request; returns the status and the JSON body (or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        answer = conn.getresponse()
        raw = answer.read()
    finally:
        conn.close()
    try:
        return answer.status, json.loads(raw)
    except ValueError:
        return answer.status, raw.decode(errors="replace")


@contextlib.contextmanager
def live_server(
    tmp: Path, *args: str, workers: int = 2, ready_s: float = 120.0, **serve: Any
) -> Iterator[int]:
    """Run ``recflow serve`` with ``args``; yields its port once ``/readyz`` answers 200."""
    port = free_port()
    params = write_params(tmp, port=port, workers=workers, **serve)
    env = {
        **os.environ,
        "RECFLOW_API_TOKENS": f"other-token,{CLIENT}",
        "RECFLOW_ADMIN_TOKEN": ADMIN,
        "RECFLOW_PSEUDONYM_KEY": PSEUDONYM_KEY,
    }
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--params", str(params), *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(tmp / 'server.log').read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                return call(port, "GET", "/readyz", token=None, timeout=2)[0] == 200
            return False

        if not wait_until(ready, timeout_s=ready_s, interval_s=0.2):
            raise RuntimeError(f"not ready in {ready_s} s: {(tmp / 'server.log').read_text()}")
        yield port
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> int:
    """SIGTERM (in-flight requests finish), then SIGKILL after ``grace_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return int(process.returncode)
