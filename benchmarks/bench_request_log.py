"""How long writing a request-log window holds up a serving worker.

A serving worker writes each closed request-log window (``serve.request_log.window_s``) in a
thread; while that thread holds the interpreter, the worker's event loop answers nothing, and
every request that arrives meanwhile waits. ``python -m benchmarks.bench_request_log`` builds
windows of 30k and 70k rows (the rows one of two workers logs in 60 s at 1,000 and at about
2,300 requests/s) over a 2,000-item table, then, ``--repeats`` times each:

* ``build_ms``: :func:`rows_table` alone, the best run;
* ``write_ms``: the window written to Parquet from a thread, as the server does, the best run;
* ``loop_stall_max_ms``: the longest gap between the ticks of an event loop that asks to wake
  every millisecond while that write runs (the worst of the runs): what a request arriving
  then waits for, beyond its own work;
* ``loop_stall_p99_ms``: the 99th percentile of those gaps, over every run.

Writes ``benchmarks/results/request_log.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from pipelines.core.io import write_json
from pipelines.core.stats import percentile
from pipelines.serving.items import ItemTable
from pipelines.serving.server.requestlog import RequestLog, Row, rows_table

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "benchmarks" / "results" / "request_log.json"
ITEMS = 2_000
SIZES = (30_000, 70_000)


def item_table(n: int = ITEMS) -> ItemTable:
    """A table of ``n`` items in 40 categories, priced, the first ones most popular."""
    ids = np.array(["", *(f"i{i:05d}" for i in range(1, n + 1))], dtype=object)
    categories = np.array(["", *(f"c{i % 40:02d}" for i in range(1, n + 1))], dtype=object)
    prices = np.concatenate([[np.nan], np.linspace(1.0, 200.0, n)])
    share = np.concatenate([[0.0], np.full(n, 1.0 / n)])
    return ItemTable(
        ids=ids,
        categories=categories,
        prices=prices,
        index={str(item): i for i, item in enumerate(ids) if i},
        by_popularity=np.arange(1, n + 1),
        popularity_share=share,
    )


def window(rows: int, table: ItemTable, seed: int = 0) -> list[Row]:
    """``rows`` answered requests: histories of 0–29 known items, top-20 answers."""
    rng = np.random.default_rng(seed)
    return [
        Row(
            time=1.79e9 + i * 0.002,
            user=f"p{i % 977:04d}",
            version="v1",
            arm="stable",
            history=rng.integers(1, table.n_items + 1, rng.integers(0, 30)),
            items=rng.integers(1, table.n_items + 1, 20),
            table=table,
            latency_ms=1.0,
            fallback=False,
            cache_hit=False,
            unknown_items=0,
        )
        for i in range(rows)
    ]


async def _write_while_ticking(log: RequestLog, rows: list[Row]) -> tuple[float, list[float]]:
    """Write ``rows`` in a thread while the loop ticks every millisecond; the write's seconds
    and the gaps between ticks, in ms."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now - last) * 1000)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await asyncio.to_thread(log.write, rows[0].time, rows)
    seconds = time.perf_counter() - started
    done.set()
    await ticker
    return seconds, gaps


def measure(rows: int, repeats: int) -> dict[str, Any]:
    """Build and write one window of ``rows`` rows ``repeats`` times."""
    data = window(rows, item_table())
    builds, writes, worst, gaps = [], [], 0.0, []
    for _ in range(repeats):
        started = time.perf_counter()
        rows_table(data)
        builds.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as folder:
            log = RequestLog(Path(folder), window_s=60.0, max_rows=10**9, worker="w0")
            seconds, run_gaps = asyncio.run(_write_while_ticking(log, data))
        writes.append(seconds)
        worst = max(worst, max(run_gaps))
        gaps += run_gaps
    return {
        "rows": rows,
        "build_ms": round(min(builds) * 1000, 1),
        "write_ms": round(min(writes) * 1000, 1),
        "loop_stall_max_ms": round(worst, 1),
        "loop_stall_p99_ms": round(percentile(gaps, 99), 2),
        "repeats": repeats,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per window size")
    parser.add_argument("--out", type=Path, default=RESULT_FILE, help="the results file")
    args = parser.parse_args(argv)
    points = []
    for rows in SIZES:
        point = measure(rows, args.repeats)
        print(json.dumps(point), flush=True)
        points.append(point)
    write_json(
        args.out,
        {
            "benchmark": "request-log window write against the serving event loop",
            "items": ITEMS,
            "points": points,
            "machine": machine_info(),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
