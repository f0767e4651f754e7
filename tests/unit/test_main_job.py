"""The main job's console: key figures from the stages' files, and Airflow's log followed.

The records fed here have the shape of Airflow 3.3's JSON log of ``airflow dags test`` (event,
logger, level, fields); ``tests/integration/test_airflow_run.py`` follows a real run.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.main_job import figures, job, ui
from pipelines.main_job.airflow_cli import airflow_env
from pipelines.main_job.figures import KEY_FIGURES, key_figure, stage_path, summary_lines
from pipelines.main_job.progress import (
    CURSOR_UP_AND_CLEAR,
    INDENT,
    RunFollower,
    clock,
    duration,
    error_lines,
    live_line,
    render,
)
from pipelines.stages.table import STAGES

T0 = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.UTC)
DAG = "airflow.sdk.definitions.dag"
API = "airflow.api_fastapi.execution_api.routes.task_instances"
HOOK = "airflow.task.hooks.airflow.providers.standard.hooks.subprocess.SubprocessHook"
RUN_ID = "manual__2026-11-22T02:00:00+00:00"


def _record(
    seconds: float, event: str, logger: str = DAG, level: str = "info", **fields: Any
) -> str:
    stamp = (T0 + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    record = {"timestamp": stamp, "level": level, "event": event, "logger": logger, **fields}
    return json.dumps({**record, "filename": "dag.py", "lineno": 1})


FAILED_EXCEPTION = [
    {
        "exc_type": "AirflowException",
        "exc_value": "Bash command failed. The command returned a non-zero exit code 1.",
        "frames": [{"filename": "bash.py", "lineno": 225, "name": "execute"}],
    }
]


def _task(
    name: str, start: float, end: float, output: list[str], state: str = "success"
) -> list[str]:
    code = 0 if state == "success" else 1
    records = [
        _record(start, f"[DAG TEST] starting task_id={name} map_index=-1"),
        _record(start, f"[DAG TEST] running task <TaskInstance: recsys_retrain.{name} {RUN_ID}>"),
        _record(start, "Task started", API, previous_state="queued"),
        _record(start, "Task instance state updated", API, rows_affected=1),
        _record(start, "Running command: ['/usr/bin/bash', '-c', 'set -euo pipefail']", HOOK),
        _record(start, "Output:", HOOK),
        *(_record(start + 0.5, line, HOOK) for line in output),
        _record(end, f"Command exited with return code {code}", HOOK),
    ]
    if state != "success":
        records.append(
            _record(end, "Task failed with exception", "task", "error", exception=FAILED_EXCEPTION)
        )
    records += [
        _record(end, "Task instance state updated", API, new_state=state, rows_affected=1),
        _record(end, f"[DAG TEST] end task task_id={name} map_index=-1"),
    ]
    return records


def _run(tasks: list[str], state: str) -> list[str]:
    return [
        "Could not import graphviz.",  # Airflow prints some lines as plain text
        _record(0, "creating dag run", run_id=RUN_ID),
        *tasks,
        _record(99, f"DagRun Finished: dag_id=recsys_retrain, run_id={RUN_ID}, state={state}"),
    ]


def _follow(
    lines: list[str], figure: Any = None, width: int | None = None, rewrite: bool = False
) -> tuple[RunFollower, list[str], str]:
    console: list[str] = []
    log = io.StringIO()
    follower = RunFollower(console.append, log, figure or (lambda name: None), width, rewrite)
    follower.feed_all(line + "\n" for line in lines)
    return follower, console, log.getvalue()


def _at(seconds: float) -> str:
    return clock(T0 + dt.timedelta(seconds=seconds))


TRAIN_OUTPUT = [
    'train changed: {"train": ["changed command"]}',
    "W1122 02:00:01.053000 12580 torch/distributed/run.py:874] ",
    "W1122 02:00:01.053000 12580 torch/distributed/run.py:874] *****************************",
    "W1122 02:00:01.053000 12580 torch/distributed/run.py:874] Setting OMP_NUM_THREADS to 1",
    "02:00:03 INFO    recflow.train: rank 0 of 2 (gloo)",
    "02:00:05 INFO    recflow.train: epoch 1: loss 4.9011, valid ndcg@10 0.2747, 0.24 s (1684 w/s)",
    "02:00:06 INFO    recflow.train: epoch 2: loss 4.6193, valid ndcg@10 0.3165, 0.10 s (3981 w/s)",
    "02:00:06 WARNING recflow.train: no GPU: training on the CPU",
    "model               hr@10   ndcg@10",
]


def test_a_run_shows_a_line_when_each_task_starts_and_one_when_it_ends() -> None:
    lines = _run(
        _task("set_logical_date", 1, 2.5, ["02:00:01 INFO    recflow.run_params: set"])
        + _task("train", 3, 75, TRAIN_OUTPUT),
        "success",
    )
    shown = {"set_logical_date": "run.logical_date 2026-11-22", "train": "2 epochs"}

    follower, console, _ = _follow(lines, shown.get)

    assert console == [
        f"{_at(1)} start   set_logical_date",
        f"{_at(2.5)} success set_logical_date   1.5s  run.logical_date 2026-11-22",
        f"{_at(3)} start   train",
        f"{INDENT}WARNING torch/distributed/run.py:874: Setting OMP_NUM_THREADS to 1",
        f"{INDENT}epoch 1: loss 4.9011, valid ndcg@10 0.2747, 0.24 s (1684 w/s)",
        f"{INDENT}epoch 2: loss 4.6193, valid ndcg@10 0.3165, 0.10 s (3981 w/s)",
        f"{INDENT}WARNING recflow.train: no GPU: training on the CPU",
        f"{_at(75)} success train             1m12s  2 epochs",
    ]
    assert follower.run_id == RUN_ID
    assert follower.state == "success"
    assert [task.name for task in follower.tasks] == ["set_logical_date", "train"]
    assert follower.failed() == []


def test_an_up_to_date_stage_says_so_beside_its_figure() -> None:
    lines = _run(_task("prepare", 1, 2, ["prepare is up to date"]), "success")
    _, console, _ = _follow(lines, lambda name: "5 users")
    assert console[-1] == f"{_at(2)} success prepare            1.0s  5 users (up to date)"
    # a stage without a figure
    lines = _run(_task("generate", 1, 2, ["generate is up to date"]), "success")
    _, console, _ = _follow(lines)
    assert console[-1] == f"{_at(2)} success generate           1.0s  (up to date)"


def test_on_a_terminal_a_task_s_end_line_replaces_its_start_line() -> None:
    lines = _run(
        _task("generate", 1, 2, ["02:00:01 INFO    recflow.generate: 13455 events"])
        + _task("train", 3, 75, TRAIN_OUTPUT),
        "success",
    )
    _, console, _ = _follow(lines, width=100, rewrite=True)
    assert console[:2] == [
        f"{_at(1)} start   generate",
        f"{CURSOR_UP_AND_CLEAR}{_at(2)} success generate           1.0s",
    ]
    # lines under a task keep its start line: its end line comes below them
    assert console[2] == f"{_at(3)} start   train"
    assert console[-1] == f"{_at(75)} success train             1m12s"


def test_the_full_log_gets_every_line_as_text() -> None:
    lines = _run(_task("train", 3, 75, TRAIN_OUTPUT), "success")
    _, _, log = _follow(lines)
    assert len(log.splitlines()) == len(lines)
    assert "Could not import graphviz." in log
    assert f"[{DAG}] [DAG TEST] starting task_id=train" in log
    # a stage's own line, attributed to its task, without Airflow's wrapper fields
    assert "[train output] 02:00:03 INFO    recflow.train: rank 0 of 2 (gloo)\n" in log
    assert f"[{HOOK}] Command exited with return code 0" in log
    assert "new_state=success" in log


def test_a_rejected_batch_shows_its_error_lines_under_the_failed_task() -> None:
    output = [
        "02:00:03 INFO    recflow.validate: validated 10766 rows",
        "02:00:03 WARNING recflow.validate: removed the stale validated batch data/validated",
        "error: batch 2026-11-21 rejected: 41 of 43 expectations passed (events.parquet)",
        "  - events: expect_column_values_to_be_between(price): 10766 unexpected",
        "  - catalog: expect_column_values_to_be_between(price): 150 unexpected",
    ]
    lines = _run(_task("validate", 1, 7.5, output, state="failed"), "failed")

    follower, console, _ = _follow(lines, lambda name: "must not be asked")

    assert console == [
        f"{_at(1)} start   validate",
        f"{INDENT}WARNING recflow.validate: removed the stale validated batch data/validated",
        f"{_at(7.5)} failed  validate           6.5s",
        f"{INDENT}error: batch 2026-11-21 rejected: 41 of 43 expectations passed (events.parquet)",
        f"{INDENT}  - events: expect_column_values_to_be_between(price): 10766 unexpected",
        f"{INDENT}  - catalog: expect_column_values_to_be_between(price): 150 unexpected",
    ]
    assert [task.name for task in follower.failed()] == ["validate"]
    assert follower.state == "failed"


def test_a_task_that_fails_before_its_command_shows_airflow_s_error() -> None:
    lines = _run(_task("ingest", 1, 2, [], state="failed"), "failed")
    _, console, _ = _follow(lines)
    assert console[-1] == (
        f"{INDENT}Task failed with exception: AirflowException: Bash command failed. "
        "The command returned a non-zero exit code 1."
    )


def test_error_lines_keep_each_exception_once_with_its_continuation() -> None:
    rank = [
        "Traceback (most recent call last):",
        '  File "loop.py", line 200, in train',
        "    loss.backward()",
        "RuntimeError: shapes do not match",
        "  of the hidden state",
    ]
    output = [
        "02:00:01 INFO    recflow.train: rank 0 of 2 (gloo)",
        *rank,
        *rank,  # the second worker fails the same way
        "E1122 02:00:09.000000 1 torch/distributed/elastic/api.py:869] failed (exitcode: 1)",
        "Traceback (most recent call last):",
        '  File "torchrun", line 8, in <module>',
        "During handling of the above exception, another exception occurred:",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
        "============================================================",
    ]
    assert error_lines(output) == [
        "RuntimeError: shapes do not match",
        "  of the hidden state",
        "E1122 02:00:09.000000 1 torch/distributed/elastic/api.py:869] failed (exitcode: 1)",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
    ]


def test_output_without_error_lines_gives_its_last_lines() -> None:
    output = [f"line {n}" for n in range(20)]
    assert error_lines(output) == output[-8:]


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("02:00:06 INFO    recflow.prepare: prepared 225 users", None),
        ("02:00:06 INFO    recflow.optimize: epoch 3: not the trainer", None),
        ("02:00:06 ERROR   recflow.gate: blocked", "ERROR recflow.gate: blocked"),
        ("02:00:06 WARNING root: consider pre-processing", "WARNING root: consider pre-processing"),
        ("W1122 02:00:01.053000 12580 torch/run.py:874] *****", None),
        (
            "E1122 02:00:01.053000 12580 torch/api.py:9] worker died",
            "ERROR torch/api.py:9: worker died",
        ),
        ("/x/gx.py:12: UserWarning: deprecated", "/x/gx.py:12: UserWarning: deprecated"),
        ('train changed: {"train": []}', None),
        (
            "02:00:06 INFO    recflow.rollout.steps: private canary 5%: pass, stable 900",
            "private canary 5%: pass, stable 900",
        ),
        (
            "02:00:06 WARNING recflow.rollout.steps: public shadow: fail, p99 latency 60 ms",
            "public shadow: fail, p99 latency 60 ms",
        ),
        ("02:00:06 INFO    recflow.rollout: rollout of v begins", None),
    ],
)
def test_live_lines_are_warnings_errors_and_epochs(line: str, shown: str | None) -> None:
    assert live_line(line) == shown


def test_long_console_lines_are_cut_to_the_terminal_width() -> None:
    output = ["02:00:06 WARNING root: " + "x" * 200]
    _, console, _ = _follow(_run(_task("optimize", 1, 2, output), "success"), width=80)
    assert all(len(line) <= 80 for line in console)
    assert console[1].endswith("...")


def test_render_writes_a_traceback_for_a_structured_exception() -> None:
    text = render(
        json.loads(_record(1, "Task failed", "task", "error", exception=FAILED_EXCEPTION))
    )
    assert text.splitlines()[1:] == [
        "Traceback (most recent call last):",
        '  File "bash.py", line 225, in execute',
        "AirflowException: Bash command failed. The command returned a non-zero exit code 1.",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (6.25, "6.2s"), (42.4, "42s"), (185, "3m05s"), (3600, "60m00s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# --- key figures -----------------------------------------------------------------------------


def test_every_registry_stage_has_a_key_figure_entry() -> None:
    assert set(KEY_FIGURES) == {spec.name for spec in STAGES}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    """A project folder holding what the stages write, in the shape they write it."""
    (tmp_path / "params.yaml").write_text('run:\n  logical_date: "2026-11-22"\n')
    _write_json(
        tmp_path / stage_path("pin_production", "--out"),
        {"alias": "production", "cloud": "private", "version": "0123456789abcdef"},
    )
    _write_json(
        tmp_path / stage_path("ingest", "--out", "2026-11-22", "manifest.json"),
        {"rows": 366914, "users": 5096, "items": 2000, "logical_date": "2026-11-22"},
    )
    _write_json(
        tmp_path / stage_path("validate", "--metrics"),
        {
            "rows": 366914,
            "success": True,
            "successful_expectations": 43,
            "evaluated_expectations": 43,
        },
    )
    _write_json(
        tmp_path / stage_path("prepare", "--metrics"),
        {"users": 4886, "sequences": 4886, "items": 2000, "events": 366914},
    )
    _write_json(
        tmp_path / stage_path("train", "--out", "metrics.json"),
        {
            "epochs_run": 19,
            "test": {"ndcg@10": 0.499835, "hr@10": 0.73},
            "baselines": {"item_transition": {"ndcg@10": 0.504555}},
        },
    )
    batch_1 = {"items_per_s": 3699.5, "p50_ms": 0.27}
    _write_json(
        tmp_path / stage_path("optimize", "--metrics"),
        {
            "shipped": "onnxruntime-fp32",
            "latency": {
                "onnxruntime-fp32": {"batch_1": batch_1},
                "torch-eager-fp32": {"batch_1": {"items_per_s": 1238.0}},
            },
        },
    )
    _write_json(
        tmp_path / stage_path("reference", "--out", "reference.json"),
        {"schema_version": 1, "rows": 4886, "features": ["history_length", "top_category"]},
    )
    _write_json(tmp_path / stage_path("evaluate", "--metrics"), {"verdict": "pass"})
    return tmp_path


def test_key_figures_come_from_the_files_the_stages_wrote(ran: Path) -> None:
    assert {spec.name: key_figure(spec.name, ran) for spec in STAGES} == {
        "set_logical_date": "run.logical_date 2026-11-22",
        "pin_production": "production 0123456789abcdef",
        "generate": None,
        "ingest": "366,914 events, 5,096 users, 2,000 items",
        "validate": "366,914 rows accepted (43/43 expectations)",
        "prepare": "4,886 users, 4,886 sequences, 2,000 items",
        "train": "19 epochs, test NDCG@10 0.4998 vs transition 0.5046",
        "optimize": "ships onnxruntime-fp32, 3.0x torch eager at batch 1",
        "reference": "4,886 reference requests, 2 features",
        "evaluate": "gate verdict: pass",
        # an empty private store (file:stores/private under the folder): nothing promoted
        "register": "registered; no alias changed (a blocked candidate is never a candidate)",
        "deploy": "no rollout yet",
        "monitor": "no monitoring report yet",
    }


def test_the_summary_has_a_line_per_output_with_its_figure_and_place(ran: Path) -> None:
    assert summary_lines(ran) == [
        "  validate  366,914 rows accepted (43/43 expectations); "
        "report reports/validation/data_docs/index.html",
        "  prepare   4,886 users, 4,886 sequences, 2,000 items; in data/prepared/",
        "  train     19 epochs, test NDCG@10 0.4998 vs transition 0.5046; in models/candidate/",
        "  optimize  ships onnxruntime-fp32, 3.0x torch eager at batch 1; "
        "in models/candidate/optimized/",
        "  evaluate  gate verdict: pass; report models/candidate/evaluation/report.html",
    ]


def _rollout(ran: Path, status: str, phases: dict[str, tuple[str, list[str]]], **more: Any) -> None:
    from pipelines.rollout.record import Records, RolloutRecord, TargetRecord

    targets = [
        TargetRecord(cloud, phase=phase, steps=[{"step": s, "outcome": "pass"} for s in steps])
        for cloud, (phase, steps) in phases.items()
    ]
    record = RolloutRecord(
        version="0123456789abcdef",
        targets=targets,
        actor="t",
        created_at="2026-12-02T06:00:00+00:00",
        updated_at="2026-12-02T06:00:00+00:00",
        status=status,
        **more,
    )
    Records(ran / "data/serving/deploy").save(record)


def test_the_deploy_figure_says_where_the_rollout_ended(ran: Path) -> None:
    canary = ["infra", "shadow", "canary 5%", "canary 25%", "canary 50%"]
    _rollout(ran, "succeeded", {"private": ("done", canary), "public": ("done", canary)})
    assert key_figure("deploy", ran) == (
        "0123456789ab serves in private, public (shadow, canary 5/25/50%)"
    )
    summary = summary_lines(ran)
    assert summary[-1].startswith("  deploy    0123456789ab serves in private, public")
    assert summary[-1].endswith("; record data/serving/deploy/0123456789abcdef/rollout.json")
    _rollout(ran, "succeeded", {"private": ("done", ["infra", "bake"])})
    assert key_figure("deploy", ran) == "0123456789ab serves in private (bake)"
    _rollout(
        ran,
        "rolled_back",
        {"private": ("rolled_back", canary), "public": ("rolled_back", ["infra"])},
        failure={"cloud": "public", "step": "canary 25%", "reason": "error rate 6% > 0.5%"},
    )
    assert key_figure("deploy", ran) == (
        "0123456789ab rolled back at public canary 25%: error rate 6% > 0.5%"
    )
    _rollout(ran, "awaiting_approval", {"private": ("done", canary), "public": ("pending", [])})
    assert key_figure("deploy", ran) == "0123456789ab waits for approval before public"


def test_a_shipped_artifact_without_eager_timing_has_no_speed_up(ran: Path) -> None:
    _write_json(ran / stage_path("optimize", "--metrics"), {"shipped": "tensorrt-fp16"})
    assert key_figure("optimize", ran) == "ships tensorrt-fp16"


def test_a_missing_or_broken_file_gives_a_note_instead_of_a_figure(ran: Path) -> None:
    (ran / stage_path("prepare", "--metrics")).unlink()
    (ran / stage_path("train", "--out", "metrics.json")).write_text("[1, 2]")
    _write_json(ran / stage_path("validate", "--metrics"), {"rows": 5})
    assert str(key_figure("prepare", ran)).startswith("(no figure: FileNotFoundError")
    train_metrics = ran / "models/candidate/metrics.json"
    assert key_figure("train", ran) == (
        f"(no figure: ValueError: {train_metrics} does not hold a JSON object)"
    )
    assert key_figure("validate", ran) == "(no figure: KeyError: 'success')"


def test_stage_path_names_a_missing_flag() -> None:
    with pytest.raises(ValueError):
        figures.stage_path("generate", "--metrics")


# --- the job and the UI ------------------------------------------------------------------------


def test_the_job_refuses_an_invalid_params_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "params.yaml").write_text("run:\n  sede: 1\n")
    assert job.main(["--root", str(tmp_path)]) == 2
    assert "run.sede: unknown key" in capsys.readouterr().err
    assert not (tmp_path / ".airflow").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--logical-date", "2026-02-30"], "is not a calendar date"),
        (["--logical-date", "yesterday"], "must be YYYY-MM-DD"),
        (["--logical-date", "2026-02-03", "--skip-airflow"], "--skip-airflow skips"),
    ],
)
def test_the_job_refuses_a_bad_logical_date(
    project_root: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        job.main(["--root", str(project_root), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("repro", "push", "line"),
    [
        (
            "Data and pipelines are up to date.\n",
            "Everything is up to date.\n",
            "dvc repro: up to date (1.5s); dvc push: up to date (2.0s)",
        ),
        (
            "Running stage 'prepare':\n> python -m ...\nRunning stage 'train':\n",
            "62 files pushed\n",
            "dvc repro: ran 2 stages (1.5s); dvc push: 62 files pushed (2.0s)",
        ),
    ],
)
def test_dvc_steps_take_one_line(repro: str, push: str, line: str) -> None:
    steps = job.StepResult(0, repro, 1.5), job.StepResult(0, push, 2.0)
    assert job.dvc_summary(*steps) == line
    assert job.dvc_summary(steps[0], None) == line.split(";")[0]


def test_the_ui_uses_the_main_job_s_airflow_on_this_machine_only(tmp_path: Path) -> None:
    home = tmp_path / ".airflow"
    env = ui.ui_env(tmp_path, home, 18080, 3)
    for key, value in airflow_env(tmp_path, home).items():
        assert env[key] == value, key
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    # standalone starts its components as `airflow ...`: this environment's comes first
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        home / "simple_auth_manager_passwords.json.generated"
    )


def test_the_ui_refuses_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert ui.main(["--root", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err
    assert "AIRFLOW_PORT=" in err
    assert not (tmp_path / ".airflow").exists()


@pytest.mark.parametrize("port", ["0", "70000"])
def test_the_ui_refuses_a_port_out_of_range(
    tmp_path: Path, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ui.main(["--root", str(tmp_path), "--port", port]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_make_airflow_runs_the_ui_module_on_the_chosen_port(project_root: Path) -> None:
    dry = subprocess.run(
        ["make", "-n", "airflow", "AIRFLOW_PORT=18099"],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-m pipelines.main_job.ui --port 18099" in dry.stdout
