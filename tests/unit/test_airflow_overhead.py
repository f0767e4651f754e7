"""The Airflow overhead benchmark's figures on hand-built timings (nothing is timed here).

The DAG below has the shape of ``recsys_retrain``'s tail: ``prepare`` feeds ``train``,
``train`` feeds ``evaluate`` and ``reference``, which have no edge between them, and both feed
``register``; the figures must follow the longer branch, not the sum of both.
"""

from __future__ import annotations

import datetime as dt

import pytest

from benchmarks.bench_airflow_overhead import (
    TaskTiming,
    critical_path,
    edges_from_tasks,
    gaps,
    idle_periods,
    summarize,
    timing_from_row,
    topological_order,
    upstream_of,
)

T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
EDGES = [
    ("prepare", "train"),
    ("train", "evaluate"),
    ("train", "reference"),
    ("evaluate", "register"),
    ("reference", "register"),
]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def timing(task: str, start: float, end: float, queued: float | None = None) -> TaskTiming:
    return TaskTiming(task, "success", at(start), at(end), None if queued is None else at(queued))


# prepare 0-10, train 12-112 (gap 2), evaluate 115-135 (gap 3) beside reference 113-173
# (gap 1), register 177-180 (gap 4 after reference, the later of its two upstream tasks)
TIMINGS = {
    t.task_id: t
    for t in (
        timing("prepare", 0, 10, queued=-1),
        timing("train", 12, 112, queued=11),
        timing("evaluate", 115, 135, queued=113),
        timing("reference", 113, 173, queued=112.5),
        timing("register", 177, 180, queued=175),
    )
}
UPSTREAM = upstream_of(EDGES, TIMINGS)


def test_upstream_lists_each_tasks_parents_and_tasks_without_any() -> None:
    assert UPSTREAM == {
        "prepare": [],
        "train": ["prepare"],
        "evaluate": ["train"],
        "reference": ["train"],
        "register": ["evaluate", "reference"],
    }
    assert upstream_of([], ["alone"]) == {"alone": []}


def test_the_order_puts_every_task_after_its_upstream_tasks() -> None:
    order = topological_order(UPSTREAM)
    assert order.index("train") < order.index("evaluate") < order.index("register")
    assert order.index("reference") < order.index("register")
    with pytest.raises(ValueError, match="cycle"):
        topological_order({"a": ["b"], "b": ["a"]})


def test_the_critical_path_takes_the_longer_of_two_parallel_branches() -> None:
    seconds = {task: t.seconds for task, t in TIMINGS.items()}
    total, path = critical_path(seconds, UPSTREAM)
    assert path == ["prepare", "train", "reference", "register"]
    assert total == pytest.approx(10 + 100 + 60 + 3)
    # a chain: every task is on it
    assert critical_path({"a": 1.0, "b": 2.0}, {"a": [], "b": ["a"]}) == (3.0, ["a", "b"])
    assert critical_path({}, {}) == (0.0, [])


def test_a_gap_is_measured_from_the_latest_upstream_end() -> None:
    found = {g["task"]: g for g in gaps(TIMINGS, UPSTREAM)}
    assert {task: g["seconds"] for task, g in found.items()} == {
        "train": 2.0,
        "evaluate": 3.0,
        "reference": 1.0,
        "register": 4.0,
    }
    assert found["register"]["after"] == "reference"
    assert found["register"]["upstream"] == ["evaluate", "reference"]


def test_a_gap_tells_the_wait_for_a_sibling_from_the_dispatch() -> None:
    """One worker: evaluate, ready when train ends at 112, waits for reference (113-173) and
    starts 2 s after it ends; reference itself waited for nothing."""
    timings = {
        **TIMINGS,
        "evaluate": timing("evaluate", 175, 195, queued=113),
        "register": timing("register", 197, 200, queued=196),
    }
    found = {g["task"]: g for g in gaps(timings, UPSTREAM)}
    assert found["evaluate"]["seconds"] == 63.0
    assert found["evaluate"]["waited_for_others_s"] == 61.0
    assert found["evaluate"]["dispatch_s"] == 2.0
    assert found["reference"]["waited_for_others_s"] == 0.0
    assert found["reference"]["dispatch_s"] == found["reference"]["seconds"] == 1.0
    figures = summarize(at(-3), at(201), timings, UPSTREAM, target_gap_s=5.0)
    assert figures["gap_max_s"] == 63.0 and figures["target_met"] is False
    # train 2, evaluate 2, reference 1, register 2 (ready at 195, nothing else ended before 197)
    assert figures["dispatch_gap_max_s"] == 2.0


