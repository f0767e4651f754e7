"""``make airflow``: Airflow's UI for this checkout, reachable from this machine only.

Runs the components of ``airflow standalone`` (scheduler, DAG processor, triggerer, and the API
server that serves the UI) with the main job's settings (``airflow_cli``): the same home, DAGs
and plugins, so the UI shows the runs ``make run`` left. Where a bare ``airflow standalone``
differs:

- every component listens on 127.0.0.1 only: the API server (Airflow's default is every
  interface, 0.0.0.0), and no log server is started (the scheduler's and the triggerer's, on
  8793 and 8794, would listen on every interface; the API server reads the task logs from the
  home's log folder instead);
- the local executor gets one worker per CPU core this process may use; Airflow's default
  (``[core] parallelism``, 32) starts 32 worker processes whatever the machine;
- Airflow's components start each other as ``airflow <command>``: this environment's folder
  comes first on ``PATH``, so they find its ``airflow`` without an activated virtualenv.

Once every component reports healthy, this prints the address and the login. Airflow 3's
simple auth manager logs in the user ``admin``: with ``RECFLOW_AIRFLOW_PASSWORD`` set, with that
password; otherwise with one it generates on first start and keeps in
``simple_auth_manager_passwords.json.generated`` in the Airflow home. Each component's output
goes to ``.airflow/logs/<component>.log``; Ctrl-C stops every component.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from pipelines.core.project import PROJECT_ROOT
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import (
    AIRFLOW_HOME,
    HOST,
    airflow_command,
    airflow_env,
    component_commands,
)

DEFAULT_PORT = 8080
HEALTH_PATH = "/api/v2/monitor/health"
USER = "admin"
PASSWORD_ENV = "RECFLOW_AIRFLOW_PASSWORD"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
# the components the health endpoint reports on, besides the database
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
# limits that only end a hung start or stop: nothing is decided by how fast it came
STARTUP_TIMEOUT_S = 300
MIGRATE_TIMEOUT_S = 600
STOP_TIMEOUT_S = 60
LOG_LINES_ON_FAILURE = 15


@dataclass
class AirflowApi:
    """Airflow's REST API on 127.0.0.1, logged in as the simple auth manager's admin.

    Attributes:
        base: The API server's address.
        password_file: The simple auth manager's password file (``admin``'s password).
        timeout_s: How long one call may take (a hang limit, not a measure).
        token: The current access token; a 401 makes the next call log in again.
    """

    base: str
    password_file: Path
    timeout_s: float = 30.0
    token: str = ""

    def _token(self) -> str:
        passwords = json.loads(self.password_file.read_text(encoding="utf-8"))
        body = json.dumps({"username": USER, "password": passwords[USER]}).encode()
        request = urllib.request.Request(
            f"{self.base}/auth/token",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return str(json.loads(response.read())["access_token"])

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if not self.token:
            self.token = self._token()
        request = urllib.request.Request(
            f"{self.base}/api/v2/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401:  # the token expired: log in again next time
                self.token = ""
            raise

    def get(self, path: str) -> Any:
        """``GET /api/v2/<path>`` as JSON; None for a 404."""
        return self._call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        """``POST /api/v2/<path>`` with a JSON body; the answer as JSON, None for a 404."""
        return self._call("POST", path, body)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs, newest first."""
        answer = self.get(f"dags/{dag_id}/dagRuns?order_by=-run_after&limit=100")
        return list(answer["dag_runs"]) if answer else []

    def tasks(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Task id -> state (``none`` while not started) of one run."""
        answer = self.get(f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=100")
        rows = answer["task_instances"] if answer else []
        return {str(row["task_id"]): str(row.get("state") or "none") for row in rows}


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
        The environment of Airflow's components.
    """
    env = airflow_env(root, airflow_home)
    env.update(
        {
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


def set_login(airflow_home: Path) -> str:
    """Where the login's password comes from, in words; the environment's password is written
    into the simple auth manager's file first (readable by this user only).

    With ``RECFLOW_AIRFLOW_PASSWORD`` set, it is ``admin``'s password; otherwise the simple
    auth manager generates one on first start and keeps it in its file.
    """
    passwords = airflow_home / PASSWORDS_FILE
    password = os.environ.get(PASSWORD_ENV)
    if password:
        passwords.parent.mkdir(parents=True, exist_ok=True)
        passwords.unlink(missing_ok=True)
        descriptor = os.open(passwords, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(json.dumps({USER: password}) + "\n")
        return f"login: {USER}, password from {PASSWORD_ENV}"
    return (
        f"login: {USER}, password in {passwords} "
        f"(generated by Airflow's simple auth manager on first start; set {PASSWORD_ENV} "
        "to choose it)"
    )


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class AirflowComponents:
    """Airflow's components, started by :func:`start_components`, in one process group.

    Attributes:
        processes: Each component's process, by name.
        logs: Each component's log file, by name.
    """

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def exited(self) -> str | None:
        """The first component that exited, with its exit code; None while all run."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return f"{name} exited with code {process.returncode}"
        return None

    def tail(self, lines: int = LOG_LINES_ON_FAILURE) -> list[str]:
        """The last lines of each component's log."""
        shown = []
        for name, path in self.logs.items():
            with contextlib.suppress(OSError):
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                shown += [f"{name}: {line}" for line in text if line.strip()][-lines:]
        return shown


def migrate(env: dict[str, str], root: Path, log_path: Path) -> subprocess.CompletedProcess[bytes]:
    """``airflow db migrate``: the database's tables, and the home's configuration (its
    generated secrets) written before the components start and share it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        return subprocess.run(
            airflow_command("db", "migrate"),
            cwd=root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=MIGRATE_TIMEOUT_S,
            check=False,
        )


def start_components(root: Path, env: dict[str, str], log_dir: Path) -> AirflowComponents:
    """Start Airflow's components, their output in ``log_dir/<name>.log``.

    Each runs in a session of its own: a Ctrl-C in the terminal reaches only the caller, which
    stops them in order; what is left of a component's process group is stopped with it.
    """
    components = AirflowComponents()
    log_dir.mkdir(parents=True, exist_ok=True)
    for name, command in component_commands().items():
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as output:
            components.processes[name] = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        components.logs[name] = log_path
    return components


def health(url: str) -> dict[str, str]:
    """Each component's status as the health endpoint reports it (empty: no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return {name: str((body.get(name) or {}).get("status")) for name in HEALTH_COMPONENTS if body}


def wait_until_healthy(url: str, components: AirflowComponents, timeout_s: float) -> str:
    """Poll the health endpoint ``url`` until every component is healthy.

    Returns:
        "" when they are; else why not (a component exited, or what was not healthy yet when
        the limit that ends a hung start came).
    """
    last: dict[str, str] = {}

    def answer() -> str:
        exited = components.exited()
        if exited:
            return exited
        last.clear()
        last.update(health(url))
        if last and all(status == "healthy" for status in last.values()):
            return "healthy"
        return ""

    outcome = wait_until(answer, timeout_s=timeout_s, interval_s=1)
    if outcome == "healthy":
        return ""
    if outcome:
        return outcome
    waiting = ", ".join(f"{name} {status}" for name, status in last.items()) or "no answer"
    return f"not healthy after {timeout_s:.0f} s ({waiting})"


def _groups_gone(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> bool:
    """Wait until no process is left in the process groups of ``processes`` (each leads its
    own), at most ``timeout_s``."""

    def gone() -> bool:
        for process in processes:
            process.poll()  # reap it, or its own zombie keeps the group alive
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                continue
            return False
        return True

    return wait_until(gone, timeout_s=timeout_s, interval_s=0.2)


def stop_components(components: AirflowComponents) -> None:
    """Stop the components as ``airflow standalone`` does (SIGTERM to each); what is left of
    their process groups a minute later is terminated, then killed."""
    processes = list(components.processes.values())
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for group_signal, grace_s in (
        (None, STOP_TIMEOUT_S),
        (signal.SIGTERM, 10.0),
        (signal.SIGKILL, 5.0),
    ):
        if group_signal is not None:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, group_signal)
        if _groups_gone(processes, grace_s):
            break
    for process in processes:
        process.wait()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_failure(why: str, lines: Sequence[str]) -> None:
    print(f"error: Airflow {why}; the end of its logs:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)


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
    log_dir = airflow_home / "logs"
    address = f"http://{HOST}:{args.port}"
    env = ui_env(root, airflow_home, args.port, workers)
    print(f"starting Airflow (home {airflow_home}, {workers} executor workers)", flush=True)
    print(f"Airflow's output: {log_dir}/<component>.log", flush=True)
    # Ctrl-C and SIGTERM stop Airflow in order, even where this process was started with
    # SIGINT ignored (a shell's background job passes that on to its children)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    login = set_login(airflow_home)
    components = AirflowComponents()
    try:
        migrated = migrate(env, root, log_dir / "migrate.log")
        if migrated.returncode:
            _print_failure(
                f"db migrate exited with code {migrated.returncode}",
                AirflowComponents(logs={"migrate": log_dir / "migrate.log"}).tail(),
            )
            return 1
        components = start_components(root, env, log_dir)
        why = wait_until_healthy(address + HEALTH_PATH, components, STARTUP_TIMEOUT_S)
        if why:
            stop_components(components)
            _print_failure(why, components.tail())
            return 1
        print(f"Airflow UI: {address}", flush=True)
        print(login, flush=True)
        print("Ctrl-C stops Airflow", flush=True)
        wait_until(components.exited, timeout_s=float("inf"), interval_s=1)
        print(f"error: Airflow's {components.exited()}", file=sys.stderr)
        stop_components(components)
        return 1
    except KeyboardInterrupt:
        print("stopping Airflow", flush=True)
        stop_components(components)
        return 0


if __name__ == "__main__":
    sys.exit(main())
