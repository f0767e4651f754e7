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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import ImmutableDataError
from pipelines.core.io import atomic_dir, sha256_file, write_json, write_parquet
from pipelines.core.params import IngestConfig, RunConfig
from pipelines.core.schema import CATALOG_FILE, EVENTS_FILE
from pipelines.data.batch_window import batch_window
from pipelines.data.sources.loaders import load_source

log = logging.getLogger("recflow.ingest")

MANIFEST_FILE = "manifest.json"
DATA_FILES = (EVENTS_FILE, CATALOG_FILE)


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


def _align(events: pa.Table, logical_date: dt.date) -> tuple[pa.Table, int]:
    """Shift timestamps by whole days so the newest event falls on ``logical_date``.

    Whole days keep the hour-of-day and (in multiples of 7) weekday patterns of the source.
    """
    if events.num_rows == 0:
        return events, 0
    newest = pc.max(events.column("timestamp")).as_py()
    shift = (logical_date - newest.date()).days
    if shift:
        index = events.schema.get_field_index("timestamp")
        moved = pc.add(
            events.column("timestamp"), pa.scalar(dt.timedelta(days=shift), pa.duration("us"))
        )
        events = events.set_column(index, events.schema.field(index), moved)
    return events, shift


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
    events, catalog = load_source(cfg.source, source, cfg)
    shift = 0
    if cfg.align_to_logical_date:
        events, shift = _align(events, logical_date)
        log.info("shifted timestamps by %d days so the newest event is on %s", shift, logical_date)

    window = batch_window(logical_date, cfg.window_days)
    start, end = window.start, window.end
    timestamps = events.column("timestamp")
    in_window = pc.and_(
        pc.greater_equal(timestamps, pa.scalar(start, pa.timestamp("us", tz="UTC"))),
        pc.less(timestamps, pa.scalar(end, pa.timestamp("us", tz="UTC"))),
    )
    events = events.filter(in_window)
    events = events.take(
        pc.sort_indices(events, [("timestamp", "ascending"), ("event_id", "ascending")])
    )
    catalog = catalog.take(pc.sort_indices(catalog, [("item_id", "ascending")]))
    events, catalog = _canonical_layout(events), _canonical_layout(catalog)
    rows = events.num_rows
    users = pc.count_distinct(events.column("user_id")).as_py()
    items = pc.count_distinct(events.column("item_id")).as_py()
    if rows == 0:
        log.warning(
            "no events of %s fall in the window [%s, %s); writing an empty batch for %s",
            source,
            start.isoformat(),
            end.isoformat(),
            logical_date,
        )
    log.info("batch %s: %d events, %d users, %d items", logical_date, rows, users, items)

    manifest: dict[str, Any] = {
        "logical_date": logical_date.isoformat(),
        "window": {"start": start.isoformat(), "end": end.isoformat(), "days": cfg.window_days},
        "source": cfg.source,
        "time_shift_days": shift,
        "rows": rows,
        "users": users,
        "items": items,
        "catalog_items": catalog.num_rows,
    }
    try:
        with atomic_dir(batch) as tmp:
            write_parquet(tmp / EVENTS_FILE, events)
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
