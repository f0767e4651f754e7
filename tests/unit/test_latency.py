"""Side-by-side latency measurement: the scorers take turns on the same requests."""

from __future__ import annotations

import numpy as np

from pipelines.serving.latency import measure, measure_side_by_side, request_batches


def test_scorers_take_turns_on_the_same_requests() -> None:
    histories = np.arange(40, dtype=np.int64).reshape(20, 2)
    calls: list[tuple[str, int, int]] = []

    def scorer(name: str):  # type: ignore[no-untyped-def]
        def score(request: np.ndarray) -> None:
            calls.append((name, len(request), int(request[0, 0])))

        return score

    timings = measure_side_by_side(
        {("a", "fp32"): scorer("a"), ("b", "int8"): scorer("b")},
        histories,
        [1, 4],
        warmup=2,
        iterations=6,
        rounds=3,
    )
    assert [(t.backend, t.precision, t.batch) for t in timings] == [
        ("a", "fp32", 1),
        ("b", "int8", 1),
        ("a", "fp32", 4),
        ("b", "int8", 4),
    ]
    assert all(t.p99_ms >= t.p50_ms > 0 and t.items_per_s > 0 for t in timings)
    for batch in (1, 4):
        seen = [(name, first) for name, size, first in calls if size == batch]
        a = [first for name, first in seen if name == "a"]
        b = [first for name, first in seen if name == "b"]
        assert a == b  # the same requests, in the same order
        # 2 warmup calls, then per round 1 untimed and 2 timed calls
        assert len(a) == 2 + 3 * (1 + 2)
        names = [name for name, _ in seen][4:]  # after both warmups
        assert names == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3


def test_every_timed_request_is_used_once() -> None:
    histories = np.arange(30, dtype=np.int64).reshape(30, 1)
    timed: list[int] = []
    measure(
        "x", "fp32", lambda r: timed.append(int(r[0, 0])), histories, [1], warmup=3, iterations=10
    )
    # requests are histories 0, 1, 2, ... in turn: 0-2 warm up, 3-12 are timed, in 5 rounds
    # of one untimed call (the round's first request) and its two timed ones
    assert timed[:3] == [0, 1, 2]
    assert timed[3:] == [3, 3, 8, 4, 4, 9, 5, 5, 10, 6, 6, 11, 7, 7, 12]


def test_request_batches_cycle_through_the_histories() -> None:
    histories = np.arange(5, dtype=np.int64).reshape(5, 1)
    batches = request_batches(histories, 2, 4)
    assert [b[:, 0].tolist() for b in batches] == [[0, 1], [2, 3], [4, 0], [1, 2]]
