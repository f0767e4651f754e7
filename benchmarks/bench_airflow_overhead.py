"""Airflow's overhead on one ``recsys_retrain`` run: wall time against task time, and the gaps.

``python -m benchmarks.bench_airflow_overhead`` runs the DAG on a fresh copy of the project
(``tiny`` preset, the integration tests' settings: short tasks, so what Airflow adds shows)
the way a nightly run happens: Airflow's components as ``make airflow`` starts them (scheduler,
DAG processor, triggerer and API server, the local executor with one worker per core, every
component on 127.0.0.1, SQLite), the DAG unpaused and triggered with ``airflow dags trigger``
and the main job's conf. Once the run ends,
it reads each task instance's queued, start and end times and the DAG's edges from Airflow
(its REST API), so the figures follow whatever tasks and edges the DAG has.
Then it does the same for the main job's path (``python -m pipelines.main_job``, what ``make
run`` runs: ``airflow dags test``) on a second fresh copy; ``--skip-dags-test`` leaves it out.

For each run:

- **wall**: the DAG run's start to its end;
- **task sum**: the task instances' durations added up;
- **critical path**: the longest chain of task durations along the DAG's edges (tasks without
  an edge between them, such as ``evaluate`` and ``reference``, may run side by side);
- **overhead**: wall minus the critical path, the time no task on the longest chain ran;
- **gap** per task with upstream tasks: its start minus the latest end of its upstream tasks
  (the scheduler noticing, queueing and the worker starting the task); the largest and the
  median against the target (≤ 5 s, on the 2-core machine of the README). The part of a gap
  spent while other tasks that ended in it still ran (a sibling holding the worker) is
  ``waited_for_others_s``; the rest, from the last such end to the start, is ``dispatch_s``
  (``dispatch_gap_max_s``: the largest). The target is judged on the whole gap;
- **idle**: the stretches of the run in which no task ran (their sum and the longest). Where
  tasks run one at a time (``dags test``), a gap after an upstream task includes a sibling's
  run (``reference`` after ``evaluate``); the idle stretches are Airflow's own time either way.

Writes ``benchmarks/results/airflow_overhead.json`` (``--out``) and prints a table. Airflow's
own output goes to the copies (``<tmp>/…/.airflow/``); ``--keep`` keeps them. The copies hold
the working tree, uncommitted work included, or with ``--rev REV`` that git revision.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from benchmarks.machine import machine_info
from pipelines.core.io import write_text
from pipelines.core.params import load_params
from pipelines.core.project import copy_project, interpreter_env
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import AIRFLOW_HOME, DAG_ID, airflow_command, airflow_env
from pipelines.main_job.ui import (
    HEALTH_PATH,
    HOST,
    PASSWORDS_FILE,
    AirflowApi,
    cpu_cores,
    migrate,
    set_login,
    start_components,
    stop_components,
    ui_env,
    wait_until_healthy,
)
from pipelines.registry.loopback import loopback_unless_given
from pipelines.rollout.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "airflow_overhead.json"
TARGET_GAP_S = 5.0
# not the date in params.yaml: the run sets it, as a nightly run does
LOGICAL_DATE = "2026-11-20"
# limits that only end a hung run; no figure depends on them
PARSE_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 3600.0
JOB_TIMEOUT_S = 3600
CLI_TIMEOUT_S = 300
POLL_S = 2.0
ENDED = ("success", "failed", "skipped", "upstream_failed")

Echo = Callable[[str], None]


# ---------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class TaskTiming:
    """One task instance's times as Airflow recorded them (None where it has none)."""

    task_id: str
    state: str
    start: dt.datetime | None
    end: dt.datetime | None
    queued: dt.datetime | None = None

    @property
    def seconds(self) -> float:
        """How long the task ran; 0 for one that never started."""
        if self.start is None or self.end is None:
            return 0.0
        return (self.end - self.start).total_seconds()


