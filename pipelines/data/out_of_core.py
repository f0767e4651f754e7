"""DuckDB, the data stages' out-of-core engine: a connection that stays within a memory limit
and spills to a temporary folder of its own, and the quoting its SQL text needs."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb


@contextlib.contextmanager
def connect(memory_limit: str, scratch: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection that keeps to ``memory_limit`` (``"512MB"``, ``"1GB"``)
    and spills past it into a temporary folder inside ``scratch`` (the system's temporary folder
    when None), removed with the connection."""
    with tempfile.TemporaryDirectory(prefix=".recflow-duckdb-", dir=scratch) as spill:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": spill})
        try:
            con.execute("SET enable_progress_bar = false")
            yield con
        finally:
            con.close()


def quoted(name: str) -> str:
    """``name`` as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