def test_tasks_that_never_started_have_no_gap_and_no_duration() -> None:
    timings = {
        **TIMINGS,
        "register": TaskTiming("register", "upstream_failed", None, None),
        "reference": TaskTiming("reference", "failed", at(113), None),
    }
    assert timings["register"].seconds == 0.0
    found = {g["task"] for g in gaps(timings, UPSTREAM)}
    # register never started; reference started but has no end, which a gap after it needs
    assert found == {"train", "evaluate", "reference"}


def test_the_summary_sets_wall_against_task_sum_and_critical_path() -> None:
    figures = summarize(at(-3), at(182), TIMINGS, UPSTREAM, target_gap_s=5.0)
    assert figures["wall_s"] == 185.0
    assert figures["task_sum_s"] == 10 + 100 + 20 + 60 + 3
    assert figures["critical_path_s"] == 173.0
    assert figures["overhead_s"] == 12.0
    assert figures["overhead_share"] == round(12 / 185, 4)
    assert figures["wall_over_task_sum"] == round(185 / 193, 3)
    assert figures["gap_max_s"] == 4.0
    assert figures["gap_median_s"] == 2.5
    assert figures["run_start_to_first_task_s"] == 3.0
    assert figures["last_task_to_run_end_s"] == 2.0
    # queued to start: 1, 1, 2, 0.5, 2
    assert figures["queued_to_start_median_s"] == 1.0
    # no task runs: 3 s before prepare, 2 (10-12), 1 (112-113), 4 (173-177), 2 after register
    assert figures["idle_s"] == 12.0
    assert figures["idle_max_s"] == 4.0
    assert figures["target_met"] is True
    assert list(figures["tasks"]) == ["prepare", "train", "reference", "evaluate", "register"]
    assert summarize(at(-3), at(182), TIMINGS, UPSTREAM, target_gap_s=3.5)["target_met"] is False


def test_idle_stretches_are_where_no_task_runs_whatever_the_edges() -> None:
    # one task at a time, as airflow dags test runs them: evaluate waits for reference to run,
    # so its gap after train holds reference's 60 s; the idle stretches do not
    serial = {
        **TIMINGS,
        "reference": timing("reference", 113, 173),
        "evaluate": timing("evaluate", 174, 194),
        "register": timing("register", 195, 198),
    }
    assert {g["task"]: g["seconds"] for g in gaps(serial, UPSTREAM)}["evaluate"] == 62.0
    assert idle_periods(at(0), at(198), serial) == [2.0, 1.0, 1.0, 1.0]
    assert idle_periods(at(0), at(0), {}) == []


def test_edges_are_read_from_the_apis_task_list() -> None:
    tasks = [
        {"task_id": "train", "downstream_task_ids": ["reference", "evaluate"]},
        {"task_id": "prepare", "downstream_task_ids": ["train"]},
        {"task_id": "register", "downstream_task_ids": []},
        {"task_id": "evaluate", "downstream_task_ids": ["register"]},
        {"task_id": "reference", "downstream_task_ids": ["register"]},
    ]
    assert edges_from_tasks(tasks) == sorted(EDGES)
    assert upstream_of(edges_from_tasks(tasks), []) == UPSTREAM


def test_rows_of_the_api_and_of_the_cli_read_alike() -> None:
    api = timing_from_row(
        {
            "task_id": "train",
            "state": "success",
            "queued_when": "2026-11-20T02:00:11Z",
            "start_date": "2026-11-20T02:00:12.500000Z",
            "end_date": "2026-11-20T02:01:52.500000Z",
        }
    )
    assert api == TaskTiming("train", "success", at(12.5), at(112.5), at(11))
    cli = timing_from_row({"task_id": "monitor", "state": "", "start_date": "", "end_date": ""})
    assert cli == TaskTiming("monitor", "none", None, None, None)