def upstream_of(edges: Iterable[tuple[str, str]], tasks: Iterable[str]) -> dict[str, list[str]]:
    """Each task's upstream tasks, from ``(upstream, downstream)`` edges, sorted by name."""
    upstream: dict[str, list[str]] = {task: [] for task in tasks}
    for parent, child in edges:
        upstream.setdefault(parent, [])
        upstream.setdefault(child, []).append(parent)
    return {task: sorted(set(parents)) for task, parents in upstream.items()}


def topological_order(upstream: Mapping[str, Sequence[str]]) -> list[str]:
    """The tasks, each after all of its upstream tasks (ties by name).

    Raises:
        ValueError: The edges form a cycle.
    """
    order: list[str] = []
    done: set[str] = set()
    pending = sorted(upstream)
    while pending:
        ready = [task for task in pending if all(p in done for p in upstream[task])]
        if not ready:
            raise ValueError(f"the edges form a cycle among {', '.join(pending)}")
        order.extend(ready)
        done.update(ready)
        pending = [task for task in pending if task not in done]
    return order


def critical_path(
    seconds: Mapping[str, float], upstream: Mapping[str, Sequence[str]]
) -> tuple[float, list[str]]:
    """The chain of tasks along the edges whose durations add up to the most.

    Args:
        seconds: Each task's duration.
        upstream: Each task's upstream tasks.

    Returns:
        The chain's total seconds, and its tasks from first to last.
    """
    best: dict[str, tuple[float, list[str]]] = {}
    for task in topological_order(upstream):
        before = max(
            (best[parent] for parent in upstream[task]), key=lambda b: b[0], default=(0.0, [])
        )
        best[task] = (before[0] + seconds.get(task, 0.0), [*before[1], task])
    return max(best.values(), key=lambda b: b[0], default=(0.0, []))


