"""Task logs of the main job's runs, where Airflow's UI reads them.

``airflow dags test`` runs each task in its own process instead of through an executor's worker,
so Airflow writes no task log file, and the UI said "Log file not found on worker" for every
task of ``make run``'s runs. The main job writes each task's records to the file Airflow's log
reader looks in for that try. The first tests follow a run's records by hand (the try numbers
of a retry and of a task that waits for a person); the last runs a small DAG through the main
job's ``airflow dags test`` in a home of its own, then reads each task's log through Airflow's
REST API from a real API server, the way the UI does.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import airflow_command, airflow_env
from pipelines.main_job.job import run_dag, run_step
from pipelines.main_job.progress import RunFollower, TaskLogs, task_log_path

RUN_ID = "manual__2026-11-20T08:00:00+00:00"
DAG_ID = "task_logs_probe"
# the limits only end a hung test: nothing passes or fails by how fast it came
API_START_TIMEOUT_S = 240


def _record(event: str, **extra: Any) -> str:
    return json.dumps(
        {"timestamp": "2026-11-20T08:00:01.000000Z", "level": "info", "event": event, **extra}
    )


def _follow(folder: Path, lines: list[str]) -> RunFollower:
    follower = RunFollower(
        lambda text: None, io.StringIO(), lambda name: None, task_logs=TaskLogs(folder, DAG_ID)
    )
    follower.feed_all([_record("creating dag run", run_id=RUN_ID), *lines])
    return follower


def _turn(task: str, state: str, *output: str) -> list[str]:
    """The records of one turn of ``task`` as ``dags test`` prints them."""
    return [
        _record(f"[DAG TEST] starting task_id={task} map_index=-1"),
        *[_record(text, logger="airflow.task.hooks.subprocess") for text in output],
        _record("Task instance state updated", new_state=state),
        _record(f"[DAG TEST] end task task_id={task} map_index=-1"),
    ]


def _events(path: Path) -> list[str]:
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def test_each_task_s_records_go_to_its_try_s_file_in_airflow_s_layout(tmp_path: Path) -> None:
    follower = _follow(
        tmp_path,
        [
            *_turn("hello", "success", "hello line"),
            _record("between tasks: in no task's file"),
            *_turn("flaky", "up_for_retry", "first try fails"),
            *_turn("flaky", "success", "second try works"),
        ],
    )
    run = f"dag_id={DAG_ID}/run_id={RUN_ID}"
    hello = tmp_path / run / "task_id=hello" / "attempt=1.log"
    assert _events(hello) == [
        "[DAG TEST] starting task_id=hello map_index=-1",
        "hello line",
        "Task instance state updated",
        "[DAG TEST] end task task_id=hello map_index=-1",
    ]
    first, second = (tmp_path / run / "task_id=flaky" / f"attempt={n}.log" for n in (1, 2))
    assert "first try fails" in _events(first) and "second try works" not in _events(first)
    assert "second try works" in _events(second)
    assert not any("between tasks" in p.read_text() for p in tmp_path.rglob("*.log"))
    assert [t.try_number for t in follower.tasks] == [1, 1, 2]
    # the file is the record Airflow printed, unchanged: one JSON object a line
    assert hello.read_text().splitlines()[1] == _record(
        "hello line", logger="airflow.task.hooks.subprocess"
    )


def test_a_task_that_waited_for_a_person_continues_the_same_try(tmp_path: Path) -> None:
    said: list[str] = []
    follower = RunFollower(
        said.append, io.StringIO(), lambda name: None, task_logs=TaskLogs(tmp_path, DAG_ID)
    )
    follower.feed_all(
        [
            _record("creating dag run", run_id=RUN_ID),
            *_turn("approve_public", "awaiting_input", "asks"),
            *_turn("approve_public", "success", "answered"),
        ]
    )
    (path,) = tmp_path.rglob("*.log")
    assert path.relative_to(tmp_path).as_posix() == task_log_path(
        DAG_ID, RUN_ID, "approve_public", -1, 1
    )
    assert {"asks", "answered"} <= set(_events(path))
    assert follower.failed() == []
    # the console says the task waits, not that it failed
    (waiting,) = [line for line in said if " waiting " in line]
    assert "approve_public" in waiting and "Required actions" in waiting


def test_a_mapped_task_s_log_has_its_map_index_in_the_path() -> None:
    assert task_log_path(DAG_ID, RUN_ID, "t", 3, 2) == (
        f"dag_id={DAG_ID}/run_id={RUN_ID}/task_id=t/map_index=3/attempt=2.log"
    )


# a DAG of three tasks: one prints a marker, one fails its first try and succeeds its second
PROBE_DAG = """
import datetime as dt

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(dag_id="{dag_id}", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):
    hello = BashOperator(task_id="hello", bash_command="echo marker-of-hello")
    flaky = BashOperator(
        task_id="flaky",
        bash_command="if [ -e {marker} ]; then echo marker-of-try-2; "
        "else touch {marker}; echo marker-of-try-1; exit 1; fi",
        retries=1,
        retry_delay=dt.timedelta(0),
    )
    hello >> flaky
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A project holding the probe DAG, run once by the main job's ``dags test``."""
    root = tmp_path_factory.mktemp("task-logs")
    (root / "dags").mkdir()
    (root / "plugins").mkdir()
    marker = root / "flaky-ran-once"
    (root / "dags" / "probe.py").write_text(PROBE_DAG.format(dag_id=DAG_ID, marker=marker))
    home = root / ".airflow"
    with (root / "job.log").open("w", encoding="utf-8") as log:
        migrate = run_step(
            airflow_command("db", "migrate"), cwd=root, env=airflow_env(root, home), log=log
        )
        assert migrate.returncode == 0, migrate.output[-3000:]
        said: list[str] = []
        result = run_dag(root, home, "2026-11-20", log=log, echo=said.append, dag_id=DAG_ID)
    assert result.succeeded, "\n".join(said) + (root / "job.log").read_text()[-4000:]
    assert result.run_id is not None
    return root, home, result.run_id


