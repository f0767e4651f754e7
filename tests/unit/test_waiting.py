"""The one polling loop, on a fake clock: nothing sleeps for real."""

from __future__ import annotations

import pytest

from pipelines.core.waiting import wait_until


class FakeClock:
    """A monotonic clock that moves only when the loop sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_first_truthy_answer_is_returned_without_sleeping_further() -> None:
    clock = FakeClock()
    answers = iter([None, [], ["ready"]])

    found = wait_until(
        lambda: next(answers), timeout_s=10, interval_s=0.5, clock=clock, sleep=clock.sleep
    )

    assert found == ["ready"]
    assert clock.sleeps == [0.5, 0.5]


def test_the_last_answer_comes_back_when_the_time_runs_out() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def never() -> list[str]:
        calls.append(clock.now)
        return []

    found = wait_until(never, timeout_s=2, interval_s=0.75, clock=clock, sleep=clock.sleep)

    assert found == []
    # the last sleep stops at the deadline, where the predicate is asked once more
    assert clock.sleeps == [0.75, 0.75, 0.5]
    assert calls == [100.0, 100.75, 101.5, 102.0]


def test_a_zero_timeout_asks_once() -> None:
    clock = FakeClock()
    calls: list[int] = []

    assert not wait_until(
        lambda: calls.append(1), timeout_s=0, interval_s=1, clock=clock, sleep=clock.sleep
    )
    assert calls == [1]
    assert clock.sleeps == []


def test_an_exception_of_the_predicate_ends_the_wait() -> None:
    clock = FakeClock()

    def exited() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(exited, timeout_s=10, interval_s=1, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []
