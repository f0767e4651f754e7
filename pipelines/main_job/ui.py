"""``make airflow``: Airflow's UI for this checkout, reachable from this machine only.

Runs ``airflow standalone`` (scheduler, DAG processor, triggerer, and the API server that serves
the UI) with the main job's settings (``airflow_cli``): the same home, DAGs and plugins, so the
UI shows the runs ``make run`` left. Where a bare ``airflow standalone`` differs:

- the API server listens on 127.0.0.1 only; Airflow's default is every interface (0.0.0.0);
- the local executor gets one worker per CPU core this process may use; Airflow's default
  (``[core] parallelism``, 32) starts 32 worker processes whatever the machine;
- Airflow's components start each other as ``airflow <command>``: this environment's folder
  comes first on ``PATH``, so they find its ``airflow`` without an activated virtualenv.

Once the API server answers its health check, this prints the address and the login. Airflow
3's simple auth manager logs in the user ``admin`` with a password it generates on first start
and keeps in ``simple_auth_manager_passwords.json.generated`` in the Airflow home. Airflow's own
output goes to ``.airflow/logs/standalone.log``; Ctrl-C stops every component.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pipelines.core.project import PROJECT_ROOT
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import AIRFLOW_HOME, airflow_command, airflow_env

HOST = "127.0.0.1"
DEFAULT_PORT = 8080
HEALTH_PATH = "/api/v2/monitor/health"
USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
STARTUP_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
LOG_LINES_ON_FAILURE = 15


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ui_env(root: Path, airflow_home: Path, port: int, workers: int) -> dict[str, str]:
    """The main job's Airflow settings, plus those of a UI on ``127.0.0.1:port``.

    Args:
        root: The project root.
        airflow_home: Airflow's home.
        port: The UI's port.
        workers: Worker processes of the local executor.

    Returns:
        The environment for ``airflow standalone``.
    """
    env = airflow_env(root, airflow_home)
    env.update(
        {
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(port),
            # the UI's links and the tasks' execution API client both use this address
            "AIRFLOW__API__BASE_URL": f"http://{HOST}:{port}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(workers),
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / PASSWORDS_FILE),
        }
    )
    return env


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Poll ``url`` until it answers 200; False if ``process`` exits or time runs out first."""

    def answer() -> str:
        if process.poll() is not None:
            return "exited"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return "healthy"
        except (urllib.error.URLError, OSError):
            pass
        return ""

    return wait_until(answer, timeout_s=timeout_s, interval_s=1) == "healthy"


def _group_gone(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until no process is left in ``process``'s process group, at most ``timeout_s``."""

    def gone() -> bool:
        process.poll()  # reap it, or its own zombie keeps the group alive
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    return wait_until(gone, timeout_s=timeout_s, interval_s=0.2)


def stop(process: subprocess.Popen[bytes]) -> int:
    """Stop ``airflow standalone`` and its components, as Ctrl-C in its terminal would.

    It runs in a session of its own: SIGINT lets it stop its components; what is left of its
    process group a minute later is terminated, then killed.

    Returns:
        Its exit code.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    for group_signal, grace_s in (
        (None, STOP_TIMEOUT_S),
        (signal.SIGTERM, 10.0),
        (signal.SIGKILL, 5.0),
    ):
        if group_signal is not None:
            try:
                os.killpg(process.pid, group_signal)
            except ProcessLookupError:
                break
        if _group_gone(process, grace_s):
            break
    return process.wait()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _last_lines(path: Path, count: int) -> list[str]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line for line in lines if line.strip()][-count:]


def main(argv: Sequence[str] | None = None) -> int:
    """Start Airflow's UI for this checkout and keep it running until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.main_job.ui", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the project root")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the UI's port (8080)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    airflow_home = root / AIRFLOW_HOME
    if not 0 < args.port < 65536:
        print(f"error: --port must be between 1 and 65535, got {args.port}", file=sys.stderr)
        return 2
    if port_in_use(args.port):
        print(
            f"error: port {args.port} on {HOST} is in use (another Airflow?); "
            f"choose another: make airflow AIRFLOW_PORT=8081",
            file=sys.stderr,
        )
        return 2

    workers = cpu_cores()
    log_path = airflow_home / "logs" / "standalone.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    address = f"http://{HOST}:{args.port}"
    print(f"starting Airflow (home {airflow_home}, {workers} executor workers)", flush=True)
    print(f"Airflow's output: {log_path}", flush=True)
    # Ctrl-C and SIGTERM stop Airflow in order, even where this process was started with
    # SIGINT ignored (a shell's background job passes that on to its children)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            airflow_command("standalone"),
            cwd=root,
            env=ui_env(root, airflow_home, args.port, workers),
            stdout=output,
            stderr=subprocess.STDOUT,
            # its own session: Ctrl-C reaches this process, which then stops Airflow in order
            start_new_session=True,
        )
    try:
        if not wait_until_healthy(address + HEALTH_PATH, process, STARTUP_TIMEOUT_S):
            code = process.poll()
            stop(process)
            why = f"exited with code {code}" if code is not None else "did not answer in time"
            print(f"error: Airflow {why}; the end of {log_path}:", file=sys.stderr)
            for line in _last_lines(log_path, LOG_LINES_ON_FAILURE):
                print(f"  {line}", file=sys.stderr)
            return 1
        print(f"Airflow UI: {address}", flush=True)
        print(
            f"login: {USER}, password in {airflow_home / PASSWORDS_FILE} "
            "(generated by Airflow's simple auth manager on first start)",
            flush=True,
        )
        print("Ctrl-C stops Airflow", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        print("stopping Airflow", flush=True)
        stop(process)
        return 0


if __name__ == "__main__":
    sys.exit(main())