@pytest.fixture(scope="module")
def api(ran: tuple[Path, Path, str]) -> Iterator[str]:
    """Airflow's API server (which serves the UI) on the probe's home, on a free port."""
    root, home, _ = ran
    port = _free_port()
    env = airflow_env(root, home)
    env.update(
        {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            # the log reader is under test here, not the login
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        }
    )
    with (root / "api-server.log").open("wb") as output:
        process = subprocess.Popen(
            airflow_command("api-server"),
            cwd=root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    address = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"{address}/api/v2/monitor/health", timeout=5) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        assert wait_until(healthy, timeout_s=API_START_TIMEOUT_S, interval_s=1)
        assert process.poll() is None, (root / "api-server.log").read_text()[-3000:]
        yield address
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _task_log(address: str, run_id: str, task: str, try_number: int) -> list[dict[str, Any]]:
    run = urllib.parse.quote(run_id, safe="")
    url = f"{address}/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task}/logs/{try_number}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        content: list[dict[str, Any]] = json.loads(answer.read())["content"]
        return content


@pytest.mark.slow
def test_the_ui_shows_every_task_s_log_of_a_dags_test_run(
    ran: tuple[Path, Path, str], api: str
) -> None:
    _, home, run_id = ran
    for task, try_number, marker, absent in (
        ("hello", 1, "marker-of-hello", None),
        ("flaky", 1, "marker-of-try-1", "marker-of-try-2"),
        ("flaky", 2, "marker-of-try-2", "marker-of-try-1"),
    ):
        content = _task_log(api, run_id, task, try_number)
        events = [str(line.get("event")) for line in content]
        text = "\n".join(events)
        # the reader found the file the job wrote, and nothing sent it to a worker instead
        path = home / "logs" / task_log_path(DAG_ID, run_id, task, -1, try_number)
        assert str(path) in events, text
        assert "Log file not found" not in text and "Could not read served logs" not in text
        assert marker in events, text
        assert absent is None or absent not in events, text
        assert f"[DAG TEST] starting task_id={task} map_index=-1" in events
        # each line keeps its level and time, as the UI shows them
        (line,) = [line for line in content if line.get("event") == marker]
        assert line["level"] == "info" and line["timestamp"]
