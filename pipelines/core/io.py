"""Transactional file output: write to a temporary name beside the target, then rename.

A stage that fails half-way leaves no partial output behind, and readers never see a
half-written file or folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import InputError, first_line


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; published outputs are world-readable like any other file
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield a temporary folder that replaces the folder ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(target: Path | str, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: Path | str, payload: Any) -> None:
    """Write ``payload`` as stable, sorted, indented JSON atomically."""
    write_text(target, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


# Rows per Parquet row group: pyarrow's default, named so that a file written in pieces
# (write_parquet_stream) has the same row groups, and so the same bytes, as one written whole.
ROW_GROUP_ROWS = 1024 * 1024
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "write_statistics": True,
    "store_schema": True,
}


def write_parquet(target: Path | str, table: pa.Table) -> None:
    """Write ``table`` to ``target`` atomically, with settings that give the same bytes on rerun."""
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, **_PARQUET_OPTIONS)


def write_parquet_stream(
    target: Path | str, schema: pa.Schema, tables: Iterable[pa.Table | pa.RecordBatch]
) -> int:
    """Write the rows of ``tables``, in order, to ``target`` atomically, holding at most about
    one row group (:data:`ROW_GROUP_ROWS` rows) besides the piece being read.

    The file has the same bytes as :func:`write_parquet` of all the rows concatenated, however
    the rows arrive in pieces: the rows are regrouped into whole row groups of one chunk each.

    Args:
        target: The file.
        schema: Schema of every piece (and of the file, even with no rows).
        tables: The pieces, tables or record batches, in row order.

    Returns:
        The number of rows written.

    Raises:
        ValueError: A piece's schema differs from ``schema``.
    """
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, **_PARQUET_OPTIONS) as writer:
        pending: list[pa.Table] = []
        held = 0
        for piece in tables:
            table = pa.Table.from_batches([piece]) if isinstance(piece, pa.RecordBatch) else piece
            if not table.schema.equals(schema):
                raise ValueError(f"a piece's schema {table.schema} differs from {schema}")
            pending.append(table)
            held += table.num_rows
            while held >= ROW_GROUP_ROWS:
                whole = pa.concat_tables(pending)
                group = whole.slice(0, ROW_GROUP_ROWS).combine_chunks()
                writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
                rows += group.num_rows
                rest = whole.slice(ROW_GROUP_ROWS)
                pending, held = [rest], rest.num_rows
        if held or rows == 0:
            whole = pa.concat_tables(pending) if pending else schema.empty_table()
            writer.write_table(whole.combine_chunks(), row_group_size=ROW_GROUP_ROWS)
            rows += whole.num_rows
    return rows


def read_parquet(
    path: Path,
    what: str,
    columns: list[str] | None = None,
    *,
    require: Sequence[str] = (),
    hint: str = "",
) -> pa.Table:
    """Read a Parquet file, turning every way it can be unreadable into a clear ``InputError``.

    Args:
        path: The file.
        what: What the file is, for the message ("events file", "catalog").
        columns: Columns to read (all if ``None``); a missing one is an error naming it.
        require: Columns that must be present (all columns are still read).
        hint: Appended to a "not found" message, e.g. "(run the prepare stage first)".

    Returns:
        The table.

    Raises:
        InputError: The file is missing, a folder, empty, not valid Parquet, or lacks a column.
    """
    check_parquet_file(path, what, hint)
    try:
        schema = pq.read_schema(path)
        missing = sorted((set(columns or ()) | set(require)) - set(schema.names))
        if missing:
            raise InputError(f"{what} {path} lacks the columns {missing}")
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable_parquet(what, path, exc) from exc


def check_parquet_file(path: Path, what: str, hint: str = "") -> None:
    """Refuse a Parquet path that is missing, a folder or empty, naming it as ``what`` (``hint``
    follows a "not found" message): the checks before a Parquet file is opened."""
    if not path.exists():
        raise InputError(f"{what} not found: {path}" + (f" {hint}" if hint else ""))
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes), not a Parquet file")


def unreadable_parquet(what: str, path: Path, exc: BaseException) -> InputError:
    """The error for a file that cannot be read as Parquet, naming it and the reader's reason."""
    return InputError(f"{what} {path} is not a readable Parquet file: {first_line(exc)}")


def sha256_file(path: Path | str) -> str:
    """Return the hex sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
