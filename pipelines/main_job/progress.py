"""Airflow's log of one ``airflow dags test`` run, turned into the few lines a person reads.

The main job asks Airflow for one JSON object per log record (``[logging] json_logs``) and
follows the run through them: a task starts (``[DAG TEST] starting task_id=...``), its stage's
own output arrives (records of Airflow's subprocess hook, between ``Output:`` and ``Command
exited with return code``), Airflow records the task's final state (``Task instance state
updated`` with ``new_state``), and the task ends (``[DAG TEST] end task``). Those are the
messages of Airflow 3.3's ``dag.test``; the end-to-end test of the main job fails if they change.

On the console: one line when a task starts, one when it ends (state, duration, the stage's key
figure), the stage's own warnings and errors, the trainer's line per epoch and the deploy
controller's line per rollout step indented under it, and for a failed task its last error
lines. Every record also goes, as text, to the full log.

``dags test`` runs each task in its own process, not through an executor's worker, so Airflow
writes no task log file: the UI would say "Log file not found on worker". ``TaskLogs`` writes
each task's records, as they arrive and unchanged, to the file the UI reads for that try (the
layout of ``[logging] log_filename_template`` under the logs folder, one JSON object a line,
as Airflow's own task log handler writes them).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

STARTED = re.compile(r"^\[DAG TEST\] starting task_id=(?P<task>\S+)(?: map_index=(?P<map>-?\d+))?")
ENDED = re.compile(r"^\[DAG TEST\] end task task_id=(?P<task>\S+)")
STATE_UPDATED = "Task instance state updated"
RUN_CREATED = "creating dag run"
RUN_FINISHED = re.compile(r"^DagRun Finished: .*\bstate=(?P<state>\w+)")
SUBPROCESS_LOGGER = "hooks.subprocess"
OUTPUT_BEGINS = "Output:"
OUTPUT_ENDS = re.compile(r"^Command exited with return code -?\d+$")

# a stage's own log line (pipelines.core.logs): "HH:MM:SS LEVEL   logger: message"
STAGE_LOG = re.compile(
    r"^\d{2}:\d{2}:\d{2} (?P<level>[A-Z]+)\s+(?P<logger>[\w.]+): (?P<message>.*)$"
)
# the trainer's rate line: "epoch 3: loss 4.61, valid ndcg@10 0.31, 0.10 s (3981 windows/s)"
EPOCH = re.compile(r"^epoch \d+: ")
# the deploy controller's line per rollout step: "private canary 5%: pass, ..."
ROLLOUT_STEPS = "recflow.rollout.steps"
# torch's C++-style log lines (torchrun): "W1202 04:46:32.053000 12580 run.py:874] message"
NATIVE_LOG = re.compile(r"^(?P<level>[WEF])\d{4} [\d:.]+ +\d+ (?P<where>\S+?)\] ?(?P<message>.*)$")
PYTHON_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")
# run_cli's one-line message for an expected failure (pipelines.core.cli)
CLI_ERROR = "error: "
TRACEBACK = "Traceback (most recent call last):"
CHAINED = ("During handling of the above exception", "The above exception was the direct cause")

STATE_WIDTH = 7
NAME_WIDTH = 16
DURATION_WIDTH = 6
# stage lines sit under the task name, two columns further in
INDENT = " " * (9 + STATE_WIDTH + 1 + 2)
OUTPUT_KEPT = 400
ERROR_LINES = 12
TAIL_LINES = 8

# Airflow's default ``[logging] log_filename_template``, relative to ``[logging]
# base_log_folder`` (``$AIRFLOW_HOME/logs``): where the UI reads the log of one try of a task
TASK_LOG_PATH = (
    "dag_id={dag_id}/run_id={run_id}/task_id={task_id}/{map_part}attempt={try_number}.log"
)
# a task that ends its turn in one of these states resumes the same try when it starts again
# (after its trigger fired, a person answered it, or its reschedule came); any other state is
# followed by a new try
SAME_TRY_STATES = ("deferred", "awaiting_input", "up_for_reschedule")
# what the console says of a task that waits
WAITING = {
    "awaiting_input": "awaiting input: answer it in the Airflow UI (Required actions)",
    "deferred": "deferred",
    "up_for_reschedule": "up for reschedule",
}


# ANSI: cursor to the start of the line above, and clear that line
CURSOR_UP_AND_CLEAR = "\x1b[1F\x1b[2K"


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 timestamp of Airflow's log (``...Z``) as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def clock(moment: dt.datetime) -> str:
    """``HH:MM:SS`` in local time, as the stages' own log lines write it."""
    return moment.astimezone().strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``6.2s``, ``42s`` or ``3m05s``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def start_line(moment: dt.datetime, task: str) -> str:
    """The console line of a task that starts."""
    return f"{clock(moment)} {'start':<{STATE_WIDTH}} {task}"


