"""A source's events in (timestamp, event_id) order, sorted out of core by DuckDB.

For a source too large to sort in memory: DuckDB reads the batches, spills its sort to a
temporary folder past a memory limit, and hands the rows back a batch at a time. Rows with the
same timestamp and event_id keep their order in the source (a row number breaks the tie), so
the result is the one a stable in-memory sort gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from pipelines.core.schema import EVENT_SCHEMA
from pipelines.data.out_of_core import connect, quoted
from pipelines.data.sources.stream import BATCH_ROWS

# DuckDB's buffer limit; past it, the sort spills to a temporary folder.
MEMORY_LIMIT = "512MB"
_ROW = "source_row"
_NUMBERED = EVENT_SCHEMA.append(pa.field(_ROW, pa.int64(), nullable=False))


def _numbered(tables: Iterable[pa.Table], failed: list[Exception]) -> Iterator[pa.RecordBatch]:
    """The rows with their position; an error reading them is kept in ``failed``, since DuckDB
    reports an error of the stream it reads as its own."""
    row = 0
    try:
        for table in tables:
            for batch in table.to_batches():
                numbers = pa.array(np.arange(row, row + batch.num_rows, dtype=np.int64))
                yield pa.RecordBatch.from_arrays([*batch.columns, numbers], schema=_NUMBERED)
                row += batch.num_rows
    except Exception as exc:
        failed.append(exc)
        raise


def sort_events(tables: Iterable[pa.Table], scratch: Path | None = None) -> Iterator[pa.Table]:
    """The rows of ``tables`` (matching ``EVENT_SCHEMA``) by timestamp, then event_id.

    Nulls come last in each key, and ties keep the input order, as with
    ``pyarrow.compute.sort_indices``.

    Args:
        tables: The events, in the source's order.
        scratch: Folder for DuckDB's spill files (a temporary folder inside it, removed after).

    Yields:
        The sorted rows, about ``BATCH_ROWS`` at a time, matching ``EVENT_SCHEMA``.
    """
    failed: list[Exception] = []
    reader = pa.RecordBatchReader.from_batches(_NUMBERED, _numbered(tables, failed))
    columns = ", ".join(quoted(name) for name in EVENT_SCHEMA.names)
    order = ", ".join(f"{quoted(name)} ASC NULLS LAST" for name in ("timestamp", "event_id", _ROW))
    with connect(MEMORY_LIMIT, scratch) as con:
        try:
            con.register("source_events", reader)
            result = con.sql(f"SELECT {columns} FROM source_events ORDER BY {order}")
            for batch in result.to_arrow_reader(BATCH_ROWS):
                yield pa.Table.from_batches([batch]).cast(EVENT_SCHEMA)
        except duckdb.Error:
            if failed:
                raise failed[0] from None
            raise
