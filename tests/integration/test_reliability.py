"""Reliability of ``recsys_retrain`` under the scheduler, with real failures, on a tiny copy.

Airflow's components run as ``make airflow`` starts them (``pipelines.main_job.ui``: scheduler,
DAG processor, triggerer and API server on 127.0.0.1, the local executor, SQLite), once for the
module. The public store is the loopback S3 server behind a TCP proxy the test controls, so a
store outage is a real network failure (connections closed unanswered), not a mocked client.

- The scheduler killed mid-run (``SIGKILL`` to it, its executor workers and the task they ran)
  and started again: the run finishes; the tasks that had finished are not run again (same try,
  same start), the interrupted one runs again.
- A store failure in ``register``: a blip shorter than the store client's attempts is absorbed
  by botocore's own retries (one task try); an outage longer than them fails the try, and
  Airflow's retry succeeds once the store is back.
- Two manual triggers at once: ``max_active_runs=1`` queues one until the other has ended; both
  succeed, ``params.yaml`` is untouched, the run overlay is whole and holds the last run's
  values, ``dvc.lock`` parses, records the last run's values and ``dvc status`` is clean, the
  registry verifies. One of them reruns the killed run's form: run first, it changes nothing
  (every DVC stage up to date, no new version).

The runs skip the rollout (the form's ``skip_deploy``): the fleets are tested elsewhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import yaml

from pipelines.core.params import load_params
from pipelines.core.params.run_form import overlay_path, read_overlay
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import (
    AIRFLOW_HOME,
    DAG_ID,
    HOST,
    airflow_command,
    component_commands,
)
from pipelines.main_job.ui import (
    HEALTH_PATH,
    PASSWORDS_FILE,
    AirflowApi,
    AirflowComponents,
    migrate,
    set_login,
    start_components,
    stop_components,
    ui_env,
    wait_until_healthy,
)
from pipelines.registry.loopback import free_port, loopback_s3
from pipelines.registry.stores.credentials import endpoint_env
from pipelines.stages.table import STAGES
from tests.integration.conftest import AIRFLOW_OVERRIDES
from tests.integration.project import copy_project, dvc

pytestmark = pytest.mark.slow

DATA_DATE = "2026-11-20"
# no rollout in these runs: the fleets are not what is under test here
FORM = {"data_date": DATA_DATE, "skip_deploy": True}
DVC_STAGES = [spec.name for spec in STAGES if spec.tracked]
ENDED = ("success", "failed")
# limits that only end a hung test: nothing passes or fails by how fast it came
START_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 1800.0
TASK_TIMEOUT_S = 900.0
CLI_TIMEOUT_S = 300
POLL_S = 0.5


def _overrides() -> dict[str, dict[str, Any]]:
    """The integration tests' tiny settings; a retry a few seconds after a failure; a start
    date after today, so unpausing the DAG starts no scheduled run beside the triggered ones."""
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    return {
        **AIRFLOW_OVERRIDES,
        "airflow": {
            "retries": 1,
            "retry_delay_minutes": 0.5,
            "retry_exponential_backoff": 0.0,
            "start_date": tomorrow.isoformat(),
        },
    }


# ---------------------------------------------------------------------------- the store proxy


class StoreProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that can refuse connections.

    ``fail_next(n)`` refuses the next ``n`` connections; ``down()`` refuses every one until
    ``up()``. A refused connection is accepted and closed at once, before a byte of the request
    is answered: the client sees the connection die, as when a server or a load balancer
    restarts.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self.address = f"http://{HOST}:{self.port}"
        self.lock = threading.Lock()
        self.to_fail = 0
        self.is_down = False
        self.reset = 0
        self.forwarded = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.to_fail = count

    def down(self) -> None:
        with self.lock:
            self.is_down = True

    def up(self) -> None:
        with self.lock:
            self.is_down = False

    def counts(self) -> tuple[int, int]:
        """(connections refused, connections forwarded) so far."""
        with self.lock:
            return self.reset, self.forwarded

    def close(self) -> None:
        self.closed.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                failing = self.is_down or self.to_fail > 0
                if failing:
                    self.to_fail = max(0, self.to_fail - 1)
                    self.reset += 1
                else:
                    self.forwarded += 1
            if failing:
                client.close()
                continue
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target)
        except OSError:
            client.close()
            return

        def pump(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(server, client), daemon=True)
        back.start()
        pump(client, server)
        back.join()
        client.close()
        server.close()


# ---------------------------------------------------------------------------- Airflow


class Api(AirflowApi):
    """Airflow's REST API (``make airflow``'s client), with this test's views of one run."""

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get(f"dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
        return run

    def task_rows(self, run_id: str) -> dict[str, dict[str, Any]]:
        rows = self.get(f"dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=100")
        return {row["task_id"]: row for row in rows["task_instances"]}

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}{HEALTH_PATH}", timeout=30) as response:
            health: dict[str, Any] = json.loads(response.read())
            return health


