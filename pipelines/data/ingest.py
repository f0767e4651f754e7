"""The ``ingest`` stage's work: cut the run's window out of a source into an immutable raw batch.

The batch for logical date D holds the events in
``[D - window_days + 1 at 00:00 UTC, D + 1 at 00:00 UTC)`` and lands in ``<out>/<D>/``:
``events.parquet`` (sorted by timestamp, then event_id), ``catalog.parquet`` (sorted by
item_id) and ``manifest.json`` (window, source kind, counts, sha256 of each file).

Raw batches are immutable: ingesting a date again with the same content does nothing, and
with different content fails without touching the stored batch. Other dates' folders are
never touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import ImmutableDataError
from pipelines.core.io import (
    atomic_dir,
    sha256_file,
    write_json,
    write_parquet,
    write_parquet_stream,
)
from pipelines.core.logs import Tenths
from pipelines.core.params import IngestConfig, RunConfig
from pipelines.core.schema import CATALOG_FILE, EVENT_SCHEMA, EVENTS_FILE
from pipelines.data.batch_window import BatchWindow, batch_window
from pipelines.data.sources.loaders import open_source
from pipelines.data.sources.sorting import sort_events
from pipelines.data.sources.stream import EventSource

log = logging.getLogger("recflow.ingest")

MANIFEST_FILE = "manifest.json"
DATA_FILES = (EVENTS_FILE, CATALOG_FILE)
_ORDER = [("timestamp", "ascending"), ("event_id", "ascending")]
# Distinct values waiting to be merged into those seen before, at least (see _Distinct).
_MERGE_ROWS = 1 << 20


@dataclass(frozen=True)
class IngestResult:
    """What ``ingest`` did.

    Attributes:
        batch: The batch folder, ``<raw_root>/<logical date>``.
        rows: Events in the batch.
        users: Distinct users in the batch.
        items: Distinct items in the batch's events.
        written: False when an identical batch was already there and nothing was written.
    """

    batch: Path
    rows: int
    users: int
    items: int
    written: bool


class _AlreadyIngested(Exception):
    """Raised inside the atomic write to drop the new copy of an unchanged batch."""


def _alignment_shift(source: EventSource, logical_date: dt.date) -> int:
    """Whole days to shift timestamps by so that the newest event falls on ``logical_date``.

    Whole days keep the hour-of-day and (in multiples of 7) weekday patterns of the source.
    """
    newest: dt.datetime | None = None
    for batch in source.batches(["timestamp"]):
        value = pc.max(batch.column(0)).as_py()
        if value is not None and (newest is None or value > newest):
            newest = value
    return 0 if newest is None else (logical_date - newest.date()).days


def _shifted(events: pa.Table, shift: int) -> pa.Table:
    if not shift:
        return events
    index = events.schema.get_field_index("timestamp")
    moved = pc.add(
        events.column("timestamp"), pa.scalar(dt.timedelta(days=shift), pa.duration("us"))
    )
    return events.set_column(index, events.schema.field(index), moved)


def _in_window(events: pa.Table, window: BatchWindow) -> pa.Table:
    timestamps = events.column("timestamp")
    inside = pc.and_(
        pc.greater_equal(timestamps, pa.scalar(window.start, pa.timestamp("us", tz="UTC"))),
        pc.less(timestamps, pa.scalar(window.end, pa.timestamp("us", tz="UTC"))),
    )
    return events.filter(inside)


def _stored_hashes(batch: Path) -> dict[str, str | None]:
    return {
        name: sha256_file(batch / name) if (batch / name).is_file() else None for name in DATA_FILES
    }


def _canonical_layout(table: pa.Table) -> pa.Table:
    # Parquet page boundaries can follow in-memory chunk boundaries; one chunk per column
    # makes the written bytes depend on the content only.
    try:
        return table.combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        return table


class _Distinct:
    """The distinct non-null values of a column seen so far, held as one array of them."""

    def __init__(self) -> None:
        self._seen = pa.array([], pa.large_string())
        self._pending: list[pa.Array] = []
        self._pending_rows = 0

    def add(self, values: pa.ChunkedArray) -> None:
        unique = pc.unique(values.cast(pa.large_string()))
        self._pending.append(unique)
        self._pending_rows += len(unique)
        # merging once the new values outnumber the old keeps the work linear overall
        if self._pending_rows > max(len(self._seen), _MERGE_ROWS):
            self._merge()

    def _merge(self) -> None:
        if self._pending:
            self._seen = pc.unique(pa.concat_arrays([self._seen, *self._pending]))
            self._pending, self._pending_rows = [], 0

    def count(self) -> int:
        self._merge()
        return int(pc.count_distinct(self._seen).as_py())


class _Counts:
    """Rows, distinct users and distinct items of the events written, counted as they pass."""

    def __init__(self) -> None:
        self.rows = 0
        self._users, self._items = _Distinct(), _Distinct()

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        self._users.add(table.column("user_id"))
        self._items.add(table.column("item_id"))

    def counted(self, tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
        for table in tables:
            self.add(table)
            yield table

    def users(self) -> int:
        return self._users.count()

    def items(self) -> int:
        return self._items.count()


class _OutOfOrder(Exception):
    """Raised when a streamed source turns out not to be in (timestamp, event_id) order."""


def _in_order(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The tables, checked to be in (timestamp, event_id) order as they pass.

    Raises:
        _OutOfOrder: A row comes before the one preceding it, or an event_id is null (nulls
            sort last, so only a sort puts them right).
    """
    last: tuple[int, str] | None = None
    for table in tables:
        if table.num_rows == 0:
            yield table
            continue
        ids = table.column("event_id")
        if ids.null_count:
            raise _OutOfOrder
        ids = ids.combine_chunks()
        stamps = table.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
        if last is not None and (int(stamps[0]), ids[0].as_py()) < last:
            raise _OutOfOrder
        if (stamps[1:] < stamps[:-1]).any():
            raise _OutOfOrder
        tied = np.flatnonzero(stamps[1:] == stamps[:-1])
        if len(tied) and pc.any(pc.less(ids.take(tied + 1), ids.take(tied))).as_py():
            raise _OutOfOrder
        last = (int(stamps[-1]), ids[-1].as_py())
        yield table


