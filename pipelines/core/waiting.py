"""Waiting for a condition: one polling loop for every process, server and request that is
waited for.

:func:`wait_until` asks its predicate until the answer is truthy or the time is up, and hands
back the last answer either way; the caller decides what a timeout means (an error naming what
was missing, or going on with what there is). A predicate may raise to stop the wait early (a
process that exited will never answer). The clock and the sleep are injectable, so a test runs
the loop on a fake clock without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``predicate`` every ``interval_s`` until it returns a truthy value or ``timeout_s``
    has passed.

    The predicate is called at least once, and once more when the deadline comes (a sleep
    never runs past it), so a condition met just in time is seen.

    Args:
        predicate: The condition; its exceptions propagate and end the wait.
        timeout_s: How long to wait, from the first call.
        interval_s: The pause between two calls.
        clock: Seconds on a monotonic clock.
        sleep: Pauses for the given seconds.

    Returns:
        The first truthy answer, or the last (falsy) one when the time ran out.
    """
    deadline = clock() + timeout_s
    while True:
        answer = predicate()
        if answer:
            return answer
        left = deadline - clock()
        if left <= 0:
            return answer
        sleep(min(interval_s, left))