@dataclass
class Stack:
    """The project copy, Airflow's components on it, and the proxied public store."""

    root: Path
    env: dict[str, str]
    components: AirflowComponents
    api: Api
    proxy: StoreProxy

    def airflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            airflow_command(*args),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    def trigger(self, run_id: str, form: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.airflow(
            "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(form)
        )

    def wait_for_end(self, run_id: str) -> str:
        def ended() -> str:
            state = str(self.api.run(run_id)["state"])
            return state if state in ENDED else ""

        state = wait_until(ended, timeout_s=RUN_TIMEOUT_S, interval_s=1)
        assert state, f"run {run_id} did not end\n" + "\n".join(self.components.tail())
        return state

    def wait_for_task(self, run_id: str, task: str, states: tuple[str, ...]) -> str:
        """Wait until ``task`` is in one of ``states`` (or its run ended); its state."""

        def reached() -> str:
            state = str(self.api.task_rows(run_id)[task]["state"])
            if state in states:
                return state
            run = str(self.api.run(run_id)["state"])
            return f"{task} {state}, run {run}" if run in ENDED else ""

        found = wait_until(reached, timeout_s=TASK_TIMEOUT_S, interval_s=POLL_S)
        assert found in states, f"{task} of {run_id}: {found or 'timed out'}"
        return found

    def registry(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "registry", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = copy_project(tmp_path_factory.mktemp("reliability") / "project", _overrides())
    home = root / AIRFLOW_HOME
    port = free_port()
    env = ui_env(root, home, port, workers=2)
    env["GX_ANALYTICS_ENABLED"] = "false"
    with loopback_s3(load_params(root / "params.yaml").stores) as server:
        host, _, target_port = server.endpoint.removeprefix("http://").rpartition(":")
        proxy = StoreProxy((host, int(target_port)))
        # every task reaches the public store through the proxy
        env.update({**server.env, endpoint_env("public"): proxy.address})
        set_login(home)
        assert migrate(env, root, home / "logs" / "migrate.log").returncode == 0
        components = start_components(root, env, home / "logs")
        try:
            address = f"http://{HOST}:{port}"
            why = wait_until_healthy(address + HEALTH_PATH, components, START_TIMEOUT_S)
            assert not why, why + "\n" + "\n".join(components.tail())
            api = Api(address, home / PASSWORDS_FILE, timeout_s=60)

            def parsed() -> bool:
                with contextlib.suppress(urllib.error.HTTPError):
                    dag = api.get(f"dags/{DAG_ID}")
                    return bool(dag) and not dag.get("is_stale", False)
                return False

            assert wait_until(parsed, timeout_s=START_TIMEOUT_S, interval_s=1), components.tail()
            stack = Stack(root, env, components, api, proxy)
            unpaused = stack.airflow("dags", "unpause", DAG_ID)
            assert unpaused.returncode == 0, unpaused.stderr[-3000:]
            yield stack
        finally:
            stop_components(components)
            proxy.close()


# ---------------------------------------------------------------------------- 1. the scheduler


def _kill_tree(process: psutil.Process) -> None:
    """SIGKILL a process and everything it started (a crash of the scheduler's host service)."""
    tree = [process, *process.children(recursive=True)]
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)


@dataclass(frozen=True)
class KilledRun:
    run_id: str
    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]
    state: str
    killed: int