def live_line(text: str) -> str | None:
    """What the console shows of one line of a stage's output while it runs, if anything.

    Warnings and errors in the stage's log format (without the clock), torch's native
    warnings and errors, Python warnings, the trainer's line per epoch, and the deploy
    controller's line per rollout step.
    """
    if match := STAGE_LOG.match(text):
        level, logger, message = match["level"], match["logger"], match["message"]
        if logger == ROLLOUT_STEPS:
            return message
        if level in ("WARNING", "ERROR", "CRITICAL"):
            return f"{level} {logger}: {message}"
        if logger == "recflow.train" and EPOCH.match(message):
            return message
        return None
    if match := NATIVE_LOG.match(text):
        message = match["message"].strip()
        if not message.strip("*"):
            return None  # torchrun's banner of asterisks around its warning
        level = "WARNING" if match["level"] == "W" else "ERROR"
        return f"{level} {match['where']}: {message}"
    if PYTHON_WARNING.match(text):
        return text
    return None


def _is_error(text: str) -> bool:
    if text.startswith(CLI_ERROR):
        return True
    if match := STAGE_LOG.match(text):
        return match["level"] in ("ERROR", "CRITICAL")
    match = NATIVE_LOG.match(text)
    return bool(match and match["level"] in "EF" and match["message"].strip("* "))


def error_lines(output: Sequence[str], limit: int = ERROR_LINES) -> list[str]:
    """The last error lines of a failed stage's output.

    ``error: ...`` messages, error log lines and the exception line that ends each traceback,
    each with the indented lines that continue it (a rejected batch lists its failed
    expectations so); the same line twice (one per DDP worker) once. Output with none of
    these gives its last lines.
    """
    picked: list[str] = []
    in_traceback = continuing = False
    for line in output:
        indented = line[:1] in (" ", "\t")
        if line.startswith(TRACEBACK):
            in_traceback, continuing = True, False
        elif in_traceback:
            if line.strip() and not indented and not line.startswith(CHAINED):
                in_traceback, continuing = False, True
                picked.append(line)
        elif continuing and indented and line.strip():
            picked.append(line)
        else:
            continuing = _is_error(line)
            if continuing:
                picked.append(line)
    unique = list(dict.fromkeys(picked))
    return unique[-limit:] if unique else list(output[-TAIL_LINES:])


def render_exception(exception: Any) -> list[str]:
    """Airflow's structured exception (a list of exceptions with frames) as traceback text."""
    if not isinstance(exception, list):
        return str(exception).splitlines()
    lines: list[str] = []
    for exc in exception:
        if not isinstance(exc, dict):
            lines.append(str(exc))
            continue
        lines.append(TRACEBACK)
        for frame in exc.get("frames", []):
            lines.append(
                f'  File "{frame.get("filename")}", line {frame.get("lineno")}, '
                f"in {frame.get('name')}"
            )
        lines.append(f"{exc.get('exc_type')}: {exc.get('exc_value')}")
    return lines


def exception_summary(exception: Any) -> str:
    """``Type: message`` of the innermost exception in Airflow's structured form."""
    if isinstance(exception, list) and exception and isinstance(exception[-1], dict):
        last = exception[-1]
        return f"{last.get('exc_type')}: {last.get('exc_value')}"
    lines = str(exception).strip().splitlines()
    return lines[-1] if lines else ""


_RECORD_KEYS = ("timestamp", "level", "event", "logger", "exception", "filename", "lineno")


