"""Latency of a scoring callable at several batch sizes: p50, p99 and sequences per second."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipelines.core.stats import percentile


@dataclass(frozen=True)
class Timing:
    """Latency of one backend at one batch size."""

    backend: str
    precision: str
    batch: int
    p50_ms: float
    p99_ms: float
    items_per_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return asdict(self)


def request_batches(histories: np.ndarray, batch: int, count: int) -> list[np.ndarray]:
    """``count`` batches of ``batch`` histories, cycling through ``histories``."""
    rows = np.arange(batch * count) % len(histories)
    return [histories[rows[i * batch : (i + 1) * batch]] for i in range(count)]


Scorer = Callable[[np.ndarray], object]


def measure(
    backend: str,
    precision: str,
    score: Scorer,
    histories: np.ndarray,
    batches: Sequence[int],
    *,
    warmup: int = 3,
    iterations: int = 30,
) -> list[Timing]:
    """Time one scorer (see :func:`measure_side_by_side`)."""
    return measure_side_by_side(
        {(backend, precision): score}, histories, batches, warmup=warmup, iterations=iterations
    )


def measure_side_by_side(
    scorers: Mapping[tuple[str, str], Scorer],
    histories: np.ndarray,
    batches: Sequence[int],
    *,
    warmup: int = 3,
    iterations: int = 30,
    rounds: int = 5,
    settle_s: float = 0.0,
) -> list[Timing]:
    """Time each ``(backend, precision)`` scorer on real histories, one call per request.

    At each batch size the scorers take turns: ``rounds`` rounds, in each of which every scorer
    waits ``settle_s`` (the idle threads of the one before stop spinning and leave it the
    cores, as they would in a process serving one runtime), answers one untimed call, and then
    its share of the ``iterations`` timed ones, all on the same requests. A slow spell of a
    shared machine then falls on every scorer alike instead of on whichever ran during it.

    p50/p99 are nearest-rank percentiles (:func:`~pipelines.core.stats.percentile`) over single
    calls; ``items_per_s`` is sequences scored per second at p50.
    """
    rounds = max(1, min(rounds, iterations))
    results = []
    for batch in batches:
        requests = request_batches(histories, batch, warmup + iterations)
        seconds: dict[tuple[str, str], list[float]] = {key: [] for key in scorers}
        for score in scorers.values():
            for request in requests[:warmup]:
                score(request)
        for turn in range(rounds):
            timed = requests[warmup:][turn::rounds]
            for key, score in scorers.items():
                if settle_s and len(scorers) > 1:
                    time.sleep(settle_s)
                score(timed[0])
                for request in timed:
                    started = time.perf_counter()
                    score(request)
                    seconds[key].append(time.perf_counter() - started)
        for (backend, precision), values in seconds.items():
            ms = [value * 1000.0 for value in values]
            p50, p99 = percentile(ms, 50), percentile(ms, 99)
            results.append(
                Timing(
                    backend=backend,
                    precision=precision,
                    batch=batch,
                    p50_ms=round(p50, 4),
                    p99_ms=round(p99, 4),
                    items_per_s=round(batch / (p50 / 1000.0), 1),
                )
            )
    return results
