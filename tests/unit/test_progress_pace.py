"""Tenths: a progress line at each tenth of the work passed, never at its end, and none for
work that has not run long enough."""

from __future__ import annotations

from pipelines.core.logs import Tenths


def test_a_line_is_due_at_each_tenth_passed_and_not_at_the_end() -> None:
    tenths = Tenths(35, after_s=0.0)
    due = [done for done in range(1, 36) if tenths.due(done) is not None]
    assert due == [4, 7, 11, 14, 18, 21, 25, 28, 32]


def test_steps_that_jump_tenths_give_one_line_each() -> None:
    tenths = Tenths(100, after_s=0.0)
    assert [tenths.due(done) is not None for done in (5, 35, 36, 99, 100)] == [
        False,
        True,
        False,
        True,
        False,
    ]


def test_no_line_before_the_work_has_run_long_enough() -> None:
    tenths = Tenths(10, after_s=1e9)
    assert all(tenths.due(done) is None for done in range(1, 11))


def test_nothing_is_due_for_empty_work() -> None:
    assert Tenths(0, after_s=0.0).due(0) is None
