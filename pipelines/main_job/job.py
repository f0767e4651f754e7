"""The main job (``make run``): the chain through the Airflow DAG, then ``dvc repro``.

1. Runs the ``recsys_retrain`` DAG once with ``airflow dags test`` (Airflow on SQLite under
   ``.airflow/``), as a manual run whose conf carries the data date (``params.yaml``'s, or
   ``--logical-date``), as any caller without the trigger form does. Given a logical date
   instead, ``dags test`` records that date as the run's start, and the UI shows the run lasting
   from then until now; this way the run's logical date, start and end are the times it really
   ran. Its first task records the date in the run overlay (``params.run.yaml``), and each task
   runs its ``dvc.yaml`` command and records it in ``dvc.lock``.
2. Runs ``dvc repro``, which finds everything up to date: the Airflow run left the same DVC
   record a local ``dvc repro`` would have; then pushes data and model versions to the default
   DVC remote.
3. Prints the figures a person looks at and where the outputs landed.

The console shows a line when each task starts and one when it ends (``progress``); Airflow's
full log goes to ``.airflow/logs/main-job/<start time>.log``, and each task's records to the file
Airflow's UI reads for that task (``.airflow/logs/dag_id=.../run_id=.../task_id=.../
attempt=N.log``), so the UI shows every task's log of the run. A failed task shows its last
error lines, and the job exits non-zero. Airflow is driven through its command line; nothing here
imports it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipelines.core.errors import RecflowError
from pipelines.core.params import ConfigError, load_params
from pipelines.core.project import PROJECT_ROOT, interpreter_env
from pipelines.core.run_date import parse_logical_date
from pipelines.main_job.airflow_cli import (
    AIRFLOW_HOME,
    DAG_ID,
    airflow_command,
    airflow_env,
    plugins_env,
    run_note_command,
)
from pipelines.main_job.figures import key_figure, summary_lines
from pipelines.main_job.progress import (
    INDENT,
    STATE_WIDTH,
    RunFollower,
    TaskLogs,
    TaskRun,
    clock,
    duration,
)
from pipelines.registry.loopback import loopback_unless_given
from pipelines.stages.table import chain_task_ids

Echo = Callable[[str], None]
# the lines of a failed command's output shown on the console
FAILED_STEP_LINES = 10


@dataclass(frozen=True)
class DagRunResult:
    """What one ``airflow dags test`` run did, as its log told it."""

    returncode: int
    run_id: str | None
    state: str | None
    tasks: tuple[TaskRun, ...]
    failed: tuple[TaskRun, ...]
    tail: tuple[str, ...]

    @property
    def succeeded(self) -> bool:
        """True when Airflow exited cleanly and every task succeeded."""
        # a run whose tasks never started (a start date after the run's date) did nothing
        return (
            self.returncode == 0
            and bool(self.tasks)
            and not self.failed
            and self.state == "success"
        )


def echo_line(text: str) -> None:
    """Write one line to the console at once (the job's output is its progress report)."""
    print(text, flush=True)


def status_line(state: str, text: str) -> str:
    """A console line about the job's own steps, in the columns of the task lines."""
    return f"{clock(dt.datetime.now(dt.UTC))} {state:<{STATE_WIDTH}} {text}"


def shown(path: Path) -> str:
    """``path`` relative to the working folder when it is under it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_dag(
    root: Path,
    airflow_home: Path,
    logical_date: str,
    *,
    log: TextIO,
    echo: Echo = echo_line,
    terminal_width: int | None = None,
    dag_id: str = DAG_ID,
) -> DagRunResult:
    """Run the DAG once for ``logical_date`` and follow it on the console.

    Args:
        root: The project root.
        airflow_home: Airflow's home, with a migrated database.
        logical_date: The run's date (``YYYY-MM-DD``), passed as the run's conf.
        log: The full log file.
        echo: Writes a console line.
        terminal_width: The console is a terminal this wide: lines are cut to it, and a
            finished task's line replaces its start line. None: a log or a pipe.
        dag_id: The DAG to run.

    Returns:
        The run's exit code, id, state and tasks.
    """
    env = airflow_env(root, airflow_home)
    # one JSON object per record: the console lines are read from these, not from text
    env.update({"AIRFLOW__LOGGING__JSON_LOGS": "True", "PYTHONUNBUFFERED": "1"})
    # the data date, as a caller without the trigger form passes it (the DAG's docstring)
    conf = json.dumps({"data_date": logical_date})
    command = airflow_command("dags", "test", dag_id, "--conf", conf)
    log.write(f"$ {' '.join(command)}\n")
    logs_folder = Path(env.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER") or airflow_home / "logs")
    task_logs = TaskLogs(logs_folder, dag_id)
    follower = RunFollower(
        echo,
        log,
        lambda name: key_figure(name, root),
        width=terminal_width,
        rewrite=terminal_width is not None,
        task_logs=task_logs,
    )
    with subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        try:
            follower.feed_all(process.stdout)
        finally:
            task_logs.close()
    return DagRunResult(
        returncode=process.returncode,
        run_id=follower.run_id,
        state=follower.state,
        tasks=tuple(follower.tasks),
        failed=tuple(follower.failed()),
        tail=tuple(follower.tail),
    )


@dataclass(frozen=True)
class StepResult:
    """A command the job ran with its output going to the full log."""

    returncode: int
    output: str
    seconds: float


def run_step(command: Sequence[str], *, cwd: Path, env: dict[str, str], log: TextIO) -> StepResult:
    """Run ``command``, its output (stdout and stderr) to the full log only."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    started = time.perf_counter()
    result = subprocess.run(
        list(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    log.write(result.stdout)
    log.flush()
    return StepResult(result.returncode, result.stdout, time.perf_counter() - started)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _step_failed(name: str, step: StepResult, log_path: Path, echo: Echo) -> int:
    echo(status_line("failed", f"{name} (exit {step.returncode})"))
    for line in [line for line in step.output.splitlines() if line.strip()][-FAILED_STEP_LINES:]:
        echo(INDENT + line)
    echo(f"full log: {shown(log_path)}")
    return step.returncode or 1


def _dag_failed(result: DagRunResult, log_path: Path, echo: Echo, task_ids: Sequence[str]) -> int:
    if result.failed:
        started = {task.name for task in result.tasks}
        not_run = [name for name in task_ids if name not in started]
        failed = ", ".join(task.name for task in result.failed)
        echo(f"recflow: the DAG run failed at {failed}")
        if not_run:
            echo(f"  not run: {', '.join(not_run)}")
    else:
        echo(f"recflow: airflow dags test failed (exit {result.returncode}); its last lines:")
        for line in result.tail:
            echo(INDENT + line.splitlines()[0][:200])
    echo(f"full log: {shown(log_path)}")
    return result.returncode or 1


def _outcome(output: str) -> str:
    """DVC's last line, shortened: "Data and pipelines are up to date." is "up to date"."""
    last = _last_line(output)
    return "up to date" if last.endswith("up to date.") else last.rstrip(".") or "done"


def dvc_summary(repro: StepResult, push: StepResult | None) -> str:
    """One line for ``dvc repro`` and ``dvc push``: what each did, and how long it took."""
    ran = repro.output.count("Running stage")
    text = f"dvc repro: {f'ran {ran} stages' if ran else _outcome(repro.output)}"
    text += f" ({duration(repro.seconds)})"
    if push is not None:
        text += f"; dvc push: {_outcome(push.output)} ({duration(push.seconds)})"
    return text


def _date_arg(text: str) -> dt.date:
    try:
        return parse_logical_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the main job on the embedded default."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.main_job", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the project root")
    parser.add_argument(
        "--logical-date",
        type=_date_arg,
        metavar="YYYY-MM-DD",
        help="run the chain for this date (default: run.logical_date in params.yaml); the "
        "DAG's first task records it in the run overlay, params.run.yaml",
    )
    parser.add_argument("--skip-airflow", action="store_true", help="only run dvc repro")
    parser.add_argument("--no-push", action="store_true", help="do not push to the DVC remote")
    args = parser.parse_args(argv)
    if args.skip_airflow and args.logical_date:
        parser.error("--logical-date is set by the Airflow run, which --skip-airflow skips")
    root = args.root.resolve()
    airflow_home = root / AIRFLOW_HOME
    try:
        # the default date is params.yaml's own, not the last run's (the run overlay)
        params = load_params(root / "params.yaml", overlay=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logical_date = (args.logical_date or params.run.logical_date).isoformat()

    started = time.perf_counter()
    log_path = airflow_home / "logs" / "main-job" / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    echo = echo_line
    echo(f"recflow: Airflow DAG {DAG_ID} for logical date {logical_date}, then dvc repro")
    echo(f"full log: {shown(log_path)}")
    try:
        with (
            log_path.open("w", encoding="utf-8") as log,
            loopback_unless_given(params.stores) as store_env,
        ):
            # the public store's loopback server (or the caller's): its endpoint and throwaway
            # credentials reach every task through this process's environment
            os.environ.update(store_env)
            env = airflow_env(root, airflow_home)
            if not args.skip_airflow:
                migrate = run_step(airflow_command("db", "migrate"), cwd=root, env=env, log=log)
                if migrate.returncode:
                    return _step_failed("airflow db migrate", migrate, log_path, echo)
                result = run_dag(
                    root, airflow_home, logical_date, log=log, echo=echo, terminal_width=width
                )
                if result.run_id:
                    note = run_note_command(DAG_ID, result.run_id, f"data date {logical_date}")
                    # the run header's date is when it ran: the note names the data it trained on
                    noted = run_step(note, cwd=root, env=plugins_env(root, env), log=log)
                    if noted.returncode:
                        echo(f"warning: the run's note was not set (see {shown(log_path)})")
                if not result.succeeded:
                    return _dag_failed(result, log_path, echo, chain_task_ids(params))
            dvc_env = interpreter_env()
            python = sys.executable
            repro = run_step([python, "-m", "dvc", "repro"], cwd=root, env=dvc_env, log=log)
            if repro.returncode:
                return _step_failed("dvc repro", repro, log_path, echo)
            push = None
            if not args.no_push:
                push = run_step([python, "-m", "dvc", "push"], cwd=root, env=dvc_env, log=log)
                if push.returncode:
                    return _step_failed("dvc push", push, log_path, echo)
            echo(status_line("done", dvc_summary(repro, push)))
    except KeyboardInterrupt:
        echo(f"recflow: interrupted; full log: {shown(log_path)}")
        return 130
    except RecflowError as exc:  # the loopback store server did not start
        echo(f"error: {exc}")
        return exc.exit_code

    echo("")
    elapsed = duration(time.perf_counter() - started)
    more = "more: dvc metrics show, make airflow (the UI)"
    echo(f"recflow: chain done for {logical_date} in {elapsed}; {more}")
    for line in summary_lines(root):
        echo(line)
    return 0