def gaps(
    timings: Mapping[str, TaskTiming], upstream: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """Per task with upstream tasks: its start minus the latest end among them.

    Tasks that never started, or whose upstream tasks have no end, have no gap.
    """
    found = []
    for task, parents in upstream.items():
        timing = timings.get(task)
        if not parents or timing is None or timing.start is None:
            continue
        ends = {p: timings[p].end for p in parents if p in timings}
        known = {p: end for p, end in ends.items() if end is not None}
        if len(known) != len(parents):
            continue
        last = max(known, key=lambda p: known[p])
        ready = known[last]
        # other tasks that ended while this one was ready and not yet started: it waited for a
        # worker they held (one at a time under dags test; see the module docstring)
        held = [
            t.end
            for name, t in timings.items()
            if name != task and t.end is not None and ready < t.end <= timing.start
        ]
        freed = max(held, default=ready)
        found.append(
            {
                "task": task,
                "upstream": list(parents),
                "after": last,
                "seconds": round((timing.start - ready).total_seconds(), 3),
                "waited_for_others_s": round((freed - ready).total_seconds(), 3),
                "dispatch_s": round((timing.start - freed).total_seconds(), 3),
            }
        )
    return found


def idle_periods(
    run_start: dt.datetime, run_end: dt.datetime, timings: Mapping[str, TaskTiming]
) -> list[float]:
    """The stretches of the run in which no task ran, in seconds, in order.

    Where tasks run one at a time (``airflow dags test``), a gap after an upstream task
    includes the run of a sibling; these stretches are Airflow's own time either way.
    """
    spans = sorted((t.start, t.end) for t in timings.values() if t.start and t.end)
    found = []
    covered = run_start
    for start, end in spans:
        if start > covered:
            found.append(round((start - covered).total_seconds(), 3))
        covered = max(covered, end)
    if run_end > covered:
        found.append(round((run_end - covered).total_seconds(), 3))
    return found


def _seconds(start: dt.datetime, end: dt.datetime) -> float:
    return round((end - start).total_seconds(), 3)


def summarize(
    run_start: dt.datetime,
    run_end: dt.datetime,
    timings: Mapping[str, TaskTiming],
    upstream: Mapping[str, Sequence[str]],
    target_gap_s: float = TARGET_GAP_S,
) -> dict[str, Any]:
    """The figures of one DAG run: wall, task sum, critical path, overhead and gaps.

    Args:
        run_start: The DAG run's start.
        run_end: The DAG run's end.
        timings: Each task instance's times, by task id.
        upstream: Each task's upstream tasks (the DAG's edges).
        target_gap_s: The largest gap that meets the target.

    Returns:
        The figures, in seconds, rounded to milliseconds.
    """
    wall = (run_end - run_start).total_seconds()
    durations = {task: timing.seconds for task, timing in timings.items()}
    task_sum = sum(durations.values())
    path_s, path = critical_path(durations, upstream)
    found = gaps(timings, upstream)
    values = [g["seconds"] for g in found]
    starts = [t.start for t in timings.values() if t.start is not None]
    ends = [t.end for t in timings.values() if t.end is not None]
    queue_waits = [
        (t.start - t.queued).total_seconds()
        for t in timings.values()
        if t.start is not None and t.queued is not None
    ]
    max_gap = max(values, default=0.0)
    idle = idle_periods(run_start, run_end, timings)
    return {
        "wall_s": round(wall, 3),
        "task_sum_s": round(task_sum, 3),
        "critical_path_s": round(path_s, 3),
        "critical_path": path,
        "overhead_s": round(wall - path_s, 3),
        "overhead_share": round((wall - path_s) / wall, 4) if wall > 0 else None,
        "wall_over_task_sum": round(wall / task_sum, 3) if task_sum > 0 else None,
        "wall_over_critical_path": round(wall / path_s, 3) if path_s > 0 else None,
        "run_start_to_first_task_s": _seconds(run_start, min(starts)) if starts else None,
        "last_task_to_run_end_s": _seconds(max(ends), run_end) if ends else None,
        "idle_s": round(sum(idle), 3),
        "idle_max_s": max(idle, default=0.0),
        "gap_max_s": round(max_gap, 3),
        "dispatch_gap_max_s": round(max((g["dispatch_s"] for g in found), default=0.0), 3),
        "gap_median_s": round(statistics.median(values), 3) if values else None,
        "queued_to_start_median_s": round(statistics.median(queue_waits), 3)
        if queue_waits
        else None,
        "target_gap_s": target_gap_s,
        "target_met": bool(values) and max_gap <= target_gap_s,
        "gaps": found,
        "tasks": {
            task: {
                "state": t.state,
                "seconds": round(t.seconds, 3),
                "queued": t.queued.isoformat() if t.queued else None,
                "start": t.start.isoformat() if t.start else None,
                "end": t.end.isoformat() if t.end else None,
            }
            # in the order they started; those that never did last
            for task, t in sorted(timings.items(), key=lambda kv: (kv[1].start or run_end, kv[0]))
        },
    }


def edges_from_tasks(tasks: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The ``(upstream, downstream)`` edges of the REST API's task list (``/dags/{id}/tasks``)."""
    return sorted(
        (str(task["task_id"]), str(child))
        for task in tasks
        for child in task.get("downstream_task_ids") or ()
    )


def parse_time(value: Any) -> dt.datetime | None:
    """An Airflow timestamp (ISO 8601, ``Z`` or an offset) as an aware datetime; None if empty."""
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def timing_from_row(row: Mapping[str, Any]) -> TaskTiming:
    """A task instance of the REST API (``queued_when``) or of the CLI's JSON (no queue time)."""
    return TaskTiming(
        task_id=str(row["task_id"]),
        state=str(row.get("state") or "none"),
        start=parse_time(row.get("start_date")),
        end=parse_time(row.get("end_date")),
        queued=parse_time(row.get("queued_when")),
    )


# ---------------------------------------------------------------------------- the runs


def echo_line(text: str) -> None:
    """A progress line, at once."""
    print(f"{dt.datetime.now(dt.UTC):%H:%M:%S} {text}", flush=True)


def overrides(scheduled: bool) -> dict[str, dict[str, Any]]:
    """The integration tests' ``tiny`` settings (no retries); for the scheduler, a start date
    in the future.

    With ``catchup=False`` unpausing a DAG starts a run for its latest cron time at once; a
    start date after today leaves the triggered run the only one. ``airflow dags test`` keeps
    the project's start date: it creates no task that starts after its run's date.
    """
    from tests.integration.conftest import AIRFLOW_OVERRIDES  # the project's test settings

    if not scheduled:
        return AIRFLOW_OVERRIDES
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    return {
        **AIRFLOW_OVERRIDES,
        "airflow": {**AIRFLOW_OVERRIDES.get("airflow", {}), "start_date": tomorrow.isoformat()},
    }


def fresh_copy(dest: Path, rev: str | None, *, scheduled: bool) -> Path:
    """A fresh copy of the project at ``dest`` (its own git repository), with
    :func:`overrides` applied to its ``params.yaml``, as the integration tests copy it.

    Args:
        dest: Folder to create.
        rev: A git revision to copy (``git archive``); None: the working tree, uncommitted
            work included.
        scheduled: The copy is for the scheduler's run (see :func:`overrides`).
    """
    with tempfile.TemporaryDirectory(prefix="recflow-rev-") as tree:
        source = ROOT
        if rev is not None:
            source = Path(tree)
            archive = subprocess.run(
                ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
            subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
        copy_project(dest, root=source)
    params_path = dest / "params.yaml"
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    for section, values in overrides(scheduled).items():
        params.setdefault(section, {}).update(values)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return dest


def json_rows(stdout: str) -> list[dict[str, Any]]:
    """The JSON list an ``airflow … -o json`` command printed (after any warning lines)."""
    documents = [line for line in stdout.splitlines() if line.startswith("[")]
    if not documents:
        raise RuntimeError(f"no JSON in Airflow's output: {stdout[-2000:]}")
    rows: list[dict[str, Any]] = json.loads(documents[-1])
    return rows


def cli(root: Path, env: Mapping[str, str], *args: str) -> str:
    """``airflow <args>`` on ``root``'s Airflow; its stdout.

    Raises:
        RuntimeError: The command failed.
    """
    result = subprocess.run(
        airflow_command(*args),
        cwd=root,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    if result.returncode:
        raise RuntimeError(
            f"airflow {' '.join(args)} failed ({result.returncode}): {result.stderr[-3000:]}"
        )
    return result.stdout


def run_conf() -> str:
    """The conf the main job passes (``pipelines/main_job/job.py``): the run's date."""
    return json.dumps({"data_date": LOGICAL_DATE})


def follow(api: AirflowApi, run_id: str, echo: Echo) -> str:
    """Wait for the run to end, echoing each task as it ends; the run's final state."""
    path = f"dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
    said: dict[str, str] = {}

    def ended() -> str:
        rows = api.get(f"{path}/taskInstances?limit=1000")["task_instances"]
        for row in rows:
            state = str(row.get("state") or "")
            if state in ENDED and said.get(row["task_id"]) != state:
                said[row["task_id"]] = state
                echo(f"  {state:<8} {row['task_id']} ({row.get('duration') or 0:.1f} s)")
        state = str(api.get(path)["state"])
        return state if state in ("success", "failed") else ""

    state = wait_until(ended, timeout_s=RUN_TIMEOUT_S, interval_s=POLL_S)
    if not state:
        raise RuntimeError(f"{DAG_ID} run {run_id} did not end in {RUN_TIMEOUT_S:.0f} s")
    return state


def scheduler_run(root: Path, echo: Echo) -> dict[str, Any]:
    """Trigger the DAG on ``make airflow``'s components and read the run's times from Airflow."""
    params = load_params(root / "params.yaml")
    home = root / AIRFLOW_HOME
    port = free_port()
    env = ui_env(root, home, port, cpu_cores())
    logs = home / "logs"
    with loopback_unless_given(params.stores) as store_env:
        # the public store's loopback server reaches every task through the environment
        env.update(store_env)
        set_login(home)
        echo(f"airflow db migrate ({home})")
        if migrate(env, root, logs / "migrate.log").returncode:
            raise RuntimeError(f"airflow db migrate failed; see {logs / 'migrate.log'}")
        echo(f"starting scheduler, dag-processor, triggerer, api-server on {HOST}:{port}")
        started = time.perf_counter()
        components = start_components(root, env, logs)
        try:
            why = wait_until_healthy(
                f"http://{HOST}:{port}{HEALTH_PATH}", components, PARSE_TIMEOUT_S
            )
            if why:
                raise RuntimeError(f"Airflow did not start: {why}; logs in {logs}")
            api = AirflowApi(f"http://{HOST}:{port}", home / PASSWORDS_FILE)

            def parsed() -> bool:
                errors = (api.get("importErrors") or {}).get("import_errors", [])
                if errors:
                    raise RuntimeError(f"DAG import errors: {errors}")
                dag = api.get(f"dags/{DAG_ID}")
                return bool(dag) and not dag.get("is_stale", False)

            if not wait_until(parsed, timeout_s=PARSE_TIMEOUT_S, interval_s=POLL_S):
                raise RuntimeError(f"{DAG_ID} was not parsed in {PARSE_TIMEOUT_S:.0f} s")
            echo(f"Airflow up, {DAG_ID} parsed ({time.perf_counter() - started:.0f} s)")
            run_id = f"bench_overhead__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
            cli(root, env, "dags", "unpause", DAG_ID)
            cli(root, env, "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", run_conf())
            echo(f"triggered {DAG_ID} run {run_id}")
            state = follow(api, run_id, echo)
            if state != "success":
                raise RuntimeError(f"{DAG_ID} run {run_id} {state}; task logs in {logs}")
            path = f"dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
            run = api.get(path)
            rows = api.get(f"{path}/taskInstances?limit=1000")["task_instances"]
            # the DAG's edges as the scheduler ran it (the tasks follow params.yaml)
            edges = edges_from_tasks(api.get(f"dags/{DAG_ID}/tasks")["tasks"])
        finally:
            echo("stopping Airflow")
            stop_components(components)
    timings = {row["task_id"]: timing_from_row(row) for row in rows}
    start, end = parse_time(run["start_date"]), parse_time(run["end_date"])
    assert start is not None and end is not None
    return {
        "how": (
            "make airflow's components (scheduler, dag-processor, triggerer, api-server, "
            "SQLite); the DAG unpaused and triggered with airflow dags trigger "
            f"--conf '{run_conf()}'"
        ),
        "executor": env["AIRFLOW__CORE__EXECUTOR"],
        "parallelism": int(env["AIRFLOW__CORE__PARALLELISM"]),
        "run_id": run_id,
        "run_queued_at": run.get("queued_at"),
        "edges": [list(edge) for edge in edges],
        **summarize(start, end, timings, upstream_of(edges, timings)),
    }


def dags_test_run(root: Path, edges: Sequence[tuple[str, str]], echo: Echo) -> dict[str, Any]:
    """The main job's path (``airflow dags test``) and the run's times from Airflow's CLI.

    ``airflow dags test`` starts no API server, and the CLI does not print the DAG's edges
    without graphviz: ``edges`` are those the scheduler's run read (the same DAG file and
    params); a task list that differs is an error.
    """
    echo("running the main job (python -m pipelines.main_job --no-push: airflow dags test)")
    started = time.perf_counter()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.main_job",
            "--root",
            str(root),
            "--no-push",
            "--logical-date",
            LOGICAL_DATE,
        ],
        cwd=root,
        env=interpreter_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            echo("  " + line.rstrip())
    job_s = time.perf_counter() - started
    if process.wait(timeout=JOB_TIMEOUT_S):
        raise RuntimeError(f"the main job failed (exit {process.returncode})")
    env = airflow_env(root, root / AIRFLOW_HOME)
    (run,) = json_rows(cli(root, env, "dags", "list-runs", DAG_ID, "-o", "json"))
    rows = json_rows(
        cli(root, env, "tasks", "states-for-dag-run", DAG_ID, run["run_id"], "-o", "json")
    )
    timings = {row["task_id"]: timing_from_row(row) for row in rows}
    upstream = upstream_of(edges, timings)
    if set(upstream) != set(timings):
        raise RuntimeError(
            f"the dags test run's tasks {sorted(timings)} differ from the DAG's {sorted(upstream)}"
        )
    start, end = parse_time(run["start_date"]), parse_time(run["end_date"])
    assert start is not None and end is not None
    return {
        "how": (
            "python -m pipelines.main_job --no-push (make run's job): airflow dags test "
            f"--conf '{run_conf()}', in one process, then dvc repro"
        ),
        "executor": "none (airflow dags test runs the tasks one at a time, in its own process)",
        "parallelism": 1,
        "note": (
            "one task at a time: a gap after an upstream task holds the runs of the siblings "
            "that went first (evaluate and reference); idle_s and idle_max_s are Airflow's own"
        ),
        "run_id": run["run_id"],
        "main_job_s": round(job_s, 2),
        **summarize(start, end, timings, upstream),
    }


# ---------------------------------------------------------------------------- the report


def table(result: Mapping[str, Any]) -> str:
    """The figures of each run, one line each."""
    head = (
        f"{'run':<10} {'wall s':>8} {'task sum':>9} {'crit. path':>10} {'overhead':>9} "
        f"{'wall/sum':>8} {'idle':>6} {'idle max':>8} {'gap max':>8} {'gap med':>8} "
        f"{'dispatch':>8}  "
        f"target ≤ {TARGET_GAP_S:g} s"
    )
    lines = [head]
    for name, run in result["runs"].items():
        lines.append(
            f"{name:<10} {run['wall_s']:>8.1f} {run['task_sum_s']:>9.1f} "
            f"{run['critical_path_s']:>10.1f} {run['overhead_s']:>9.1f} "
            f"{run['wall_over_task_sum']:>8.2f} {run['idle_s']:>6.1f} {run['idle_max_s']:>8.2f} "
            f"{run['gap_max_s']:>8.2f} "
            f"{run['gap_median_s'] or 0:>8.2f} {run['dispatch_gap_max_s']:>8.2f}  "
            f"{'met' if run['target_met'] else 'NOT met'}"
        )
    return "\n".join(lines)


def gap_table(run: Mapping[str, Any]) -> str:
    """One line per dependent task: the gap after its last upstream task, and its duration."""
    tasks = run["tasks"]
    lines = [f"{'task':<20} {'after':<20} {'gap s':>7} {'others s':>9} {'ran s':>8}"]
    for gap in run["gaps"]:
        seconds = tasks[gap["task"]]["seconds"]
        lines.append(
            f"{gap['task']:<20} {gap['after']:<20} {gap['seconds']:>7.2f} "
            f"{gap['waited_for_others_s']:>9.2f} {seconds:>8.1f}"
        )
    return "\n".join(lines)


def project_version(rev: str | None) -> str:
    """The commit the copies came from, and whether the working tree's changes were in them."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev or "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if rev is not None:
        return commit
    changed = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"{commit} with uncommitted changes" if changed else commit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the results file")
    parser.add_argument(
        "--skip-dags-test", action="store_true", help="leave out the main job's dags test run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the project copies")
    parser.add_argument(
        "--rev", help="copy this git revision (default: the working tree, uncommitted work too)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    machine = machine_info()
    runs: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="recflow-bench-airflow-"))
    try:
        echo_line(f"copying the project (tiny preset) into {tmp}")
        runs["scheduler"] = scheduler_run(
            fresh_copy(tmp / "scheduler", args.rev, scheduled=True), echo_line
        )
        if not args.skip_dags_test:
            edges = [(parent, child) for parent, child in runs["scheduler"]["edges"]]
            runs["dags_test"] = dags_test_run(
                fresh_copy(tmp / "dags-test", args.rev, scheduled=False), edges, echo_line
            )
    finally:
        if args.keep:
            echo_line(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "machine": machine,
        "airflow_version": importlib.metadata.version("apache-airflow"),
        "command": "python -m benchmarks.bench_airflow_overhead"
        + (f" --rev {args.rev}" if args.rev else ""),
        "project": project_version(args.rev),
        "preset": "tiny (the integration tests' settings, retries 0)",
        "cores": cpu_cores(),
        "target": f"gap between dependent tasks ≤ {TARGET_GAP_S:g} s",
        "target_gap_s": TARGET_GAP_S,
        "target_met": runs["scheduler"]["target_met"],
        "runs": runs,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(table(result))
    print()
    print(gap_table(runs["scheduler"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
