"""``make up`` / ``make down``: the local stack, on 127.0.0.1 only, left running until stopped.

``make up`` starts, each process detached in a session of its own:

1. the S3-compatible server of the stores marked ``loopback: true`` (the public store; the
   loopback server ``make run`` starts for its run, here staying up), its buckets created and
   each replica's aliases restored from the ledger in the store of record (the server keeps
   objects in memory). Where the environment already names an endpoint for every such store,
   that server is used and none is started;
2. Airflow's components with the UI's settings (``pipelines.main_job.ui``): the metadata
   database is SQLite in ``.airflow/`` unless ``RECFLOW_AIRFLOW_DB_URL`` names another;
3. each cloud's local serving fleet (``deploy.fleets``) on that cloud's current production
   version, where there is one (``make run`` deploys one); a cloud without one is skipped,
   saying so;
4. Prometheus (``deploy.metrics.prometheus``, Debian's package), scraping the fleets with the
   project's alert rules (``docker/prometheus/alerts.yml``); skipped, saying so, when it is not
   installed.

It returns once every part answers, and prints the addresses and where the login comes from.
Each process's id and start time are recorded in ``.airflow/stack/state.json`` as soon as it
starts; ``make down`` stops exactly those processes and what they started (a recorded id that
now belongs to another process, started later, is left alone). The fleets' tokens, the store's
endpoint and its throwaway credentials are in ``.airflow/stack/stack.env`` (readable by this
user only), for a shell that talks to the stack: ``source .airflow/stack/stack.env``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from pipelines.core.errors import RecflowError
from pipelines.core.io import write_json, write_text
from pipelines.core.params import Params, load_params
from pipelines.core.project import PROJECT_ROOT
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import AIRFLOW_HOME, HOST, database_url
from pipelines.main_job.ui import (
    DEFAULT_PORT,
    HEALTH_PATH,
    AirflowComponents,
    cpu_cores,
    migrate,
    port_in_use,
    set_login,
    start_components,
    ui_env,
    wait_until_healthy,
)
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import open_registry
from pipelines.registry.loopback import free_port, prepare_buckets
from pipelines.registry.names import CLOUDS
from pipelines.registry.pseudonyms import served_key
from pipelines.registry.replication import sync_aliases
from pipelines.registry.stores.credentials import endpoint_env
from pipelines.rollout.prometheus import find_binary
from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, API_TOKENS_ENV
from pipelines.serving.server.pseudonyms import PSEUDONYM_KEY_ENV

# the stack's folder in a checkout: the state file, its environment file, logs, data
STACK_DIR = Path(AIRFLOW_HOME) / "stack"
STATE_FILE = "state.json"
ENV_FILE = "stack.env"
ALERT_RULES = Path("docker") / "prometheus" / "alerts.yml"
# limits that only end a hung start or stop: nothing is decided by how fast it came
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
KILL_TIMEOUT_S = 10.0

Echo = Callable[[str], None]


class StackError(RecflowError):
    """A part of the stack did not start, or the stack is up already."""


@dataclass(frozen=True)
class Started:
    """A process ``make up`` started, as the state file records it.

    Attributes:
        name: The part (``airflow-scheduler``, ``s3``, ``fleet-private-1``, ``prometheus``).
        pid: Its process id.
        create_time: Its start time as the kernel reports it (psutil): with the id, it names
            this process and no later one that reuses the id.
        url: Where it answers ("" for a component that serves nothing).
        log: Its output.
    """

    name: str
    pid: int
    create_time: float
    url: str = ""
    log: str = ""


def stack_dir(root: Path) -> Path:
    """The stack's folder in the checkout at ``root``."""
    return root / STACK_DIR


