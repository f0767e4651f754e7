"""Engines for the dominant step of the prepare stage: the batch in the tie-rule order.

``python -m benchmarks.bench_prepare_engines --validated data/validated [--engines ...]`` times,
each in a fresh process so that its peak RSS is its own, one way per engine of producing the
events of the configured types ordered by ``user_id, ts, event_code, event_id`` and handed to
Python in batches with the columns prepare reads from them (``user_id``, ``item_id``, ``ts``,
``event_code``, ``price`` and the event's row in the file):

* ``pandas``: the whole batch as a DataFrame and a mergesort (prepare before bounded memory);
* ``pyarrow``: the whole batch as an Arrow table and ``Table.sort_by`` (in memory);
* ``numpy_buckets``: chunked numpy; the distinct users, then the events spilled to Arrow files
  by ranges of users, each range sorted with ``np.lexsort`` (bounded by the range size);
* ``duckdb``: one ``ORDER BY`` with a memory limit and a spill folder, streamed out in batches
  (``pipelines.data.event_order``, as prepare runs it);
* ``duckdb_codes``: the same with ``user_id`` and ``item_id`` replaced by their ranks first
  (integer sort keys instead of strings).

Each engine is timed once (``--repeats`` for more, the fastest is kept).
Writes ``benchmarks/results/prepare_engines.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "benchmarks" / "results" / "prepare_engines.json"
ENGINES = ("pandas", "pyarrow", "numpy_buckets", "duckdb", "duckdb_codes")
BATCH_ROWS = 1_000_000
DUCKDB_MEMORY = "1GB"  # as pipelines.data.event_order.MEMORY_LIMIT
EVENT_TYPES = ("view", "add_to_cart", "purchase")

log = logging.getLogger("recflow.bench")


def _pandas(events: Path, work: Path) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.core.params import PrepareConfig
    from pipelines.data.preparation import ordered_events

    frame = ordered_events(pq.read_table(events).to_pandas(), PrepareConfig())
    frame = frame[["user_id", "item_id", "ts", "event_code", "price"]]
    for start in range(0, len(frame), BATCH_ROWS):
        yield pa.Table.from_pandas(frame.iloc[start : start + BATCH_ROWS], preserve_index=False)


def _arrow_events(events: Path) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(
        events, columns=["event_id", "user_id", "item_id", "event_type", "timestamp", "price"]
    )
    table = table.filter(pc.is_in(table["event_type"], pa.array(EVENT_TYPES)))
    code = pc.index_in(table["event_type"], pa.array(EVENT_TYPES)).cast(pa.int8())
    micros = table["timestamp"].cast(pa.int64()).to_numpy()
    ts = np.floor_divide(micros, 1_000_000)
    return table.append_column("event_code", code).append_column("ts", pa.array(ts))


def _pyarrow(events: Path, work: Path) -> Iterator[Any]:
    table = _arrow_events(events)
    order = [
        ("user_id", "ascending"),
        ("ts", "ascending"),
        ("event_code", "ascending"),
        ("event_id", "ascending"),
    ]
    table = table.sort_by(order).select(["user_id", "item_id", "ts", "event_code", "price"])
    yield from table.to_batches(BATCH_ROWS)


def _numpy_buckets(events: Path, work: Path) -> Iterator[Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = pq.ParquetFile(events)
    users: set[str] = set()
    for batch in source.iter_batches(columns=["user_id"]):
        users.update(pc.unique(batch["user_id"]).to_pylist())
    ordered = pa.array(sorted(users))
    buckets = max(1, len(ordered) * 60 // BATCH_ROWS)
    per_bucket = -(-len(ordered) // buckets)
    columns = ["event_id", "user_id", "item_id", "event_type", "timestamp", "price"]
    schema = None
    writers: list[Any] = []
    for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        batch = batch.filter(pc.is_in(batch["event_type"], pa.array(EVENT_TYPES)))
        rank = pc.index_in(batch["user_id"], ordered).to_numpy()
        code = pc.index_in(batch["event_type"], pa.array(EVENT_TYPES)).cast(pa.int8())
        ts = np.floor_divide(batch["timestamp"].cast(pa.int64()).to_numpy(), 1_000_000)
        table = pa.table(
            {
                "user_rank": rank,
                "ts": ts,
                "event_code": code,
                "event_id": batch["event_id"],
                "user_id": batch["user_id"],
                "item_id": batch["item_id"],
                "price": batch["price"],
            }
        )
        if schema is None:
            schema = table.schema
            writers = [
                pa.ipc.new_file(str(work / f"bucket{k}.arrow"), schema) for k in range(buckets)
            ]
        part = rank // per_bucket
        for k in np.unique(part):
            writers[k].write_table(table.filter(pa.array(part == k)))
    for writer in writers:
        writer.close()
    for k in range(len(writers)):
        with pa.memory_map(str(work / f"bucket{k}.arrow")) as source_file:
            table = pa.ipc.open_file(source_file).read_all()
        event_rank = pc.rank(table["event_id"], sort_keys="ascending").to_numpy()
        order = np.lexsort(
            (
                event_rank,
                table["event_code"].to_numpy(),
                table["ts"].to_numpy(),
                table["user_rank"].to_numpy(),
            )
        )
        yield table.take(pa.array(order)).select(
            ["user_id", "item_id", "ts", "event_code", "price"]
        )


_TS = "(epoch_us(timestamp) - ((epoch_us(timestamp) % 1000000) + 1000000) % 1000000) // 1000000"
_CODE = "CASE event_type WHEN 'view' THEN 0 WHEN 'add_to_cart' THEN 1 ELSE 2 END::TINYINT"


def _connect(work: Path) -> Any:
    import duckdb

    con = duckdb.connect(
        config={"memory_limit": DUCKDB_MEMORY, "temp_directory": str(work / "spill")}
    )
    con.execute("SET enable_progress_bar = false")
    return con


def _duckdb(events: Path, work: Path) -> Iterator[Any]:
    from pipelines.data.event_order import open_batch

    with open_batch(events, EVENT_TYPES, work) as batch:
        yield from batch.ordered(BATCH_ROWS)


def _duckdb_codes(events: Path, work: Path) -> Iterator[Any]:
    con = _connect(work)
    types = ", ".join(f"'{kind}'" for kind in EVENT_TYPES)
    query = f"""
        WITH ev AS (
            SELECT * FROM read_parquet('{events}', file_row_number = true)
            WHERE event_type IN ({types})
        ),
        users AS (SELECT user_id, row_number() OVER (ORDER BY user_id) AS user_rank
                  FROM (SELECT DISTINCT user_id FROM ev)),
        items AS (SELECT item_id, row_number() OVER (ORDER BY item_id) AS item_rank
                  FROM (SELECT DISTINCT item_id FROM ev))
        SELECT user_rank, item_rank, {_TS} AS ts, {_CODE} AS event_code, price, file_row_number
        FROM ev JOIN users USING (user_id) JOIN items USING (item_id)
        ORDER BY user_rank, ts, event_code, event_id
    """
    reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
    yield from reader


def _measure(engine: str, events: Path) -> dict[str, Any]:
    run = {
        "pandas": _pandas,
        "pyarrow": _pyarrow,
        "numpy_buckets": _numpy_buckets,
        "duckdb": _duckdb,
        "duckdb_codes": _duckdb_codes,
    }[engine]
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as work:
        started = time.perf_counter()
        rows = 0
        checksum = 0
        for batch in run(events, Path(work)):
            # position-weighted, so that two engines agree only on the same order
            weights = (np.arange(rows, rows + batch.num_rows) % 7).astype(np.int64)
            checksum += int((batch.column("ts").to_numpy() * weights).sum())
            rows += batch.num_rows
        seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "engine": engine,
        "rows": rows,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_kb / 1024),
        "bytes_per_event": round(peak_kb * 1024 / max(rows, 1)),
        "checksum": checksum,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Time each engine in its own process and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validated", type=Path, default=ROOT / "data" / "validated")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULT_FILE)
    args = parser.parse_args(argv)
    events = args.validated / "events.parquet"
    if args.one:
        print(json.dumps(_measure(args.one, events)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for engine in args.engines:
        runs = []
        for _ in range(args.repeats):
            done = subprocess.run(
                [
                    sys.executable,
                    *("-m", "benchmarks.bench_prepare_engines", "--one", engine),
                    *("--validated", str(args.validated)),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda run: run["seconds"])
        log.info("%s", best)
        results.append(best)
    from benchmarks.machine import machine_info
    from pipelines.core.io import write_json

    write_json(
        args.out,
        {
            "benchmark": "prepare: the batch in the tie-rule order, streamed out in batches",
            "machine": dict(machine_info()),
            "batch_rows": BATCH_ROWS,
            "duckdb_memory_limit": DUCKDB_MEMORY,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
