"""A source's events read a record batch at a time: ``EventSource``.

A large source (the ``synthetic`` folder, written by ``generate``) is read from its Parquet
file a batch at a time, so ingest never holds it whole; the small real data sets are loaded in
memory by their loaders and read from there. Either way the batches come in the source's row
order and match ``EVENT_SCHEMA``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

# Rows per batch read from a Parquet source: big enough for few Python steps, small enough
# to keep the batch in flight a small part of the memory.
BATCH_ROWS = 1 << 18

Reader = Callable[[Sequence[str] | None], Iterator[pa.RecordBatch]]


@dataclass(frozen=True)
class EventSource:
    """A source's events, read in batches, and its catalog.

    Attributes:
        catalog: The catalog, matching ``CATALOG_SCHEMA`` (small: held in memory).
        rows: Number of events in the source.
        what: The source's kind and path, for messages.
        read: Reads the events' batches, of the given columns or all of ``EVENT_SCHEMA``,
            in the source's row order; each call starts from the first row.
        table: All the events, when the source is held in memory (None when read from disk).
    """

    catalog: pa.Table
    rows: int
    what: str
    read: Reader
    table: pa.Table | None = None

    def batches(self, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The events' record batches, in the source's row order."""
        return self.read(columns)


def in_memory(events: pa.Table, catalog: pa.Table, what: str) -> EventSource:
    """A source whose events a loader has already read into ``events``."""

    def read(columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        table = events if columns is None else events.select(list(columns))
        yield from table.to_batches(max_chunksize=BATCH_ROWS)

    return EventSource(catalog=catalog, rows=events.num_rows, what=what, read=read, table=events)