def read_state(root: Path) -> list[Started]:
    """The processes recorded by ``make up`` in ``root`` (empty: none)."""
    path = stack_dir(root) / STATE_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["processes"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(f"{path} is not a state file of make up: {exc}") from exc
    return [Started(**entry) for entry in entries]


def _write_state(root: Path, entries: Sequence[Started]) -> None:
    write_json(stack_dir(root) / STATE_FILE, {"processes": [asdict(e) for e in entries]})


def identify(entry: Started) -> psutil.Process | None:
    """The recorded process if it still runs (same id, same start time); None otherwise."""
    try:
        process = psutil.Process(entry.pid)
        if process.create_time() != entry.create_time or process.status() == "zombie":
            return None
    except psutil.Error:
        return None
    return process


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """``export NAME=value`` lines, in a file only this user can read (tokens, credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def prometheus_config(
    rules: Path, fleets: dict[str, list[str]], interval_s: float
) -> dict[str, Any]:
    """Prometheus' configuration: each fleet's servers, labelled ``fleet=<cloud>`` as a
    rollout's Prometheus labels them (the alert rules group by it), and the rules file."""
    interval = f"{round(interval_s * 1000)}ms"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": "15s",
        },
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "recflow",
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [url.split("://", 1)[1] for url in urls],
                        "labels": {"fleet": cloud},
                    }
                    for cloud, urls in fleets.items()
                ],
            }
        ],
    }


