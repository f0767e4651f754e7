"""``make drift-demo``: two days of traffic, the second one drifted, and the loop that notices.

1. **Day 1** runs the main job (``python -m pipelines.main_job``, what ``make run`` runs): the
   chain through the ``recsys_retrain`` DAG trains, gates, registers and deploys a model, whose
   reference for the monitor is stored with its version.
2. **Day 2** is the next logical date with one drift knob of the generator turned
   (``generate.drift.<knob>``; default ``category_shift`` 0.5): its batch is generated,
   ingested, validated and prepared (``dvc repro prepare``).
3. A local server serves the private cloud's production version (``recflow serve --cloud
   private``), with the model registry's pseudonymization key, and the day-2 held-out sessions
   are replayed at it (``recflow replay``), so its request log holds day-2 traffic.
4. The Airflow stack of ``make airflow`` (scheduler, DAG processor, triggerer, API server, on
   SQLite in ``.airflow/``) starts; ``recsys_retrain`` and ``recsys_drift_monitor`` are
   unpaused and the monitor is triggered from the command line. Its verdict per cloud, and
   whether ``signal_drift`` emitted the drift asset event, are printed.
5. On an event the scheduler starts the asset-triggered ``recsys_retrain`` run; the demo waits
   for it and prints the trigger line of ``recflow registry show`` for the version it
   registered: the drift that caused it.

``--no-knob`` runs the same two days without drift: the monitor says ``no_drift``, no event is
emitted and no retrain run starts. ``--skip-day1`` starts from a project whose day 1 has run.

Both DAGs are scheduled on a cron too (``airflow.schedule``, ``monitor.schedule``); with
``catchup=False``, unpausing a DAG starts a run for its latest cron time at once. The demo sets
``airflow.start_date`` to tomorrow while it runs, so the only runs are the ones it
asks for: the triggered monitor run, and the retrain the drift starts. It puts the drift knob
and the start date back as they were when it ends. Day 2's date goes where a run's date always
goes, the run overlay (``params.run.yaml``, as ``set_logical_date --form '{}'
--set-logical-date DAY2`` writes it), and stays there as after a run.

The console shows one line per step with its result; long steps show progress. The output of
every command (Airflow's included) goes to files under ``.airflow/logs/drift-demo/<start>/``.
Every process the demo starts is stopped when it ends, fails or is interrupted. Waits are on
states (``wait_until``); their limits only end a hung run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast
from urllib.parse import quote

from ruamel.yaml import YAML
from ruamel.yaml.events import (
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    ScalarEvent,
)

from pipelines.core.errors import RecflowError
from pipelines.core.params import ConfigError, Params, load_params
from pipelines.core.params.loading import set_run
from pipelines.core.project import PROJECT_ROOT, interpreter_env
from pipelines.core.run_date import mapping_value
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import AIRFLOW_HOME, airflow_command
from pipelines.main_job.progress import clock, duration
from pipelines.main_job.ui import (
    HEALTH_PATH,
    HOST,
    PASSWORDS_FILE,
    AirflowApi,
    AirflowComponents,
    cpu_cores,
    migrate,
    set_login,
    start_components,
    stop_components,
    ui_env,
    wait_until_healthy,
)
from pipelines.registry.loopback import loopback_unless_given
from pipelines.rollout import processes

Echo = Callable[[str], None]

MONITOR_DAG = "recsys_drift_monitor"
RETRAIN_DAG = "recsys_retrain"
SIGNAL_TASK = "signal_drift"
KNOBS = ("category_shift", "price_inflation", "new_item_share", "popularity_shift")
DEFAULT_KNOB = "category_shift=0.5"
CLOUD = "private"
# day-2 requests replayed: every held-out session once, and at least this many times the
# monitor's minimum, so the window's traffic is mostly day 2's (day 1's rollout replayed some)
MIN_REQUESTS_FACTOR = 4
MAX_REQUESTS = 20000
# limits that only end a hung run: nothing passes or fails by how fast it came
SERVER_START_S = 180.0
REPLAY_S = 600.0
AIRFLOW_START_S = 300.0
DAG_PARSE_S = 300.0
MONITOR_RUN_S = 1800.0
RETRAIN_RUN_S = 7200.0
RUN_CREATED_S = 300.0
POLL_S = 2.0
FINISHED = ("success", "failed")
WIDTH = 8
INDENT = " " * 4


class DemoError(RecflowError):
    """A step of the demo failed; the message says which and where its output is."""


def echo_line(text: str) -> None:
    """Write one console line at once."""
    print(text, flush=True)


def step_line(state: str, text: str) -> str:
    """A console line about one step: the time, its state and what it did."""
    return f"{clock(dt.datetime.now(dt.UTC))} {state:<{WIDTH}} {text}"


# ---------------------------------------------------------------------------- params.yaml


def set_param(params_path: Path, dotted: str, value: str) -> str:
    """Write ``value`` as the text of the scalar ``dotted`` in ``params_path``; every other
    byte stays as it was (comments included).

    Args:
        params_path: The params file.
        dotted: ``section.key`` or deeper, naming a single value that exists.
        value: The YAML text of the new value (``0.5``, ``"2026-01-01"``).

    Returns:
        The value's text before the change.

    Raises:
        ConfigError: The key is missing or not a single value.
    """
    text = params_path.read_bytes().decode("utf-8")
    events = iter(YAML().parse(text))
    node: Event | None = next(
        (e for e in events if isinstance(e, CollectionStartEvent | ScalarEvent)), None
    )
    for key in dotted.split("."):
        if not isinstance(node, MappingStartEvent):
            raise ConfigError(f"{params_path}: {dotted} is not under a mapping")
        node = mapping_value(events, key)
        if node is None:
            raise ConfigError(f"{params_path} has no {dotted}")
    if not isinstance(node, ScalarEvent) or node.style not in (None, '"', "'"):
        raise ConfigError(f"{params_path}: {dotted} is not a single plain or quoted value")
    assert node.start_mark is not None and node.end_mark is not None
    start, end = node.start_mark.index, node.end_mark.index
    before = text[start:end]
    params_path.write_bytes(f"{text[:start]}{value}{text[end:]}".encode())
    return before


@contextlib.contextmanager
def params_set(params_path: Path, values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` (dotted key -> YAML text) in ``params_path``; put them back on exit."""
    before: dict[str, str] = {}
    try:
        for dotted, value in values.items():
            before[dotted] = set_param(params_path, dotted, value)
        load_params(params_path)  # the file is still valid
        yield
    finally:
        for dotted, value in reversed(before.items()):
            set_param(params_path, dotted, value)


