"""Latency of a scoring callable at several batch sizes: p50, p99 and sequences per second."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


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


def measure(
    backend: str,
    precision: str,
    score: Callable[[np.ndarray], object],
    histories: np.ndarray,
    batches: Sequence[int],
    *,
    warmup: int = 3,
    iterations: int = 30,
) -> list[Timing]:
    """Time ``score`` on real histories, one call per request, for each batch size.

    p50/p99 are over single calls; ``items_per_s`` is sequences scored per second at p50.
    """
    results = []
    for batch in batches:
        requests = request_batches(histories, batch, warmup + iterations)
        for request in requests[:warmup]:
            score(request)
        seconds = []
        for request in requests[warmup:]:
            started = time.perf_counter()
            score(request)
            seconds.append(time.perf_counter() - started)
        p50, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 99])
        results.append(
            Timing(
                backend=backend,
                precision=precision,
                batch=batch,
                p50_ms=round(float(p50), 4),
                p99_ms=round(float(p99), 4),
                items_per_s=round(batch / (float(p50) / 1000.0), 1),
            )
        )
    return results