@pytest.fixture(scope="module")
def killed_run(stack: Stack) -> KilledRun:
    """A run whose scheduler is killed while ``train`` runs, then started again."""
    run_id = "reliability_killed"
    triggered = stack.trigger(run_id, FORM)
    assert triggered.returncode == 0, triggered.stderr[-3000:]
    stack.wait_for_task(run_id, "train", ("running",))
    before = stack.api.task_rows(run_id)
    scheduler = stack.components.processes["scheduler"]
    killed = len(psutil.Process(scheduler.pid).children(recursive=True)) + 1
    _kill_tree(psutil.Process(scheduler.pid))
    scheduler.wait()
    # the API server reports the scheduler dead once its heartbeat is older than Airflow's
    # threshold; a scheduler started after that adopts or resets what the dead one ran

    def dead() -> bool:
        return stack.api.health()["scheduler"]["status"] != "healthy"

    assert wait_until(dead, timeout_s=START_TIMEOUT_S, interval_s=1)
    log = stack.root / AIRFLOW_HOME / "logs" / "scheduler-restarted.log"
    with log.open("ab") as output:
        stack.components.processes["scheduler"] = subprocess.Popen(
            component_commands()["scheduler"],
            cwd=stack.root,
            env=stack.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stack.components.logs["scheduler-restarted"] = log
    state = stack.wait_for_end(run_id)
    return KilledRun(run_id, before, stack.api.task_rows(run_id), state, killed)


def test_a_killed_scheduler_restarted_finishes_the_run_without_redoing_finished_tasks(
    stack: Stack, killed_run: KilledRun
) -> None:
    before, after = killed_run.before, killed_run.after
    assert killed_run.state == "success", {t: r["state"] for t, r in after.items()}
    assert killed_run.killed > 1  # the scheduler and what it ran (workers, the train task)
    finished = [task for task, row in before.items() if row["state"] == "success"]
    assert {"set_logical_date", "generate", "ingest", "validate", "prepare"} <= set(finished)
    for task in finished:
        for field in ("try_number", "start_date", "end_date"):
            assert after[task][field] == before[task][field], (task, field)
    # the task the dead scheduler ran was reset and ran again, to success
    assert before["train"]["state"] == "running"
    assert after["train"]["state"] == "success"
    assert after["train"]["try_number"] > before["train"]["try_number"]
    assert after["train"]["start_date"] != before["train"]["start_date"]
    # the tasks after it ran once
    later = [t for t, row in before.items() if row["state"] in (None, "scheduled", "queued")]
    assert "optimize" in later
    for task in later:
        # at most one try: the rollout's tasks skip themselves (the form) or are skipped
        assert after[task]["state"] in ("success", "skipped"), (task, after[task]["state"])
        assert after[task]["try_number"] <= 1, (task, after[task]["try_number"])
    # and the run left the same record as dvc repro
    status = dvc(stack.root, "status")
    assert "up to date" in status.stdout, status.stdout


# ---------------------------------------------------------------------------- 2. the store


def _rerun(stack: Stack, run_id: str, task: str) -> int:
    """Clear ``task`` of a finished run (its downstream kept); its try number before."""
    try_number = int(stack.api.task_rows(run_id)[task]["try_number"])
    cleared = stack.api.post(
        f"dags/{DAG_ID}/clearTaskInstances",
        {"dry_run": False, "dag_run_id": run_id, "task_ids": [task], "only_failed": False},
    )
    assert cleared is not None, f"Airflow knows no DAG {DAG_ID} to clear"
    return try_number


def test_a_transient_store_failure_is_retried_and_succeeds(
    stack: Stack, killed_run: KilledRun
) -> None:
    assert killed_run.state == "success"
    run_id = killed_run.run_id
    proxy = stack.proxy

    # a blip: the next two connections to the public store are refused; botocore's retries
    # (registry.retries.max_attempts: 3) absorb it within the task's one try
    proxy.fail_next(2)
    reset_before, _ = proxy.counts()
    tried = _rerun(stack, run_id, "register")
    stack.wait_for_task(run_id, "register", ("success",))
    assert stack.wait_for_end(run_id) == "success"
    reset, forwarded = proxy.counts()
    assert reset - reset_before == 2
    row = stack.api.task_rows(run_id)["register"]
    assert row["try_number"] == tried + 1, row  # no Airflow retry was needed

    # an outage longer than the client's attempts: the try fails naming the store, and
    # Airflow's retry (airflow.retries) succeeds once the store is back
    proxy.down()
    reset_before, forwarded_before = proxy.counts()
    tried = _rerun(stack, run_id, "register")
    try:
        stack.wait_for_task(run_id, "register", ("up_for_retry",))
        reset, forwarded = proxy.counts()
        assert reset - reset_before >= 3 and forwarded == forwarded_before
    finally:
        proxy.up()
    stack.wait_for_task(run_id, "register", ("success",))
    assert stack.wait_for_end(run_id) == "success"
    row = stack.api.task_rows(run_id)["register"]
    assert row["try_number"] == tried + 2, row
    failed_try = (
        stack.root
        / AIRFLOW_HOME
        / "logs"
        / f"dag_id={DAG_ID}"
        / f"run_id={run_id}"
        / "task_id=register"
        / f"attempt={tried + 1}.log"
    )
    text = failed_try.read_text(encoding="utf-8", errors="replace")
    assert "store 'public'" in text and "did not answer" in text, text[-3000:]
    assert stack.registry("verify").returncode == 0


# ---------------------------------------------------------------------------- 3. two triggers


def test_two_manual_triggers_at_once_run_one_after_the_other_and_corrupt_nothing(
    stack: Stack, killed_run: KilledRun
) -> None:
    assert killed_run.state == "success"
    root = stack.root
    params_before = (root / "params.yaml").read_bytes()
    versions_before = stack.registry("list", "--json")
    assert versions_before.returncode == 0, versions_before.stderr
    # the same form as the killed run (a rerun of the date), and one with another epoch count
    forms = {"reliability_same": FORM, "reliability_epochs": {**FORM, "epochs": 1}}
    barrier = threading.Barrier(len(forms))
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def trigger(run_id: str) -> None:
        barrier.wait()
        results[run_id] = stack.trigger(run_id, forms[run_id])

    threads = [threading.Thread(target=trigger, args=(run_id,)) for run_id in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CLI_TIMEOUT_S)
    for run_id, result in results.items():
        assert result.returncode == 0, (run_id, result.stderr[-3000:])
    assert set(results) == set(forms)

    # while one runs, the other waits in the queue
    seen: set[tuple[str, ...]] = set()

    def both_ended() -> bool:
        states = tuple(str(stack.api.run(run_id)["state"]) for run_id in forms)
        seen.add(states)
        return all(state in ENDED for state in states)

    assert wait_until(both_ended, timeout_s=RUN_TIMEOUT_S, interval_s=1)
    assert ("running", "queued") in seen or ("queued", "running") in seen, seen
    assert not any(states == ("running", "running") for states in seen), seen
    runs = {run_id: stack.api.run(run_id) for run_id in forms}
    assert {run_id: run["state"] for run_id, run in runs.items()} == dict.fromkeys(forms, "success")
    first, last = sorted(forms, key=lambda run_id: runs[run_id]["start_date"])
    tasks = {run_id: stack.api.task_rows(run_id) for run_id in forms}
    first_end = max(row["end_date"] for row in tasks[first].values() if row["end_date"])
    last_start = min(row["start_date"] for row in tasks[last].values() if row["start_date"])
    assert first_end <= last_start

    # params.yaml untouched; the overlay whole, with the values of the run that went last
    assert (root / "params.yaml").read_bytes() == params_before
    overlay = read_overlay(overlay_path(root / "params.yaml"))
    epochs = forms[last].get("epochs")
    expected: dict[str, Any] = {"run.logical_date": DATA_DATE}
    if epochs is not None:
        expected["train.epochs"] = epochs
    assert {k: str(v) for k, v in overlay.items()} == {k: str(v) for k, v in expected.items()}
    # the DVC record parses, holds every stage as the last run ran it, matches the workspace
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    assert set(lock["stages"]) == set(DVC_STAGES)
    recorded = lock["stages"]["train"]["params"]["params.run.yaml"]
    assert recorded.get("train.epochs") == epochs, recorded
    status = dvc(root, "status")
    assert "up to date" in status.stdout, status.stdout
    # the registry verifies in both clouds; the epochs run added a version, and a rerun of the
    # killed run's form before it added none and changed no DVC stage
    verified = stack.registry("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert " 0 problem(s)" in verified.stdout, verified.stdout
    versions_after = stack.registry("list", "--json")
    assert versions_after.returncode == 0, versions_after.stderr
    before_ids = {v["id"] for v in json.loads(versions_before.stdout)}
    after_ids = {v["id"] for v in json.loads(versions_after.stdout)}
    assert before_ids < after_ids
    if first == "reliability_same":
        assert len(after_ids - before_ids) == 1
        for stage in DVC_STAGES:
            text = _task_log(root, first, stage)
            assert f"{stage} is up to date" in text, (stage, text[-2000:])
    else:  # the epochs run went first; the same form then trained again as the killed run did
        assert 1 <= len(after_ids - before_ids) <= 2


def _task_log(root: Path, run_id: str, task: str) -> str:
    folder = root / AIRFLOW_HOME / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    logs = sorted((folder / f"task_id={task}").glob("attempt=*.log"))
    return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in logs)