class _Progress:
    """Logs how much of a streamed source is read, every tenth of it, once the reading has
    run long enough to be worth watching (``Tenths``)."""

    def __init__(self, source: EventSource) -> None:
        self.source, self.rows = source, 0
        self._tenths = Tenths(source.rows)

    def read(self, rows: int) -> None:
        self.rows += rows
        took = self._tenths.due(self.rows)
        if took is not None:
            log.info(
                "read %d of %d events of %s, %.0f s",
                self.rows,
                self.source.rows,
                self.source.what,
                took,
            )


def _write_events(
    target: Path, source: EventSource, shift: int, window: BatchWindow, scratch: Path
) -> _Counts:
    """Write the source's events of ``window``, shifted by ``shift`` days, in (timestamp,
    event_id) order to ``target``, and count them.

    A source held in memory is sorted there. A source read from disk is written as it streams
    when it is already in order (as ``generate`` writes it), else sorted out of core by DuckDB;
    either way the bytes are those of the in-memory sort.
    """
    counts = _Counts()
    if source.table is not None:
        events = _in_window(_shifted(source.table, shift), window)
        events = _canonical_layout(events.take(pc.sort_indices(events, _ORDER)))
        counts.add(events)
        write_parquet(target, events)
        return counts

    def windowed() -> Iterator[pa.Table]:
        progress = _Progress(source)
        for batch in source.batches():
            progress.read(batch.num_rows)
            yield _in_window(_shifted(pa.Table.from_batches([batch]), shift), window)

    try:
        write_parquet_stream(target, EVENT_SCHEMA, counts.counted(_in_order(windowed())))
        return counts
    except _OutOfOrder:
        log.info("%s is not in (timestamp, event_id) order: sorting it out of core", source.what)
    counts = _Counts()
    write_parquet_stream(target, EVENT_SCHEMA, counts.counted(sort_events(windowed(), scratch)))
    return counts


def ingest(cfg: IngestConfig, run: RunConfig, source: Path, raw_root: Path) -> IngestResult:
    """Write the batch of the run's logical date from ``source`` into ``raw_root``.

    Args:
        cfg: Source kind and mapping, window length, alignment.
        run: The run (its logical date names and bounds the batch).
        source: File or folder the source is read from.
        raw_root: Folder holding one batch folder per logical date.

    Returns:
        Where the batch is, its counts, and whether anything was written.

    Raises:
        InputError: The source cannot be read (see ``pipelines.data.sources.loaders``).
        ImmutableDataError: A batch for this date exists with different content.
    """
    logical_date = run.logical_date
    batch = raw_root / logical_date.isoformat()
    events = open_source(cfg.source, source, cfg)
    catalog = events.catalog
    catalog = _canonical_layout(catalog.take(pc.sort_indices(catalog, [("item_id", "ascending")])))
    shift = 0
    if cfg.align_to_logical_date:
        shift = _alignment_shift(events, logical_date)
        log.info("shifted timestamps by %d days so the newest event is on %s", shift, logical_date)
    window = batch_window(logical_date, cfg.window_days)
    manifest: dict[str, Any] = {
        "logical_date": logical_date.isoformat(),
        "window": {
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "days": cfg.window_days,
        },
        "source": cfg.source,
        "time_shift_days": shift,
    }
    try:
        with atomic_dir(batch) as tmp:
            counts = _write_events(tmp / EVENTS_FILE, events, shift, window, tmp)
            rows, users, items = counts.rows, counts.users(), counts.items()
            _log_counts(logical_date, rows, users, items, source, window)
            manifest.update(rows=rows, users=users, items=items, catalog_items=catalog.num_rows)
            write_parquet(tmp / CATALOG_FILE, catalog)
            hashes = {name: sha256_file(tmp / name) for name in DATA_FILES}
            if batch.exists():
                if batch.is_dir() and _stored_hashes(batch) == hashes:
                    raise _AlreadyIngested
                raise ImmutableDataError(
                    f"raw batch {batch} for {logical_date} already exists with different "
                    "content; raw batches are never overwritten (move that folder away to "
                    "ingest this date again)"
                )
            manifest["files"] = {
                name: {"sha256": hashes[name], "bytes": (tmp / name).stat().st_size}
                for name in DATA_FILES
            }
            write_json(tmp / MANIFEST_FILE, manifest)
    except _AlreadyIngested:
        log.info("batch %s already ingested, unchanged: %s", logical_date, batch)
        return IngestResult(batch=batch, rows=rows, users=users, items=items, written=False)
    log.info("wrote %s", batch)
    return IngestResult(batch=batch, rows=rows, users=users, items=items, written=True)


def _log_counts(
    logical_date: dt.date, rows: int, users: int, items: int, source: Path, window: BatchWindow
) -> None:
    if rows == 0:
        log.warning(
            "no events of %s fall in the window [%s, %s); writing an empty batch for %s",
            source,
            window.start.isoformat(),
            window.end.isoformat(),
            logical_date,
        )
    log.info("batch %s: %d events, %d users, %d items", logical_date, rows, users, items)