def render(record: dict[str, Any], task: str | None = None) -> str:
    """One log record as a line of text (plus its traceback), for the full log file.

    Args:
        record: The record.
        task: The task whose stage printed this line, for a line of a stage's own output.
    """
    head = f"{record.get('timestamp', '')} {record.get('level', ''):<8}"
    if task is not None:
        return f"{head} [{task} output] {record.get('event', '')}"
    line = f"{head} [{record.get('logger', '-')}] {record.get('event', '')}"
    extras = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
    if extras:
        line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
    if "filename" in record:
        line += f"  loc={record['filename']}:{record.get('lineno')}"
    if record.get("exception"):
        line += "\n" + "\n".join(render_exception(record["exception"]))
    return line


def task_log_path(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """The log file of one try of a task, relative to Airflow's logs folder."""
    map_part = f"map_index={map_index}/" if map_index >= 0 else ""
    return TASK_LOG_PATH.format(
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_part=map_part, try_number=try_number
    )


class TaskLogs:
    """Writes each task's records of a ``dags test`` run where Airflow's UI reads its log.

    Args:
        folder: Airflow's logs folder (``[logging] base_log_folder``).
        dag_id: The DAG that runs.
    """

    def __init__(self, folder: Path, dag_id: str) -> None:
        self.folder = folder
        self.dag_id = dag_id
        self._file: TextIO | None = None

    def open(self, run_id: str, task_id: str, map_index: int, try_number: int) -> Path:
        """Start writing one try's log (appending: a resumed try continues its file)."""
        self.close()
        path = self.folder / task_log_path(self.dag_id, run_id, task_id, map_index, try_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        # line-buffered: the UI shows a running task's log as it grows
        self._file = path.open("a", encoding="utf-8", buffering=1)
        return path

    def write(self, line: str) -> None:
        """One record (a JSON object, as Airflow printed it) of the task being written."""
        if self._file is not None:
            self._file.write(line + "\n")

    def close(self) -> None:
        """Finish the file being written, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class TaskRun:
    """One turn of one task, as the log told it: a try, or the part of one after a resume."""

    name: str
    started: dt.datetime
    map_index: int = -1
    try_number: int = 1
    ended: dt.datetime | None = None
    state: str | None = None
    up_to_date: bool = False
    in_output: bool = False
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_KEPT))
    shown: set[str] = field(default_factory=set)
    airflow_errors: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """How long the task ran (0 until it ends)."""
        return (self.ended - self.started).total_seconds() if self.ended else 0.0


class RunFollower:
    """Follows one ``airflow dags test`` run through its JSON log, line by line.

    Args:
        echo: Writes one line to the console.
        log: The full log file; every line read is written there, as text.
        figure: The key figure of a stage that succeeded (``figures.key_figure``), or None.
        width: Cut console lines to this many characters (None: never).
        rewrite: On a terminal: a task's end line replaces its start line when nothing was
            printed in between, so a finished task takes one line of the screen.
        task_logs: Writes each task's records to the log file the UI reads (None: no files).
    """

    def __init__(
        self,
        echo: Callable[[str], None],
        log: TextIO,
        figure: Callable[[str], str | None],
        width: int | None = None,
        rewrite: bool = False,
        task_logs: TaskLogs | None = None,
    ) -> None:
        self._echo = echo
        self._log = log
        self._figure = figure
        self._width = width
        self._rewrite = rewrite
        self._task_logs = task_logs
        self._last_said: str | None = None
        self.tasks: list[TaskRun] = []
        self.run_id: str | None = None
        self.state: str | None = None
        self.errors: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    @property
    def current(self) -> TaskRun | None:
        """The task running now (``dags test`` runs one at a time), if any."""
        last = self.tasks[-1] if self.tasks else None
        return last if last is not None and last.ended is None else None

    def failed(self) -> list[TaskRun]:
        """The tasks whose last turn did not succeed."""
        final = {task.name: task for task in self.tasks}
        return [task for task in final.values() if task.state not in ("success", "skipped")]

    def feed_all(self, lines: Iterable[str]) -> None:
        """Feed every line of ``lines``."""
        for line in lines:
            self.feed(line)

    def feed(self, line: str) -> None:
        """Read one line of Airflow's output: a JSON record, or plain text."""
        line = line.rstrip("\r\n")
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            self._write(line)
            return
        task = self.current
        logger = str(record.get("logger", ""))
        event = str(record.get("event", ""))
        from_stage = (
            task is not None
            and task.in_output
            and SUBPROCESS_LOGGER in logger
            and not OUTPUT_ENDS.match(event)
        )
        self._write(render(record, task.name if from_stage and task is not None else None))
        self._follow(record, logger)
        # the task's own file gets the record that starts it, those while it runs, and the one
        # that ends it
        if self._task_logs is not None and (task is not None or self.current is not None):
            self._task_logs.write(line)
            if self.current is None:
                self._task_logs.close()

    def _write(self, text: str) -> None:
        self._log.write(text + "\n")
        if text.strip():
            self.tail.append(text)

    def _say(self, text: str, replace: str | None = None) -> None:
        """Echo ``text``; on a terminal, over the last line if that line is ``replace``."""
        if self._width is not None and len(text) > self._width:
            text = text[: self._width - 3] + "..."
        said = text
        if self._rewrite and replace is not None and self._last_said == replace:
            text = CURSOR_UP_AND_CLEAR + text
        self._echo(text)
        self._last_said = said

    def _follow(self, record: dict[str, Any], logger: str) -> None:
        event = str(record.get("event", ""))
        moment = parse_time(str(record.get("timestamp")))
        task = self.current
        if match := STARTED.match(event):
            self._started(match["task"], int(match["map"] or -1), moment)
        elif (match := ENDED.match(event)) and task is not None and task.name == match["task"]:
            task.ended = moment
            self._ended(task)
        elif task is not None and SUBPROCESS_LOGGER in logger:
            if event == OUTPUT_BEGINS:
                task.in_output = True
            elif OUTPUT_ENDS.match(event):
                task.in_output = False
            elif task.in_output:
                for text in event.splitlines():
                    self._stage_output(task, text)
        elif task is not None and event == STATE_UPDATED and "new_state" in record:
            task.state = str(record["new_state"])
        elif event == RUN_CREATED:
            self.run_id = str(record.get("run_id"))
        elif match := RUN_FINISHED.match(event):
            self.state = match["state"]
        if str(record.get("level")) in ("error", "critical") and SUBPROCESS_LOGGER not in logger:
            summary = exception_summary(record["exception"]) if record.get("exception") else ""
            message = f"{event}: {summary}" if summary else event
            (task.airflow_errors if task is not None else self.errors).append(message)

    def _started(self, name: str, map_index: int, moment: dt.datetime) -> None:
        """A task starts: a new try, or the same try again after it waited."""
        earlier = [t for t in self.tasks if (t.name, t.map_index) == (name, map_index)]
        try_number = 1
        if earlier:
            last = earlier[-1]
            try_number = last.try_number + (last.state not in SAME_TRY_STATES)
        self.tasks.append(TaskRun(name, moment, map_index=map_index, try_number=try_number))
        if self._task_logs is not None and self.run_id is not None:
            self._task_logs.open(self.run_id, name, map_index, try_number)
        self._say(start_line(moment, name))

    def _stage_output(self, task: TaskRun, text: str) -> None:
        task.output.append(text)
        if text == f"{task.name} is up to date":
            task.up_to_date = True
        shown = live_line(text)
        if shown is not None:
            task.shown.add(text)
            self._say(INDENT + shown)

    def _ended(self, task: TaskRun) -> None:
        state = task.state or "unknown"
        notes = ""
        if state in WAITING:
            notes, state = WAITING[state], "waiting"
        elif state == "success":
            # the figure first: on a narrow terminal the line's end is cut
            notes = self._figure(task.name) or ""
            notes += " (up to date)" if task.up_to_date else ""
        line = (
            f"{clock(task.ended or task.started)} {state:<{STATE_WIDTH}} {task.name:<{NAME_WIDTH}}"
        )
        line += f" {duration(task.seconds):>{DURATION_WIDTH}}  {notes.strip()}"
        self._say(line.rstrip(), replace=start_line(task.started, task.name))
        if state not in ("success", "waiting"):
            for text in self.failure_lines(task):
                self._say(INDENT + text)

    def failure_lines(self, task: TaskRun) -> list[str]:
        """What the console shows under a failed task: its last error lines not shown yet."""
        output = list(task.output)
        if not output:
            # failed before its command ran (a template, the task's set-up): Airflow's own error
            return task.airflow_errors[-TAIL_LINES:]
        return [text for text in error_lines(output) if text not in task.shown]