# ---------------------------------------------------------------------------- commands


@dataclass
class Logs:
    """The demo's log folder: one file per command."""

    folder: Path
    counter: int = 0

    def file(self, name: str) -> Path:
        """A new log file for the command ``name``."""
        self.counter += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"{self.counter:02d}-{name}.log"


def run_logged(
    command: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, list[str]]:
    """Run ``command``; its output to ``log_path``, each line to ``on_line`` as it comes.

    Returns:
        The exit code and the output's lines.
    """
    lines: list[str] = []
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            # a group of its own: on Ctrl-C the demo stops it and all its children in order
            start_new_session=True,
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                lines.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            process.wait()
        except BaseException:
            # it only signals the group and waits: the type of the pipes does not matter
            stop_components(
                AirflowComponents({"command": cast("subprocess.Popen[bytes]", process)})
            )
            raise
        finally:
            process.stdout.close()
    return process.returncode, lines


def _failed(what: str, code: int, lines: list[str], log_path: Path) -> DemoError:
    shown = [line for line in lines if line.strip()][-8:]
    tail = "".join(f"\n{INDENT}{line}" for line in shown)
    return DemoError(f"{what} failed (exit {code}); log: {log_path}{tail}")


# ---------------------------------------------------------------------------- Airflow


@dataclass
class AirflowStack:
    """Airflow's components with ``make airflow``'s settings on a free port, stopped on exit."""

    root: Path
    log_path: Path
    port: int = field(default_factory=processes.free_port)
    components: AirflowComponents | None = None

    @property
    def home(self) -> Path:
        """Airflow's home: the main job's."""
        return self.root / AIRFLOW_HOME

    @property
    def env(self) -> dict[str, str]:
        """The environment of the stack and of the ``airflow`` commands run against it."""
        return ui_env(self.root, self.home, self.port, cpu_cores())

    def start(self) -> AirflowApi:
        """Start every component; wait until the API server answers.

        Raises:
            DemoError: Airflow exited or did not answer in time.
        """
        set_login(self.home)
        if migrate(self.env, self.root, self.log_path).returncode:
            raise DemoError(f"airflow db migrate failed; its output: {self.log_path}")
        self.components = start_components(self.root, self.env, self.log_path.parent / "airflow")
        base = f"http://{HOST}:{self.port}"
        why = wait_until_healthy(base + HEALTH_PATH, self.components, AIRFLOW_START_S)
        if why:
            raise DemoError(f"Airflow did not start ({why}); its output: {self.log_path}")
        return AirflowApi(base, self.home / PASSWORDS_FILE)

    def cli(self, logs: Logs, *args: str) -> list[str]:
        """Run ``airflow <args>`` against this stack's database.

        Raises:
            DemoError: The command failed.
        """
        log_path = logs.file("airflow-" + "-".join(args[:2]))
        code, lines = run_logged(
            airflow_command(*args), cwd=self.root, env=self.env, log_path=log_path
        )
        if code:
            raise _failed(f"airflow {' '.join(args)}", code, lines, log_path)
        return lines

    def stop(self) -> None:
        """Stop every component (as Ctrl-C would), then what is left of its process group."""
        if self.components is not None:
            stop_components(self.components)
            self.components = None


