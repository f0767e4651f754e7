"""What a validation reads: the batch a PATH refers to, its catalog, and the previous batch.

PATH is one of:

* a raw batch store (a folder of ``YYYY-MM-DD/`` batch folders): the batch of the run's
  logical date is validated;
* a batch folder holding ``events.parquet`` and ``catalog.parquet`` (and ``manifest.json``);
  a folder named ``YYYY-MM-DD`` is judged against its own date, any other against the logical
  date;
* an events Parquet file, judged against the logical date; its catalog is ``--catalog`` or
  else ``catalog.parquet`` beside it. Without a catalog the stage fails: membership in the
  catalog is part of the suite, and a half-checked batch must not pass.

``--catalog`` also overrides the catalog of a batch folder or store.

The unseen item and user shares compare the batch with the previous one: the latest
earlier-dated batch of the same store that is not in the quarantine folder.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet
from pipelines.core.schema import CATALOG_FILE, EVENTS_FILE

log = logging.getLogger("recflow.validate")

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class BatchInput:
    """The files of the batch to validate.

    Attributes:
        name: Batch name for reports and quarantine: its date, or the file stem.
        date: The date the batch is judged against (its window ends on this day).
        events: The events Parquet file.
        catalog: The catalog Parquet file.
        manifest: The ingest manifest, if the batch has one.
        store: The batch store the batch belongs to, if any (to find the previous batch).
    """

    name: str
    date: dt.date
    events: Path
    catalog: Path
    manifest: Path | None = None
    store: Path | None = None


def _parse_date(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return None


def _dated_batches(store: Path) -> dict[dt.date, Path]:
    batches = {}
    for child in store.iterdir():
        day = _parse_date(child.name) if child.is_dir() else None
        if day is not None and len(child.name) == 10:
            batches[day] = child
    return batches


def resolve_batch(path: Path, logical_date: dt.date, catalog: Path | None = None) -> BatchInput:
    """Find the batch files PATH refers to.

    Args:
        path: A batch store, a batch folder or an events Parquet file.
        logical_date: The run's logical date (selects the batch of a store).
        catalog: Catalog file overriding the batch's own.

    Returns:
        The batch's files.

    Raises:
        InputError: PATH does not exist, or is no batch, or the batch has no catalog.
    """
    if not path.exists():
        raise InputError(f"input not found: {path}")
    store = None
    manifest: Path | None = None
    if path.is_dir() and (path / EVENTS_FILE).exists():
        folder_date = _parse_date(path.name)
        name = path.name
        date = folder_date or logical_date
        store = path.parent if folder_date else None
        events, own_catalog, manifest = (
            path / EVENTS_FILE,
            path / CATALOG_FILE,
            path / MANIFEST_FILE,
        )
    elif path.is_dir():
        batches = _dated_batches(path)
        if not batches:
            raise InputError(
                f"{path} is not a batch: it holds no {EVENTS_FILE} and no YYYY-MM-DD batch folders"
            )
        folder = batches.get(logical_date)
        if folder is None:
            dates = sorted(batches)
            raise InputError(
                f"no batch for the logical date {logical_date} in {path} "
                f"(it holds {len(dates)} batches, {dates[0]} to {dates[-1]})"
            )
        if not (folder / EVENTS_FILE).exists():
            raise InputError(f"batch folder {folder} has no {EVENTS_FILE}")
        name, date, store = folder.name, logical_date, path
        events, own_catalog, manifest = (
            folder / EVENTS_FILE,
            folder / CATALOG_FILE,
            folder / MANIFEST_FILE,
        )
    else:
        name, date = path.stem, logical_date
        events, own_catalog = path, path.with_name(CATALOG_FILE)
    chosen = catalog or own_catalog
    if not chosen.exists():
        hint = "" if catalog else f" (no {CATALOG_FILE} beside the events; pass --catalog)"
        raise InputError(f"catalog not found: {chosen}{hint}")
    return BatchInput(
        name=name,
        date=date,
        events=events,
        catalog=chosen,
        manifest=manifest if manifest is not None and manifest.exists() else None,
        store=store,
    )


def find_previous_batch(store: Path, date: dt.date, quarantine: Path | None) -> Path | None:
    """The latest batch of ``store`` dated before ``date`` that was not quarantined.

    Args:
        store: The batch store.
        date: The date of the batch being validated.
        quarantine: The quarantine folder, whose ``<date>`` folders mark rejected batches.

    Returns:
        The previous batch folder, or ``None`` if there is none.
    """
    for day, folder in sorted(_dated_batches(store).items(), reverse=True):
        if day >= date or not (folder / EVENTS_FILE).exists():
            continue
        if quarantine is not None and (quarantine / folder.name).exists():
            continue
        return folder
    return None


def read_catalog(batch: BatchInput) -> pa.Table:
    """Read the batch's catalog, every column whatever its type (a catalog is small).

    Raises:
        InputError: The file is missing, a folder, empty, or not valid Parquet.
    """
    return read_parquet(batch.catalog, "catalog")


def events_shape(batch: BatchInput) -> tuple[int, pa.Schema]:
    """The row count and schema of the batch's events, read from the file's footer alone.

    Raises:
        InputError: The file is missing, a folder, empty, or not valid Parquet.
    """
    table = read_parquet(batch.events, "events file", [])
    return table.num_rows, pq.read_schema(batch.events)


def previous_events(
    batch: BatchInput, quarantine: Path | None
) -> tuple[Path | None, str | None, str | None]:
    """The events file of the previous batch, to count unseen users and items.

    Args:
        batch: The batch being validated; only a batch of a store has a previous one.
        quarantine: The quarantine folder (rejected batches are never "previous").

    Returns:
        ``(events, name, note)``: the previous batch's events file and name, or ``None`` for
        both when there is none; ``note`` says why an unreadable previous batch was skipped.
    """
    if batch.store is None:
        return None, None, None
    folder = find_previous_batch(batch.store, batch.date, quarantine)
    if folder is None:
        return None, None, None
    path = folder / EVENTS_FILE
    try:
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"previous events file {path} is not readable: {exc}") from exc
        keep = [c for c in ("user_id", "item_id") if c in names]
        # read once through pyarrow so that a damaged file is a note, not a failure later
        for _ in pq.ParquetFile(path).iter_batches(columns=keep):
            pass
        return path, folder.name, None
    except (InputError, pa.ArrowException, OSError) as exc:
        log.warning("previous batch skipped: %s", exc)
        return None, None, f"previous batch {folder.name} unreadable, skipped: {exc}"
