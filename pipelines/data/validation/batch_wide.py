"""Whole-batch values computed by DuckDB straight from the Parquet files, in bounded memory.

Uniqueness, distinct counts and events per user depend on the whole batch, not on a partition.
DuckDB streams the files and spills its hash tables to a temporary folder past a memory limit,
so these values are exact without holding the batch in memory. Nothing here judges them:
Great Expectations does (``combine`` and the ``batch_metrics`` suite).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pipelines.core.errors import InputError, first_line
from pipelines.data import out_of_core
from pipelines.data.out_of_core import quoted

# DuckDB's buffer limit; past it, hash tables spill to a temporary folder.
MEMORY_LIMIT = "1GB"


@dataclass(frozen=True)
class Duplicates:
    """Rows of a column whose value occurs more than once in the batch (nulls aside).

    Attributes:
        rows: The batch's rows.
        nulls: Rows where the column is null.
        duplicated: Non-null rows whose value occurs more than once.
        examples: The values of the first duplicated rows, in file order.
        positions: Their row numbers in the file.
    """

    rows: int
    nulls: int
    duplicated: int
    examples: list[Any]
    positions: list[int]


@contextlib.contextmanager
def connect() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with the validation's memory limit and its own spill
    folder."""
    with out_of_core.connect(MEMORY_LIMIT) as con:
        yield con


def _fetch(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], what: str
) -> list[tuple[Any, ...]]:
    """Rows of ``sql``; a file DuckDB cannot read is an ``InputError`` naming ``what``."""
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        reason = first_line(exc)
        raise InputError(f"{what} is not a readable Parquet file (DuckDB: {reason})") from exc


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], what: str) -> tuple[Any, ...]:
    # an aggregate without GROUP BY returns exactly one row
    (row,) = _fetch(con, sql, params, what)
    return tuple(row)


def duplicates(
    con: duckdb.DuckDBPyConnection, path: Path, column: str, examples: int
) -> Duplicates:
    """The rows of ``column`` whose value occurs more than once in the file at ``path``.

    Args:
        con: The DuckDB connection.
        path: The Parquet file.
        column: The column that should be unique.
        examples: How many duplicated rows to return, first in file order.

    Returns:
        Counts and the first duplicated values with their row numbers.

    Raises:
        InputError: DuckDB cannot read the file.
    """
    name = quoted(column)
    events = (
        f"SELECT {name} AS v, file_row_number AS r FROM read_parquet(?, file_row_number = true)"
    )
    repeated = f"SELECT v FROM ({events}) WHERE v IS NOT NULL GROUP BY v HAVING count(*) > 1"
    rows, nulls = _one(
        con,
        f"SELECT count(*), count(*) - count({name}) FROM read_parquet(?)",
        [str(path)],
        f"events file {path}",
    )
    (duplicated,) = _one(
        con,
        f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM read_parquet(?) "
        f"WHERE {name} IS NOT NULL GROUP BY {name} HAVING count(*) > 1)",
        [str(path)],
        f"events file {path}",
    )
    first: list[tuple[Any, ...]] = []
    if duplicated:
        first = _fetch(
            con,
            f"SELECT v, r FROM ({events}) WHERE v IN ({repeated}) ORDER BY r LIMIT ?",
            [str(path), str(path), examples],
            f"events file {path}",
        )
    return Duplicates(
        rows=int(rows),
        nulls=int(nulls),
        duplicated=int(duplicated),
        examples=[value for value, _ in first],
        positions=[int(position) for _, position in first],
    )


def user_counts(con: duckdb.DuckDBPyConnection, path: Path, min_events: int) -> tuple[int, int]:
    """Distinct non-null users of the file and how many have fewer than ``min_events`` events."""
    users, few = _one(
        con,
        "SELECT count(*), count(*) FILTER (WHERE n < ?) FROM "
        "(SELECT count(*) AS n FROM read_parquet(?) WHERE user_id IS NOT NULL GROUP BY user_id)",
        [min_events, str(path)],
        f"events file {path}",
    )
    return int(users), int(few)


def distinct_count(con: duckdb.DuckDBPyConnection, path: Path, column: str) -> int:
    """Distinct non-null values of ``column`` in the file."""
    (count,) = _one(
        con,
        f"SELECT count(DISTINCT {quoted(column)}) FROM read_parquet(?)",
        [str(path)],
        f"events file {path}",
    )
    return int(count)


def unseen_count(
    con: duckdb.DuckDBPyConnection, path: Path, previous: Path, column: str
) -> tuple[int, int]:
    """Distinct non-null values of ``column`` in ``path``, and how many ``previous`` lacks.

    Values are compared as text, so that a column stored with another type in one of the
    files still compares by what it says.
    """
    name = quoted(column)
    distinct = (
        f"SELECT DISTINCT CAST({name} AS VARCHAR) AS v FROM read_parquet(?) "
        f"WHERE {name} IS NOT NULL"
    )
    current, unseen = _one(
        con,
        f"WITH c AS ({distinct}), p AS ({distinct}) "
        "SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM c ANTI JOIN p USING (v))",
        [str(path), str(previous)],
        f"events file {path} or previous events file {previous}",
    )
    return int(current), int(unseen)