class Stack:
    """What one ``make up`` starts, each process recorded in the state file as it starts.

    Args:
        root: The project root.
        params: Its params.
        echo: Writes a console line.
    """

    def __init__(self, root: Path, params: Params, echo: Echo) -> None:
        self.root = root
        self.params = params
        self.echo = echo
        self.folder = stack_dir(root)
        self.logs = self.folder / "logs"
        self.started: list[Started] = []
        # the store's endpoint and credentials, the fleets' tokens: for every process started
        self.extra: dict[str, str] = {}
        self.lines: list[str] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment of the processes started: this one's, with :attr:`extra`."""
        return {**os.environ, **self.extra}

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = self.logs / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # detached: it outlives make up, and a Ctrl-C in make's terminal does not reach it
                start_new_session=True,
            )
        return process

    def _record(self, name: str, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        create_time = psutil.Process(process.pid).create_time()
        self.started.append(Started(name, process.pid, create_time, url, str(log)))
        _write_state(self.root, self.started)

    def _wait(
        self, name: str, process: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path
    ) -> None:
        def answer() -> str:
            if ready():
                return "ready"
            return "exited" if process.poll() is not None else ""

        outcome = wait_until(answer, timeout_s=START_TIMEOUT_S, interval_s=0.2)
        if outcome == "exited":
            raise StackError(f"{name} exited ({process.returncode}): {_tail(log)}")
        if outcome != "ready":
            raise StackError(f"{name} did not answer in {START_TIMEOUT_S:.0f} s: {_tail(log)}")

    # ------------------------------------------------------------------ the parts
    def store_server(self) -> dict[str, str]:
        """The S3-compatible server of the loopback stores, buckets created; its environment."""
        stores = self.params.stores
        names = [name for name in CLOUDS if getattr(stores, name).loopback]
        if not names:
            return {}
        if all(os.environ.get(endpoint_env(name)) for name in names):
            given = os.environ[endpoint_env(names[0])]
            self.lines.append(f"  {'public store':<15} {given} (given by the environment)")
            return {}
        port = free_port(HOST)
        url = f"http://{HOST}:{port}"
        command = [sys.executable, "-m", "pipelines.registry.loopback_server"]
        command += ["-H", HOST, "-p", str(port)]
        process = self._spawn("s3", command, self.env)
        log = self.logs / "s3.log"
        self._record("s3", process, url, log)
        self._wait("the S3-compatible server", process, lambda: _answers(f"{url}/moto-api/"), log)
        env, buckets = prepare_buckets(stores, url)
        self.lines.append(f"  {'public store':<15} {url} (S3-compatible; {', '.join(buckets)})")
        return env

    def airflow(self, port: int) -> tuple[AirflowComponents, str, str]:
        """Start Airflow's components (not waiting for them); their health URL and the login."""
        home = self.root / AIRFLOW_HOME
        # the tasks reach the public store and the fleets' tokens through this environment
        env = {**ui_env(self.root, home, port, cpu_cores()), **self.extra}
        login = set_login(home)
        migrated = migrate(env, self.root, home / "logs" / "migrate.log")
        if migrated.returncode:
            raise StackError(
                f"airflow db migrate exited ({migrated.returncode}): "
                f"{_tail(home / 'logs' / 'migrate.log')}"
            )
        components = start_components(self.root, env, home / "logs")
        address = f"http://{HOST}:{port}"
        for name, process in components.processes.items():
            url = address if name == "api-server" else ""
            self._record(f"airflow-{name}", process, url, components.logs[name])
        return components, address, login

    def fleets(self) -> dict[str, list[str]]:
        """Each cloud's fleet on its production version; the servers' URLs by cloud."""
        registry = open_registry(self.params, self.root)
        alias = self.params.registry.promote_alias
        for cloud in registry.replica_clouds:
            # a fresh S3-compatible server holds nothing: its aliases come back from the ledger
            sync_aliases(registry, cloud)
        started: dict[str, list[str]] = {}
        key = ""
        for cloud in CLOUDS:
            state = read_alias(registry.store(cloud), alias)
            if state is None:
                self.lines.append(
                    f"  {cloud + ' fleet':<15} skipped: no {alias} version in the {cloud} "
                    "cloud yet (make run deploys one)"
                )
                continue
            key = key or served_key(registry.record)
            started[cloud] = self._fleet(cloud, state.version, key)
            self.lines.append(
                f"  {cloud + ' fleet':<15} {', '.join(started[cloud])} serving {state.version}"
            )
        return started

    def _fleet(self, cloud: str, version: str, pseudonym_key: str) -> list[str]:
        cfg = getattr(self.params.deploy.fleets, cloud)
        env = {**self.env, PSEUDONYM_KEY_ENV: pseudonym_key}
        waiting = []
        for index in range(cfg.servers):
            name = f"fleet-{cloud}-{index + 1}"
            port = free_port(HOST)
            url = f"http://{HOST}:{port}"
            where = self.folder / "fleets" / cloud / f"server-{index + 1}"
            command = [
                sys.executable, "-m", "pipelines.cli", "serve",
                "--params", str(self.root / "params.yaml"),
                "--cloud", cloud,
                "--version", version,
                "--host", HOST,
                "--port", str(port),
                "--workers", str(cfg.workers),
                "--run-dir", str(where / "run"),
                "--request-log-dir",
                str(self.root / self.params.serve.request_log.dir / cloud),
            ]  # fmt: skip
            process = self._spawn(name, command, env)
            self._record(name, process, url, self.logs / f"{name}.log")
            waiting.append((name, process, url))
        for name, process, url in waiting:
            ready = functools.partial(_answers, f"{url}/readyz")
            self._wait(name, process, ready, self.logs / f"{name}.log")
        return [url for _, _, url in waiting]

    def prometheus(self, fleets: dict[str, list[str]]) -> None:
        """Prometheus scraping ``fleets`` with the alert rules; skipped where not installed."""
        metrics = self.params.deploy.metrics
        binary = find_binary(metrics.prometheus)
        if binary is None:
            self.lines.append(
                f"  {'Prometheus':<15} skipped: {metrics.prometheus!r} is not installed "
                "(make prometheus installs Debian's package)"
            )
            return
        folder = self.folder / "prometheus"
        config = folder / "prometheus.yml"
        rules = self.root / ALERT_RULES
        # JSON is YAML: no YAML writer needed for a generated file
        write_text(
            config,
            json.dumps(prometheus_config(rules, fleets, metrics.scrape_interval_s), indent=2),
        )
        port = free_port(HOST)
        url = f"http://{HOST}:{port}"
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--storage.tsdb.retention.time=7d",
            "--log.level=warn",
        ]
        process = self._spawn("prometheus", command, self.env)
        log = self.logs / "prometheus.log"
        self._record("prometheus", process, url, log)
        self._wait("Prometheus", process, lambda: _rules_loaded(url), log)
        self.lines.append(f"  {'Prometheus':<15} {url} (alert rules: {ALERT_RULES})")

    def tokens(self) -> dict[str, str]:
        """The fleets' tokens: the environment's, else made up now."""
        return {
            API_TOKENS_ENV: os.environ.get(API_TOKENS_ENV) or secrets.token_urlsafe(24),
            ADMIN_TOKEN_ENV: os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(24),
        }


