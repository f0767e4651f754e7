"""The ``synthetic`` source: a folder with ``events.parquet`` and ``catalog.parquet``.

Both are in the canonical schema, as written by ``generate``; columns may come in another order
or with types that cast to the canonical ones (``large_string`` for ``string``).
``load_synthetic`` reads both whole; ``open_synthetic`` reads the catalog and leaves the events
to be read a batch at a time (ingest of a large source in bounded memory).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import InputError
from pipelines.core.io import check_parquet_file, read_parquet, unreadable_parquet
from pipelines.core.params import IngestConfig
from pipelines.core.schema import CATALOG_FILE, CATALOG_SCHEMA, EVENT_SCHEMA, EVENTS_FILE
from pipelines.data.sources.stream import BATCH_ROWS, EventSource

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError)
# Bytes read from the file at a time. Pre-buffered (pyarrow's default), the file's column
# chunks stay allocated as the batches go by and memory grows with the file; read through a
# buffer of this size it stays flat.
_READ_BUFFER = 1 << 20


def _canonical(table: pa.Table, schema: pa.Schema, file: Path) -> pa.Table:
    table = table.select(schema.names)
    if table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except _CAST_ERRORS as exc:
        raise InputError(f"{file} does not match the canonical schema: {exc}") from exc


def load_synthetic(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """A folder with ``events.parquet`` and ``catalog.parquet`` in the canonical schema."""
    tables = []
    for name, what, schema in (
        (EVENTS_FILE, "synthetic events", EVENT_SCHEMA),
        (CATALOG_FILE, "synthetic catalog", CATALOG_SCHEMA),
    ):
        file = path / name
        tables.append(_canonical(read_parquet(file, what, list(schema.names)), schema, file))
    return tables[0], tables[1]


def _unreadable(file: Path, exc: BaseException) -> InputError:
    return unreadable_parquet("synthetic events", file, exc)


def _events_file(file: Path) -> pq.ParquetFile:
    """The events file opened for reading, with the checks and messages of ``read_parquet``."""
    what = "synthetic events"
    check_parquet_file(file, what)
    try:
        parquet = pq.ParquetFile(file, pre_buffer=False, buffer_size=_READ_BUFFER)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(file, exc) from exc
    missing = sorted(set(EVENT_SCHEMA.names) - set(parquet.schema_arrow.names))
    if missing:
        parquet.close()
        raise InputError(f"{what} {file} lacks the columns {missing}")
    return parquet


def open_synthetic(path: Path, cfg: IngestConfig) -> EventSource:
    """The folder's catalog, and its events to be read a batch at a time.

    The files are checked as ``load_synthetic`` checks them (the same messages); a batch whose
    columns do not cast to the canonical types is an ``InputError`` when it is read.
    """
    file = path / EVENTS_FILE
    with _events_file(file) as parquet:
        rows = parquet.metadata.num_rows
    catalog_file = path / CATALOG_FILE
    catalog = _canonical(
        read_parquet(catalog_file, "synthetic catalog", list(CATALOG_SCHEMA.names)),
        CATALOG_SCHEMA,
        catalog_file,
    )

    def read(columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        names = list(EVENT_SCHEMA.names if columns is None else columns)
        schema = pa.schema([EVENT_SCHEMA.field(name) for name in names])
        with _events_file(file) as parquet:
            batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=names)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise _unreadable(file, exc) from exc
                table = _canonical(pa.Table.from_batches([batch]), schema, file)
                yield from table.to_batches()

    return EventSource(catalog=catalog, rows=rows, what=f"synthetic source {path}", read=read)