def _dag_ready(api: AirflowApi, dag_id: str, now: dt.datetime) -> bool:
    """The DAG is parsed, and its next cron run is after ``now`` (parsed with the demo's
    params: unpausing it starts no run)."""
    dag = api.get(f"dags/{dag_id}")
    if not dag or dag.get("is_stale", False):
        return False
    after = dag.get("next_dagrun_run_after")
    return after is None or dt.datetime.fromisoformat(str(after).replace("Z", "+00:00")) > now


def _import_errors(api: AirflowApi) -> list[str]:
    answer = api.get("importErrors") or {}
    return [
        f"{e.get('filename')}: {e.get('stack_trace', '')}" for e in answer.get("import_errors", [])
    ]


def follow_run(
    api: AirflowApi,
    dag_id: str,
    run_id: str,
    timeout_s: float,
    echo: Echo,
) -> tuple[str, dict[str, str]]:
    """Wait for a DAG run to finish, echoing a line per task that ends.

    Returns:
        The run's final state and its tasks' states.

    Raises:
        DemoError: The run did not finish within ``timeout_s``.
    """
    said: dict[str, str] = {}
    started = time.monotonic()

    def finished() -> tuple[str, dict[str, str]] | None:
        tasks = api.tasks(dag_id, run_id)
        for task, state in tasks.items():
            if (
                state in ("success", "failed", "skipped", "upstream_failed")
                and said.get(task) != state
            ):
                said[task] = state
                echo(INDENT + step_line(state, f"{task} ({duration(time.monotonic() - started)})"))
        run = api.get(f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
        state = str(run.get("state")) if run else ""
        return (state, tasks) if state in FINISHED else None

    result = wait_until(finished, timeout_s=timeout_s, interval_s=POLL_S)
    if not result:
        raise DemoError(f"{dag_id} run {run_id} did not finish in {timeout_s:.0f} s")
    return result


# ---------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Knob:
    """One drift knob of the generator and its strength."""

    name: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Knob:
        """``category_shift=0.5`` -> Knob."""
        name, _, value = text.partition("=")
        if name not in KNOBS:
            raise argparse.ArgumentTypeError(f"unknown knob {name!r}; knobs: {', '.join(KNOBS)}")
        try:
            strength = float(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"knob {name} needs a number: {text!r}") from exc
        if not 0 < strength <= 1:
            raise argparse.ArgumentTypeError(f"knob {name} must be in (0, 1], got {strength}")
        return cls(name, strength)


@dataclass(frozen=True)
class Scenario:
    """What the demo runs."""

    root: Path
    day1: dt.date
    day2: dt.date
    knob: Knob | None
    skip_day1: bool

    @property
    def params_path(self) -> Path:
        """The project's params file."""
        return self.root / "params.yaml"


class Demo:
    """The demo's steps on one project, with everything they start stopped at the end."""

    def __init__(self, scenario: Scenario, logs: Logs, echo: Echo = echo_line) -> None:
        self.s = scenario
        self.logs = logs
        self.echo = echo
        self.env = interpreter_env()
        self.server: subprocess.Popen[bytes] | None = None
        self.stack: AirflowStack | None = None
        self.timings: dict[str, float] = {}

    # -- helpers
    def _params(self) -> Params:
        return load_params(self.s.params_path)

    def _timed(self, name: str, started: float) -> str:
        self.timings[name] = time.perf_counter() - started
        return duration(self.timings[name])

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    # -- day 1
    def day1(self) -> None:
        """The main job for day 1: the chain trains, registers and deploys."""
        started = time.perf_counter()
        self.echo(step_line("start", f"day 1 ({self.s.day1}): the main job, as make run"))
        log_path = self.logs.file("day1-main-job")
        command = self._python(
            "-m", "pipelines.main_job", "--root", str(self.s.root), "--no-push",
            "--logical-date", self.s.day1.isoformat(),
        )  # fmt: skip
        code, lines = run_logged(
            command,
            cwd=self.s.root,
            env=self.env,
            log_path=log_path,
            on_line=lambda line: self.echo(INDENT + line) if line.strip() else None,
        )
        if code:
            raise _failed("day 1's main job", code, lines, log_path)
        version = self.production()
        self.echo(
            step_line(
                "done", f"day 1: {version[:12]} serves in private ({self._timed('day1', started)})"
            )
        )

    def production(self) -> str:
        """The private cloud's production version."""
        from pipelines.registry.clouds import open_registry
        from pipelines.registry.promotion import resolve

        params = self._params()
        return resolve(open_registry(params, self.s.root), params.registry.promote_alias, CLOUD)

    # -- day 2: the batch
    def day2_batch(self) -> None:
        """Generate, ingest, validate and prepare day 2's batch (``dvc repro prepare``)."""
        started = time.perf_counter()
        what = f"knob {self.s.knob.name} {self.s.knob.value}" if self.s.knob else "no knob"
        self.echo(step_line("start", f"day 2 ({self.s.day2}) batch, {what}: dvc repro prepare"))
        log_path = self.logs.file("day2-dvc-repro")

        def progress(line: str) -> None:
            if line.startswith("Running stage"):
                self.echo(INDENT + line.rstrip(":"))

        code, lines = run_logged(
            self._python("-m", "dvc", "repro", "prepare"),
            cwd=self.s.root,
            env=self.env,
            log_path=log_path,
            on_line=progress,
        )
        if code:
            raise _failed("dvc repro prepare", code, lines, log_path)
        metrics = self.s.root / "metrics" / "prepare.json"
        figure = ""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            users = json.loads(metrics.read_text(encoding="utf-8"))["users"]
            figure = f"{users:,} users; "
        self.echo(step_line("done", f"day 2 batch: {figure}({self._timed('day2_batch', started)})"))

    # -- day 2: the traffic
    def day2_traffic(self, version: str) -> None:
        """Serve ``version`` from the private store and replay day 2's held-out sessions."""
        from pipelines.registry.clouds import open_registry
        from pipelines.registry.pseudonyms import pseudonym_key
        from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, API_TOKENS_ENV
        from pipelines.serving.server.pseudonyms import PSEUDONYM_KEY_ENV

        started = time.perf_counter()
        params = self._params()
        key = pseudonym_key(open_registry(params, self.s.root).record).hex()
        client, admin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        env = {**self.env, API_TOKENS_ENV: client, ADMIN_TOKEN_ENV: admin, PSEUDONYM_KEY_ENV: key}
        port = processes.free_port()
        url = f"http://{processes.HOST}:{port}"
        request_log = self.s.root / params.serve.request_log.dir / CLOUD
        run_dir = self.logs.folder / "server-run"
        self.echo(step_line("start", f"serve {version[:12]} from the private store at {url}"))
        log_path = self.logs.file("serve")
        command = self._python(
            "-m", "pipelines.cli", "serve", "--params", str(self.s.params_path),
            "--cloud", CLOUD, "--version", version, "--host", processes.HOST,
            "--port", str(port), "--workers", "1", "--run-dir", str(run_dir),
            "--request-log-dir", str(request_log),
        )  # fmt: skip
        self.server = processes.start(command, log_path, env)
        server = self.server

        def ready() -> bool:
            if server.poll() is not None:
                raise DemoError(f"the server exited ({server.returncode}); log: {log_path}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer,
            ):
                return bool(answer.status == 200)
            return False

        if not wait_until(ready, timeout_s=SERVER_START_S, interval_s=0.5):
            raise DemoError(f"the server was not ready in {SERVER_START_S:.0f} s; log: {log_path}")
        sessions = self._sessions(params)
        requests = min(
            max(sessions, MIN_REQUESTS_FACTOR * params.monitor.min_requests), MAX_REQUESTS
        )
        replay_log = self.logs.file("replay")
        command = self._python(
            "-m", "pipelines.cli", "replay", "--params", str(self.s.params_path),
            "--endpoint", url, "--prepared", str(self.s.root / "data" / "prepared"),
            "--split", "test", "--requests", str(requests), "--max-seconds", str(REPLAY_S),
            "--json",
        )  # fmt: skip
        code, lines = run_logged(command, cwd=self.s.root, env=env, log_path=replay_log)
        if code:
            raise _failed("recflow replay", code, lines, replay_log)
        first = next((i for i, line in enumerate(lines) if line.startswith("{")), len(lines))
        report = json.loads("\n".join(lines[first:]))
        # the server writes its request log's last window when it stops
        self.stop_server()
        rows = self._logged_rows(request_log, started)
        self.echo(
            step_line(
                "done",
                f"replayed {report['answered']:,} day-2 requests ({sessions:,} sessions), hit rate "
                f"{report['hit_rate']:.3f}; request log: {rows:,} rows "
                f"({self._timed('day2_traffic', started)})",
            )
        )

    def _sessions(self, params: Params) -> int:
        import pyarrow.parquet as pq

        del params
        return int(pq.read_metadata(self.s.root / "data" / "prepared" / "test.parquet").num_rows)

    def _logged_rows(self, folder: Path, since: float) -> int:
        """Rows in request-log files written since this step started (perf counter -> mtime)."""
        import pyarrow.parquet as pq

        cutoff = time.time() - (time.perf_counter() - since)
        return sum(
            pq.read_metadata(path).num_rows
            for path in folder.glob("date=*/requests-*.parquet")
            if path.stat().st_mtime >= cutoff
        )

    def stop_server(self) -> None:
        """Stop the demo's server (it writes its request log's last window first)."""
        if self.server is not None:
            if self.server.poll() is None:
                self.server.send_signal(signal.SIGTERM)
            processes.stop(self.server)
            self.server = None

    # -- the loop
    def loop(self) -> tuple[bool, list[str]]:
        """Start Airflow, run the monitor, and follow the retrain it starts, if any.

        Returns:
            Whether a retrain ran, and the HTML reports to look at.
        """
        started = time.perf_counter()
        self.stack = AirflowStack(self.s.root, self.logs.file("airflow-standalone"))
        self.echo(
            step_line(
                "start",
                f"Airflow (scheduler, dag-processor, triggerer, api-server) on "
                f"http://{HOST}:{self.stack.port}; output: {self.stack.log_path}",
            )
        )
        api = self.stack.start()

        def parsed() -> bool:
            errors = _import_errors(api)
            if errors:
                raise DemoError("DAG import errors:\n" + "\n".join(errors))
            now = dt.datetime.now(dt.UTC)
            return _dag_ready(api, MONITOR_DAG, now) and _dag_ready(api, RETRAIN_DAG, now)

        if not wait_until(parsed, timeout_s=DAG_PARSE_S, interval_s=POLL_S):
            raise DemoError(f"the DAGs were not parsed in {DAG_PARSE_S:.0f} s")
        before = {run["dag_run_id"] for run in api.runs(RETRAIN_DAG)}
        self.echo(step_line("done", f"Airflow up, DAGs parsed ({self._timed('airflow', started)})"))

        started = time.perf_counter()
        # the retrain DAG first: an asset event queues a run only for an unpaused DAG
        self.stack.cli(self.logs, "dags", "unpause", RETRAIN_DAG)
        self.stack.cli(self.logs, "dags", "unpause", MONITOR_DAG)
        run_id = f"drift_demo__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
        self.stack.cli(self.logs, "dags", "trigger", MONITOR_DAG, "--run-id", run_id)
        self.echo(step_line("start", f"{MONITOR_DAG} run {run_id} (unpaused and triggered)"))
        state, tasks = follow_run(api, MONITOR_DAG, run_id, MONITOR_RUN_S, self.echo)
        reports = self.verdicts()
        emitted = tasks.get(SIGNAL_TASK) == "success"
        signal_text = (
            "drift asset event emitted"
            if emitted
            else f"{SIGNAL_TASK} {tasks.get(SIGNAL_TASK)}: no asset event"
        )
        self.echo(
            step_line(state, f"{MONITOR_DAG}: {signal_text} ({self._timed('monitor', started)})")
        )
        if state != "success":
            raise DemoError(
                f"{MONITOR_DAG} run {run_id} {state}; Airflow's output: {self.stack.log_path}"
            )
        if not emitted:
            runs = [r for r in api.runs(RETRAIN_DAG) if r["dag_run_id"] not in before]
            self.echo(step_line("done", f"{RETRAIN_DAG}: {len(runs)} new runs"))
            return False, reports

        started = time.perf_counter()

        def retrain_run() -> dict[str, Any] | None:
            return next(
                (
                    r
                    for r in api.runs(RETRAIN_DAG)
                    if r["dag_run_id"] not in before and r.get("run_type") == "asset_triggered"
                ),
                None,
            )

        run = wait_until(retrain_run, timeout_s=RUN_CREATED_S, interval_s=POLL_S)
        if not run:
            raise DemoError(f"the scheduler started no asset-triggered {RETRAIN_DAG} run")
        self.echo(step_line("start", f"{RETRAIN_DAG} run {run['dag_run_id']} (asset-triggered)"))
        state, _ = follow_run(api, RETRAIN_DAG, str(run["dag_run_id"]), RETRAIN_RUN_S, self.echo)
        self.echo(step_line(state, f"{RETRAIN_DAG} ({self._timed('retrain', started)})"))
        if state != "success":
            raise DemoError(
                f"{RETRAIN_DAG} run {run['dag_run_id']} {state}; "
                f"task logs under {self.stack.home / 'logs'}"
            )
        self.show_trigger()
        return True, reports

    def verdicts(self) -> list[str]:
        """Echo each cloud's verdict from its ``latest.json``; return the HTML reports."""
        params = self._params()
        out = self.s.root / params.monitor.out
        reports: list[str] = []
        for cloud in params.monitor.clouds:
            latest = out / cloud / "latest.json"
            try:
                pointer = json.loads(latest.read_text(encoding="utf-8"))
                folder = (out / cloud / pointer["summary"]).parent
                summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.echo(INDENT + f"monitor {cloud}: no summary ({exc})")
                continue
            drifted = ", ".join(
                f"{d['feature']} {float(d['score']):.3f} >= {float(d['threshold']):g}"
                for d in summary.get("drifted", [])
            )
            rows = summary.get("rows")
            self.echo(
                INDENT
                + f"monitor {cloud}: {summary.get('verdict')}"
                + (f" ({rows:,} requests)" if isinstance(rows, int) else "")
                + (f"; drifted: {drifted}" if drifted else "")
            )
            for name in ("report.html",):
                if (folder / name).is_file():
                    reports.append(str(folder / name))
            if (out / cloud / "trend.html").is_file():
                reports.append(str(out / cloud / "trend.html"))
        return reports

    def show_trigger(self) -> None:
        """Echo the trigger line of ``recflow registry show`` for the new candidate."""
        from pipelines.registry.clouds import open_registry
        from pipelines.registry.promotion import resolve

        params = self._params()
        version = resolve(
            open_registry(params, self.s.root), params.registry.candidate_alias, CLOUD
        )
        log_path = self.logs.file("registry-show")
        command = self._python(
            "-m", "pipelines.cli", "registry", "--params", str(self.s.params_path), "show", version
        )
        code, lines = run_logged(command, cwd=self.s.root, env=self.env, log_path=log_path)
        if code:
            raise _failed(f"recflow registry show {version}", code, lines, log_path)
        trigger = next((line for line in lines if line.startswith("trigger:")), "trigger: (none)")
        self.echo(step_line("done", f"new version {version[:12]}: recflow registry show {version}"))
        self.echo(INDENT + trigger)

    def close(self) -> None:
        """Stop everything the demo started."""
        self.stop_server()
        if self.stack is not None:
            self.stack.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def parse_args(argv: Sequence[str] | None, today: dt.date) -> argparse.Namespace:
    """The command line, with day 2 defaulting to ``today``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.main_job.drift_demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the project root")
    parser.add_argument(
        "--knob",
        type=Knob.parse,
        default=Knob.parse(DEFAULT_KNOB),
        metavar="NAME=VALUE",
        help=f"the drift knob of day 2 (default {DEFAULT_KNOB}; knobs: {', '.join(KNOBS)})",
    )
    parser.add_argument("--no-knob", action="store_true", help="day 2 without drift")
    parser.add_argument(
        "--day2", type=_date_arg, default=today, metavar="YYYY-MM-DD", help="day 2 (default: today)"
    )
    parser.add_argument(
        "--skip-day1", action="store_true", help="day 1 has run: start from its production version"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the two-day drift demo."""
    now = dt.datetime.now(dt.UTC)
    args = parse_args(argv, now.date())
    root = args.root.resolve()
    scenario = Scenario(
        root=root,
        day1=args.day2 - dt.timedelta(days=1),
        day2=args.day2,
        knob=None if args.no_knob else args.knob,
        skip_day1=args.skip_day1,
    )
    try:
        params = load_params(scenario.params_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs = Logs(root / AIRFLOW_HOME / "logs" / "drift-demo" / f"{now:%Y%m%dT%H%M%SZ}")
    echo = echo_line
    echo(
        f"recflow drift demo: day 1 {scenario.day1}, day 2 {scenario.day2} "
        + (f"with {scenario.knob.name}={scenario.knob.value}" if scenario.knob else "without drift")
    )
    echo(f"logs: {logs.folder}")
    signal.signal(signal.SIGTERM, _interrupt)
    demo = Demo(scenario, logs, echo)
    started = time.perf_counter()
    knobs = {f"generate.drift.{name}": "0.0" for name in KNOBS}
    if scenario.knob is not None:
        knobs[f"generate.drift.{scenario.knob.name}"] = repr(scenario.knob.value)
    # no cron run while the demo runs (see the module's docstring)
    schedule = {"airflow.start_date": f'"{now.date() + dt.timedelta(days=1)}"'}
    try:
        with loopback_unless_given(params.stores) as store_env:
            # the public store's loopback server outlives every step: the main job, the
            # server, Airflow's tasks and the retrain all reach it through the environment
            os.environ.update(store_env)
            demo.env = interpreter_env()
            if not scenario.skip_day1:
                demo.day1()
            version = demo.production()
            with params_set(scenario.params_path, {**knobs, **schedule}):
                try:
                    # day 2's date, through the run overlay as a run's first task writes it
                    set_run(scenario.params_path, {}, scenario.day2)
                    demo.day2_batch()
                    demo.day2_traffic(version)
                    retrained, reports = demo.loop()
                finally:
                    # stopped before the params are put back: no DAG is parsed with them
                    demo.close()
    except KeyboardInterrupt:
        echo("recflow drift demo: interrupted; every process it started is stopped")
        return 130
    except RecflowError as exc:
        echo(f"error: {exc}")
        return exc.exit_code
    finally:
        demo.close()
        logs.folder.mkdir(parents=True, exist_ok=True)
        (logs.folder / "timings.json").write_text(json.dumps(demo.timings, indent=2) + "\n")
    echo("")
    outcome = "drift found, retrain ran" if retrained else "no drift asset event, no retrain"
    echo(f"recflow drift demo: {outcome} in {duration(time.perf_counter() - started)}")
    for report in reports:
        echo(f"  {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