def _rules_loaded(url: str) -> bool:
    """Prometheus is ready and has loaded the alert rules."""
    if not _answers(f"{url}/-/ready"):
        return False
    try:
        with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=2) as response:
            groups = json.loads(response.read())["data"]["groups"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False
    return bool(groups)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment for the block (the registry reads endpoints and
    credentials from it)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def up(root: Path, port: int, echo: Echo = print) -> int:
    """Start the stack for the checkout at ``root``; return once every part answers.

    Returns:
        0 when it is up; 1 when a part did not start (then everything started is stopped);
        2 when it is up already or the UI's port is taken.
    """
    alive = [entry.name for entry in read_state(root) if identify(entry) is not None]
    if alive:
        echo(f"error: the stack is up already ({', '.join(alive)}): make down stops it")
        return 2
    if port_in_use(port):
        echo(
            f"error: port {port} on {HOST} is in use (make airflow?); choose another: "
            "make up AIRFLOW_PORT=8081"
        )
        return 2
    params = load_params(root / "params.yaml")
    stack = Stack(root, params, echo)
    echo(f"starting the local stack (state: {stack.folder / STATE_FILE})")
    try:
        store_env = stack.store_server()
        tokens = stack.tokens()
        stack.extra.update(store_env | tokens)
        write_env_file(stack.folder / ENV_FILE, store_env | tokens)
        with _environment(store_env):
            components, address, login = stack.airflow(port)
            fleets = stack.fleets()
            stack.prometheus(fleets)
            why = wait_until_healthy(address + HEALTH_PATH, components, START_TIMEOUT_S)
            if why:
                raise StackError(f"Airflow {why}: " + " | ".join(components.tail(3)))
    except (RecflowError, OSError, KeyboardInterrupt) as exc:
        echo(f"error: {exc}" if not isinstance(exc, KeyboardInterrupt) else "interrupted")
        echo("stopping what was started")
        down(root, echo=lambda line: None)
        return 1
    database = database_url(root / AIRFLOW_HOME).split("://", 1)[0]
    echo("recflow stack up, on 127.0.0.1 only (make down stops it):")
    echo(f"  {'Airflow UI':<15} {address} ({database}); {login}")
    for line in stack.lines:
        echo(line)
    echo(f"  {'environment':<15} source {STACK_DIR / ENV_FILE} (the fleets' tokens, the store)")
    echo(f"  {'logs':<15} {STACK_DIR / 'logs'}/, {AIRFLOW_HOME}/logs/<component>.log")
    return 0


def _ours(
    entries: Sequence[Started],
) -> tuple[list[psutil.Process], list[psutil.Process], list[str]]:
    """The recorded processes still running, what they started, and the entries left alone."""
    roots: list[psutil.Process] = []
    gone: list[str] = []
    for entry in entries:
        process = identify(entry)
        if process is None:
            gone.append(entry.name)
        else:
            roots.append(process)
    found: dict[int, psutil.Process] = {}
    groups = set()
    for process in roots:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(process.pid))
            for child in process.children(recursive=True):
                found[child.pid] = child
    # a process of a recorded one's group whose parent exited is still one of ours: the group's
    # id cannot be taken by another process while a member of it runs
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.pid not in found and os.getpgid(process.pid) in groups:
                found[process.pid] = process
    root_pids = {process.pid for process in roots}
    return roots, [p for pid, p in found.items() if pid not in root_pids], gone


def down(root: Path, echo: Echo = print) -> int:
    """Stop exactly the processes ``make up`` recorded for ``root``, and what they started."""
    entries = read_state(root)
    state = stack_dir(root) / STATE_FILE
    if not entries:
        echo(f"nothing to stop: no stack recorded in {state}")
        return 0
    roots, descendants, gone = _ours(entries)
    for process in roots:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(roots + descendants, timeout=STOP_TIMEOUT_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=KILL_TIMEOUT_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _, alive = psutil.wait_procs(alive, timeout=KILL_TIMEOUT_S)
    if alive:
        echo(f"error: still running after SIGKILL: {sorted(p.pid for p in alive)}")
        return 1
    state.unlink(missing_ok=True)
    names = [entry.name for entry in entries if entry.name not in gone]
    echo(
        f"stopped {len(names)} process(es) and {len(descendants)} they started: {', '.join(names)}"
    )
    if gone:
        echo(f"already gone (or the id now another process's, left alone): {', '.join(gone)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.main_job.stack up|down``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.main_job.stack", description=__doc__.splitlines()[0]
    )
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the project root")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the UI's port (8080)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    # make down from a terminal: a Ctrl-C ends the wait, not the state file
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.action == "up":
            return up(root, args.port, echo=lambda line: print(line, flush=True))
        return down(root, echo=lambda line: print(line, flush=True))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
