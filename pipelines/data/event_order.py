"""The accepted batch in the tie-rule order, out of core: DuckDB over the Parquet file.

The events of the configured types are sorted by ``user_id``, whole epoch second, funnel step,
``event_id`` (the order of ``pipelines.data.preparation.ordered_events``, see
``pipelines.data.sequences`` for the tie rule) and handed out in Arrow batches. DuckDB sorts
within a memory limit and spills the rest to a work folder, so the batch never has to fit in
memory; the counts the reference statistics need are aggregated by the same engine.

Strings compare byte by byte in DuckDB, which for UTF-8 is the code point order Python and
pandas sort by, so both orders agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError, first_line
from pipelines.data.out_of_core import connect, literal
from pipelines.data.sequences import EVENT_CODES

# DuckDB's working memory; its sorts spill to the work folder beyond it
MEMORY_LIMIT = "1GB"

# whole epoch seconds rounded down (DuckDB's ``//`` rounds towards zero), whatever the unit
_SECONDS = (
    "(epoch_ns(timestamp) - ((epoch_ns(timestamp) % 1000000000) + 1000000000) % 1000000000)"
    " // 1000000000"
)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except duckdb.Error as exc:
        reason = first_line(exc)
        raise InputError(f"validated events {path} could not be read: {reason}") from exc


@dataclass(frozen=True)
class Counts:
    """Events per value (the index) of ``item_id`` (by ``item_id``), category and event type."""

    items: pd.Series
    categories: pd.Series
    event_types: pd.Series


class OrderedBatch:
    """The events of the configured types in one Parquet file, read through DuckDB.

    Use :func:`open_batch`; every method reads the file again (DuckDB reads only the columns
    a query names).
    """

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: Path) -> None:
        self._con = connection
        self._path = path
        self._has_sessions = False

    def _table(self, query: str) -> pa.Table:
        # a relation (``sql``) hands Arrow out without the extra copy of a DB-API result
        with _reading(self._path):
            return self._con.sql(query).to_arrow_table()

    def counts(self) -> Counts:
        """Events per item, category and event type, in one read of the file."""
        table = self._table(
            """
            SELECT item_id, category, event_type, count(*) AS n,
                   grouping(item_id, category, event_type) AS grouped
            FROM events
            GROUP BY GROUPING SETS ((item_id), (category), (event_type))
            ORDER BY grouped, item_id, category, event_type
            """
        )
        grouped = table["grouped"].to_numpy()
        n = table["n"].to_numpy()

        def by(column: str, mask: int) -> pd.Series:
            rows = np.flatnonzero(grouped == mask)
            values = table[column].take(pa.array(rows)).to_numpy(zero_copy_only=False)
            return pd.Series(n[rows], index=pd.Index(values, name=column))

        # ``grouping`` sets a bit per column left out of the grouping set
        return Counts(
            items=by("item_id", 0b011),
            categories=by("category", 0b101),
            event_types=by("event_type", 0b110),
        )

    def ordered(self, batch_rows: int) -> pa.RecordBatchReader:
        """The events in the tie-rule order, in batches of ``batch_rows``.

        Columns: ``user_id``, ``item_id``, ``ts`` (epoch seconds), ``event_code``, ``price``
        and ``row`` (the event's row in the file, for :meth:`sample_details`).
        """
        with _reading(self._path):
            return self._con.sql(
                "SELECT user_id, item_id, ts, event_code, price, file_row_number AS row "
                "FROM events ORDER BY user_id, ts, event_code, event_id"
            ).to_arrow_reader(batch_rows)

    def user_ranges(self, chunk_events: int) -> Iterator[pa.Table]:
        """The events in the tie-rule order as tables of whole users, in order: at least
        ``chunk_events`` rows each but the last (a user's events are never split), one chunk
        per column. Columns as :meth:`ordered`."""
        pending: list[pa.Table] = []
        held = 0
        with _reading(self._path):
            for batch in self.ordered(chunk_events):
                pending.append(pa.Table.from_batches([batch]))
                held += batch.num_rows
                if held < chunk_events:
                    continue
                table = pa.concat_tables(pending).combine_chunks()
                starts = np.flatnonzero(user_starts(table["user_id"].chunk(0)))
                cut = int(starts[-1])
                if cut == 0:  # one user so far: keep reading
                    pending, held = [table], table.num_rows
                    continue
                yield table.slice(0, cut)
                rest = table.slice(cut)
                pending, held = [rest], rest.num_rows
        if held:
            yield pa.concat_tables(pending).combine_chunks()

    def session_sizes(self) -> np.ndarray:
        """Events per session, in no particular order."""
        self._sessions()
        table = self._table("SELECT n FROM sessions")
        return np.asarray(table["n"].to_numpy(), dtype=np.int64)

    def _sessions(self) -> None:
        # events per session, once, for the statistics and the sample
        if not self._has_sessions:
            with _reading(self._path):
                self._con.execute(
                    "CREATE TEMP TABLE sessions AS "
                    "SELECT session_id, count(*) AS n FROM events GROUP BY session_id"
                )
            self._has_sessions = True

    def sample_details(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Category and session length (events of the session) of the events at file ``rows``.

        Returns:
            Two arrays aligned with ``rows``: the categories (objects) and the session lengths.
        """
        self._sessions()
        self._con.register("picked_rows", pa.table({"row": np.asarray(rows, dtype=np.int64)}))
        try:
            table = self._table(
                """
                SELECT picked.row, picked.category, sessions.n FROM (
                    SELECT file_row_number AS row, session_id, category FROM events
                    WHERE file_row_number IN (SELECT row FROM picked_rows)
                ) AS picked JOIN sessions USING (session_id)
                ORDER BY picked.row
                """
            )
        finally:
            self._con.unregister("picked_rows")
        at = np.searchsorted(table["row"].to_numpy(), rows)
        categories = table["category"].to_numpy(zero_copy_only=False)
        return categories[at], table["n"].to_numpy()[at]


def user_starts(users: pa.Array) -> np.ndarray:
    """Mask of the rows of ``users`` (grouped) that start a user."""
    starts = np.ones(len(users), dtype=bool)
    if len(users) > 1:
        changed = pc.not_equal(users.slice(1), users.slice(0, len(users) - 1))
        starts[1:] = changed.to_numpy(zero_copy_only=False)
    return starts


@contextlib.contextmanager
def open_batch(path: Path, event_types: Sequence[str], work: Path) -> Iterator[OrderedBatch]:
    """Open the events file ``path`` for the events of ``event_types``, spilling to ``work``.

    Args:
        path: The accepted events (``events.parquet``), its columns already checked.
        event_types: The event types to keep.
        work: An empty folder for DuckDB's spill files, removed by the caller.
    """
    with connect(MEMORY_LIMIT, work) as connection:
        codes = " ".join(
            f"WHEN {literal(kind)} THEN {code}"
            for kind, code in EVENT_CODES.items()
            if kind in event_types
        )
        kinds = ", ".join(literal(kind) for kind in event_types)
        with _reading(path):
            connection.execute(
                f"""
                CREATE TEMP VIEW events AS
                SELECT event_id, user_id, item_id, session_id, event_type, price, category,
                       file_row_number, {_SECONDS} AS ts,
                       (CASE event_type {codes} END)::TINYINT AS event_code
                FROM read_parquet({literal(str(path))}, file_row_number = true)
                WHERE event_type IN ({kinds})
                """
            )
        yield OrderedBatch(connection, path)
