"""The request log's window table: every column as the rows say, decoded with each row's own
item table (a window may span a model change), and the write benchmark's parts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from benchmarks import bench_request_log
from pipelines.serving.server.requestlog import RequestLog, rows_table


def test_a_window_over_two_item_tables_decodes_each_row_with_its_own() -> None:
    first = bench_request_log.item_table(50)
    second = bench_request_log.item_table(50)
    second.ids[1:] = second.ids[1:][::-1]  # the same indices name other items
    rows = bench_request_log.window(7, first) + bench_request_log.window(5, second, seed=1)
    table = rows_table(rows).to_pylist()
    assert len(table) == 12
    for row, record in zip(rows, table, strict=True):
        assert record["history_items"] == [row.table.ids[i] for i in row.history]
        assert record["items"] == [row.table.ids[i] for i in row.items]
        assert record["item_categories"] == [row.table.categories[i] for i in row.items]
        assert record["history_prices"] == [row.table.prices[i] for i in row.history]
        assert int(record["time"].timestamp() * 1000) == int(row.time * 1000)
        assert (record["user"], record["arm"]) == (row.user, row.arm)
    assert all(isinstance(record["history_items"], list) for record in table)


def test_an_empty_window_has_every_column() -> None:
    table = rows_table([])
    assert table.num_rows == 0
    assert "history_items" in table.column_names and "item_categories" in table.column_names


def test_the_benchmark_writes_a_window_while_the_loop_ticks(tmp_path: Path) -> None:
    rows = bench_request_log.window(200, bench_request_log.item_table(100))
    log = RequestLog(tmp_path, window_s=60.0, max_rows=10**6, worker="w0")
    seconds, gaps = asyncio.run(bench_request_log._write_while_ticking(log, rows))
    assert seconds > 0 and gaps  # the loop ticked while the thread wrote
    written = list(tmp_path.rglob("*.parquet"))
    assert len(written) == 1
    assert np.isfinite(gaps).all()
