"""The request log for monitoring: one Parquet file per time window and worker.

Each answered request adds a row (time, pseudonymized user, model version, arm, the history's
known items with their categories and prices, the returned items with their categories,
latency, fallback, cache hit, unknown items). Rows are kept as item *indices* with a reference
to the version's item table and turned into ids and categories when a window is written, in
one vectorized pass. A window is written atomically (temporary name, then rename) as
``<dir>/date=YYYY-MM-DD/requests-<window start>-<worker>.parquet``, so a reader never sees a
partial file.

Each file carries its layout's version in the Parquet schema metadata
(``recflow.request_log``: ``1``), so the monitor that reads the log can tell a file of another
layout from a broken one and skip it by name.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.io import write_parquet
from pipelines.serving.items import ItemTable

log = logging.getLogger("recflow.serve")

# the request log's layout, in each file's Parquet schema metadata; a reader skips other versions
SCHEMA_VERSION_KEY = b"recflow.request_log"
SCHEMA_VERSION = b"1"


@dataclass(frozen=True)
class Row:
    """One answered request."""

    time: float  # epoch seconds
    user: str  # pseudonym
    version: str
    arm: str
    history: np.ndarray  # known item indices, oldest first
    items: np.ndarray  # returned item indices, best first
    table: ItemTable
    latency_ms: float
    fallback: bool
    cache_hit: bool
    unknown_items: int


class RequestLog:
    """Collects rows and writes one Parquet file per window (or earlier, at ``max_rows``)."""

    def __init__(self, folder: Path, window_s: float, max_rows: int, worker: str) -> None:
        self.folder = folder
        self.window_s = window_s
        self.max_rows = max_rows
        self.worker = worker
        self._rows: list[Row] = []
        self._window_start: float | None = None
        self._lock = threading.Lock()

    def add(self, row: Row) -> bool:
        """Add a row; True when the window is due to be written (full or past its end)."""
        if self._window_start is None:
            self._window_start = row.time
        self._rows.append(row)
        return len(self._rows) >= self.max_rows or row.time - self._window_start >= self.window_s

    def due(self, now: float) -> bool:
        """Whether the open window has ended."""
        return self._window_start is not None and now - self._window_start >= self.window_s

    def take(self) -> tuple[float, list[Row]] | None:
        """Close the open window: its start and rows (None when empty)."""
        if not self._rows or self._window_start is None:
            return None
        rows, start = self._rows, self._window_start
        self._rows, self._window_start = [], None
        return start, rows

    def write(self, start: float, rows: list[Row]) -> Path:
        """Write one closed window atomically; returns the file."""
        when = dt.datetime.fromtimestamp(start, dt.UTC)
        name = f"requests-{when:%Y%m%dT%H%M%S%f}Z-{self.worker}.parquet"
        target = self.folder / f"date={when:%Y-%m-%d}" / name
        with self._lock:  # two windows of one worker never race for a name
            write_parquet(target, rows_table(rows))
        return target

    def flush(self) -> Path | None:
        """Write whatever the open window holds now (at shutdown)."""
        taken = self.take()
        return self.write(*taken) if taken else None


def _column(rows: list[Row], field: str) -> list[Any]:
    return list(map(attrgetter(field), rows))


def _offsets(parts: list[np.ndarray]) -> np.ndarray:
    """List offsets of ``parts``: where each row's values start, and the end."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=offsets[1:])
    return offsets


def _spans(rows: list[Row]) -> list[tuple[int, int, ItemTable]]:
    """Runs of rows decoded with one item table, as (first row, end row, table): a window may
    span a model change, and rows of one table are decoded together."""
    tables = _column(rows, "table")
    ident = np.fromiter(map(id, tables), np.int64, len(tables))
    starts = [0, *(np.flatnonzero(ident[1:] != ident[:-1]) + 1).tolist()]
    ends = [*starts[1:], len(rows)]
    return [(lo, hi, tables[lo]) for lo, hi in zip(starts, ends, strict=True) if hi > lo]


def _decoded(
    parts: list[np.ndarray], spans: list[tuple[int, int, ItemTable]]
) -> dict[str, pa.ListArray]:
    """Item ids, categories and prices of ``parts`` (one index array per row), as list columns.

    Arrow gathers them from each item table's columns (``take``), and every per-row step is a
    pass in C: the window is written in a thread of the serving worker, and a Python loop over
    its rows or items would hold the interpreter, and so the worker's event loop, meanwhile.
    """
    offsets = _offsets(parts)
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    columns: dict[str, list[pa.Array]] = {"ids": [], "categories": [], "prices": []}
    for lo, hi, table in spans:
        idx = pa.array(flat[offsets[lo] : offsets[hi]])
        columns["ids"].append(pa.array(table.ids, pa.string()).take(idx))
        columns["categories"].append(pa.array(table.categories, pa.string()).take(idx))
        columns["prices"].append(pa.array(table.prices, pa.float64()).take(idx))
    kinds = {"ids": pa.string(), "categories": pa.string(), "prices": pa.float64()}
    list_offsets = pa.array(offsets.astype(np.int32))
    return {
        name: pa.ListArray.from_arrays(
            list_offsets,
            chunks[0]
            if len(chunks) == 1
            else pa.concat_arrays(chunks)
            if chunks
            else pa.array([], kinds[name]),
        )
        for name, chunks in columns.items()
    }


def rows_table(rows: list[Row]) -> pa.Table:
    """The Parquet table of ``rows``, its schema marked with the log's layout version."""
    spans = _spans(rows)
    history = _decoded(_column(rows, "history"), spans)
    items = _decoded(_column(rows, "items"), spans)
    times = np.fromiter(map(attrgetter("time"), rows), np.float64, len(rows))
    return pa.table(
        {
            "time": pa.array((times * 1000).astype(np.int64), pa.timestamp("ms", tz="UTC")),
            "user": pa.array(_column(rows, "user"), pa.string()),
            "model_version": pa.array(_column(rows, "version"), pa.string()),
            "arm": pa.array(_column(rows, "arm"), pa.string()),
            "history_items": history["ids"],
            "history_categories": history["categories"],
            "history_prices": history["prices"],
            "items": items["ids"],
            "item_categories": items["categories"],
            "latency_ms": pa.array(_column(rows, "latency_ms"), pa.float64()),
            "fallback": pa.array(_column(rows, "fallback"), pa.bool_()),
            "cache_hit": pa.array(_column(rows, "cache_hit"), pa.bool_()),
            "unknown_items": pa.array(_column(rows, "unknown_items"), pa.int32()),
        },
        metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION},
    )


def worker_name() -> str:
    """This process's name in file names."""
    return f"w{os.getpid()}"
