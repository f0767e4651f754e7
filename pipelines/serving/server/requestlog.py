"""The request log for monitoring: one Parquet file per time window and worker.

Each answered request adds a row (time, pseudonymized user, model version, arm, the history's
known items with their categories and prices, the returned items with their categories,
latency, fallback, cache hit, unknown items). Rows are kept as item *indices* with a reference
to the version's item table and turned into ids and categories when a window is written, in
one vectorized pass. A window is written atomically (temporary name, then rename) as
``<dir>/date=YYYY-MM-DD/requests-<window start>-<worker>.parquet``, so a reader never sees a
partial file.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.core.io import write_parquet
from pipelines.serving.items import ItemTable

log = logging.getLogger("recflow.serve")


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


def _lists(values: list[np.ndarray], flat: np.ndarray, kind: pa.DataType) -> pa.ListArray:
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, kind))


def _decode(rows: list[Row], field: str) -> dict[str, np.ndarray]:
    """Item ids, categories and prices of ``field`` over all rows, in row order."""
    parts = [getattr(r, field) for r in rows]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    ids = np.empty(len(flat), dtype=object)
    categories = np.empty(len(flat), dtype=object)
    prices = np.full(len(flat), np.nan)
    start = 0
    # rows of one table are decoded together (a window may span a model change)
    spans: list[tuple[int, int, ItemTable]] = []
    for row, part in zip(rows, parts, strict=True):
        if spans and spans[-1][2] is row.table:
            spans[-1] = (spans[-1][0], start + len(part), row.table)
        else:
            spans.append((start, start + len(part), row.table))
        start += len(part)
    for lo, hi, table in spans:
        idx = flat[lo:hi]
        ids[lo:hi] = table.ids[idx]
        categories[lo:hi] = table.categories[idx]
        prices[lo:hi] = table.prices[idx]
    return {"ids": ids, "categories": categories, "prices": prices}


def rows_table(rows: list[Row]) -> pa.Table:
    """The Parquet table of ``rows``."""
    history = _decode(rows, "history")
    items = _decode(rows, "items")
    hist_parts = [r.history for r in rows]
    item_parts = [r.items for r in rows]
    return pa.table(
        {
            "time": pa.array([int(r.time * 1000) for r in rows], pa.timestamp("ms", tz="UTC")),
            "user": pa.array([r.user for r in rows], pa.string()),
            "model_version": pa.array([r.version for r in rows], pa.string()),
            "arm": pa.array([r.arm for r in rows], pa.string()),
            "history_items": _lists(hist_parts, history["ids"], pa.string()),
            "history_categories": _lists(hist_parts, history["categories"], pa.string()),
            "history_prices": _lists(hist_parts, history["prices"], pa.float64()),
            "items": _lists(item_parts, items["ids"], pa.string()),
            "item_categories": _lists(item_parts, items["categories"], pa.string()),
            "latency_ms": pa.array([r.latency_ms for r in rows], pa.float64()),
            "fallback": pa.array([r.fallback for r in rows], pa.bool_()),
            "cache_hit": pa.array([r.cache_hit for r in rows], pa.bool_()),
            "unknown_items": pa.array([r.unknown_items for r in rows], pa.int32()),
        }
    )


def worker_name() -> str:
    """This process's name in file names."""
    return f"w{os.getpid()}"
