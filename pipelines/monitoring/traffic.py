"""Served traffic over a window: the request log of one cloud, read as one table of requests.

The serving workers write the log as ``<folder>/date=YYYY-MM-DD/requests-*.parquet``
(:mod:`pipelines.serving.server.requestlog`), one file per worker and log window. A monitor
window ``[since, until)`` reads the date folders it covers, and of their files the row groups
whose time statistics reach into the window, and keeps the rows with ``since <= time < until``.

A log that a monitor reads is never trusted to be whole: a file that is empty, truncated, not
Parquet, of another layout version (the ``recflow.request_log`` key of its schema metadata) or
without the request columns is skipped, and each skipped file is named with its reason; the
window is read from the others. A file without the version key (written before the log had
one) is read when its columns are the request columns.

Rows come out in a fixed order, so that the same files always give the same table (and a
seeded sample of it the same rows): file by file in name order (the date, the log window's
start, the worker), each file's rows as they were logged, which is time order within a file.
The rows are not sorted by time across files: two workers' files overlap in time, and a sort
would copy every list column of the window (seconds per million rows) for an order no reader
of the window needs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.errors import InputError, first_line
from pipelines.monitoring.requests import REQUEST_COLUMNS, REQUEST_SCHEMA
from pipelines.serving.server.requestlog import SCHEMA_VERSION, SCHEMA_VERSION_KEY

LOG_FILES = "requests-*.parquet"


@dataclass(frozen=True)
class Skipped:
    """A request-log file left out of a window, and why (the reason starts with the file's
    date folder and name)."""

    path: Path
    reason: str

    def to_json(self) -> dict[str, str]:
        """``{"path", "reason"}``."""
        return {"path": str(self.path), "reason": self.reason}


@dataclass(frozen=True)
class TrafficRead:
    """What reading a window of the request log gave.

    Attributes:
        table: The window's requests (:data:`REQUEST_SCHEMA`), by file (name order), then row.
        files: Log files read in the window's date folders (whether or not they held rows in
            the window); skipped files are not counted.
        skipped: The files left out, each with its reason.
        rows_read: Rows the files read hold, inside the window and out of it.
    """

    table: pa.Table
    files: int
    skipped: tuple[Skipped, ...]
    rows_read: int


class _Unreadable(Exception):
    """A log file that is left out; the message is the reason."""


def _utc(moment: dt.datetime, name: str) -> dt.datetime:
    if moment.tzinfo is None:
        raise InputError(f"{name} {moment.isoformat()} has no time zone (give one, e.g. ...Z)")
    return moment.astimezone(dt.UTC)


def _ms(moment: dt.datetime) -> int:
    """Milliseconds since the epoch, rounded up: ``time >= since`` on whole milliseconds."""
    micros = (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return -(-micros // 1000)


def window_bounds(
    since: dt.datetime | None,
    until: dt.datetime | None,
    window_hours: float,
    now: dt.datetime,
) -> tuple[dt.datetime, dt.datetime]:
    """The monitor window ``[since, until)`` in UTC, filling in what is not given.

    Without ``until`` the window ends at ``now`` (to the whole second, so that its name
    states it exactly); without ``since`` it starts ``window_hours`` before its end.

    Args:
        since: The window's start, or None.
        until: The window's end (exclusive), or None.
        window_hours: The default window's length (``monitor.window_hours``).
        now: The present, passed in by the caller.

    Returns:
        ``(since, until)``, both timezone-aware UTC.

    Raises:
        InputError: A time has no time zone, or the window does not end after it starts.
    """
    end = _utc(until, "until") if until is not None else _utc(now, "now").replace(microsecond=0)
    start = _utc(since, "since") if since is not None else end - dt.timedelta(hours=window_hours)
    if start >= end:
        raise InputError(
            f"the window must end after it starts: since {start.isoformat()}, "
            f"until {end.isoformat()}"
        )
    return start, end


def window_name(since: dt.datetime, until: dt.datetime) -> str:
    """The window's folder name, ``YYYYMMDDTHHMMSSZ--YYYYMMDDTHHMMSSZ`` (UTC, to the second)."""
    return f"{_utc(since, 'since'):%Y%m%dT%H%M%SZ}--{_utc(until, 'until'):%Y%m%dT%H%M%SZ}"


def log_files(folder: Path, since: dt.datetime, until: dt.datetime) -> list[Path]:
    """The request-log files in the date folders ``[since, until)`` covers, in name order."""
    start, end = _utc(since, "since"), _utc(until, "until")
    last = (end - dt.timedelta(microseconds=1)).date()
    files: list[Path] = []
    day = start.date()
    while day <= last:
        files += sorted((folder / f"date={day:%Y-%m-%d}").glob(LOG_FILES))
        day += dt.timedelta(days=1)
    return files


def _outside(stats: pq.Statistics | None, since_ms: int, until_ms: int) -> bool:
    """Whether a row group's time statistics lie wholly outside ``[since_ms, until_ms)``."""
    if stats is None or not stats.has_min_max:
        return False
    low, high = stats.min_raw, stats.max_raw
    if not isinstance(low, int) or not isinstance(high, int):
        return False
    return high < since_ms or low >= until_ms


def _groups(meta: pq.FileMetaData, since_ms: int, until_ms: int) -> list[int]:
    """Row groups whose time statistics reach into ``[since_ms, until_ms)`` (all without)."""
    paths = [meta.schema.column(i).path for i in range(meta.num_columns)]
    column = paths.index("time")
    return [
        index
        for index in range(meta.num_row_groups)
        if not _outside(meta.row_group(index).column(column).statistics, since_ms, until_ms)
    ]


def _read_file(path: Path, since_ms: int, until_ms: int) -> tuple[pa.Table, int]:
    """The rows of ``path`` in the window and the rows the file holds.

    Raises:
        _Unreadable: The file is left out (the message says why).
    """
    if path.stat().st_size == 0:
        raise _Unreadable("empty (0 bytes), not a Parquet file")
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
        if version is not None and version != SCHEMA_VERSION:
            raise _Unreadable(
                f"request-log layout version {version.decode(errors='replace')!r}, "
                f"this monitor reads version {SCHEMA_VERSION.decode()}"
            )
        missing = [name for name in REQUEST_COLUMNS if name not in schema.names]
        if missing:
            raise _Unreadable(f"lacks the request-log columns {missing}")
        for field in REQUEST_SCHEMA:
            found = schema.field(field.name).type
            if found != field.type:
                raise _Unreadable(f"column {field.name} is {found}, not {field.type}")
        groups = _groups(parquet.metadata, since_ms, until_ms)
        table = parquet.read_row_groups(groups, columns=list(REQUEST_COLUMNS))
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        reason = first_line(exc)
        raise _Unreadable(f"not a readable Parquet file: {reason}") from exc
    # the request columns in their order, whatever the file's order
    table = table.select(list(REQUEST_COLUMNS)).replace_schema_metadata(None)
    return _inside(table, since_ms, until_ms), parquet.metadata.num_rows


def _inside(table: pa.Table, since_ms: int, until_ms: int) -> pa.Table:
    """The rows of ``table`` in ``[since_ms, until_ms)``, without copying where they are all of
    it or one run of it (a file's rows come in time order; copying list columns is costly)."""
    times = table.column("time").cast(pa.int64()).to_numpy(zero_copy_only=False)
    inside = (times >= since_ms) & (times < until_ms)
    if inside.all():
        return table
    rows = np.flatnonzero(inside)
    if not len(rows) or rows[-1] - rows[0] + 1 == len(rows):
        return table.slice(int(rows[0]) if len(rows) else 0, len(rows))
    return table.filter(pa.array(inside))


def read_request_log(
    folder: Path, since: dt.datetime, until: dt.datetime, version: str | None = None
) -> TrafficRead:
    """The requests of ``folder``'s log with ``since <= time < until``.

    Args:
        folder: A cloud's request-log folder (``<serve.request_log.dir>/<cloud>``); a folder
            that does not exist holds no traffic.
        since: The window's start (timezone-aware).
        until: The window's end, exclusive (timezone-aware).
        version: Only the requests this model version answered; None: all.

    Returns:
        The window's requests, the files read, the files skipped with their reasons, and the
        rows the files read hold.

    Raises:
        InputError: A time has no time zone, or the window does not end after it starts.
    """
    start, end = _utc(since, "since"), _utc(until, "until")
    if start >= end:
        raise InputError(
            f"the window must end after it starts: since {start.isoformat()}, "
            f"until {end.isoformat()}"
        )
    since_ms, until_ms = _ms(start), _ms(end)
    tables: list[pa.Table] = []
    skipped: list[Skipped] = []
    files = rows_read = 0
    for path in log_files(folder, start, end):
        name = path.relative_to(folder).as_posix()  # date=YYYY-MM-DD/requests-....parquet
        try:
            table, rows = _read_file(path, since_ms, until_ms)
        except _Unreadable as exc:
            skipped.append(Skipped(path, f"{name}: {exc}"))
            continue
        except OSError as exc:  # gone or unreadable between listing and reading
            skipped.append(Skipped(path, f"{name}: not readable: {exc.strerror or exc}"))
            continue
        files += 1
        rows_read += rows
        if version is not None:
            table = table.filter(pc.equal(table.column("model_version"), version))
        if table.num_rows:
            tables.append(table)
    table = pa.concat_tables(tables) if tables else REQUEST_SCHEMA.empty_table()
    return TrafficRead(table, files, tuple(skipped), rows_read)
