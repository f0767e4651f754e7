"""Reading a window of the request log: the rows in the window, in a fixed order, from the date
folders the window covers; every kind of bad file skipped by name, never a crash; and the
default window and its name."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InputError
from pipelines.core.io import write_parquet
from pipelines.monitoring.requests import REQUEST_SCHEMA
from pipelines.monitoring.traffic import read_request_log, window_bounds, window_name
from pipelines.serving.items import ItemTable
from pipelines.serving.server.requestlog import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    RequestLog,
    Row,
    rows_table,
)
from tests.monitoring.conftest import make_items

T0 = dt.datetime(2026, 11, 22, 23, 0, tzinfo=dt.UTC)


@pytest.fixture
def items() -> ItemTable:
    return make_items(["a", "b", "c"], ["x", "y", "y"], [1.0, 2.0, 3.0], [5, 3, 1])


def _row(items: ItemTable, at: dt.datetime, user: str, version: str = "v1") -> Row:
    return Row(
        time=at.timestamp(),
        user=user,
        version=version,
        arm="stable",
        history=np.array([1, 2]),
        items=np.array([3, 1]),
        table=items,
        latency_ms=2.0,
        fallback=False,
        cache_hit=False,
        unknown_items=0,
    )


def _log_file(folder: Path, name: str, table: pa.Table, day: dt.date | None = None) -> Path:
    """Write ``table`` as a log file in the date folder of its first row (or ``day``)."""
    when = day or table.column("time")[0].as_py().date()
    path = folder / f"date={when:%Y-%m-%d}" / f"requests-{name}.parquet"
    write_parquet(path, table)
    return path


def _at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_the_request_log_marks_its_layout_version(tmp_path: Path, items: ItemTable) -> None:
    log = RequestLog(tmp_path, window_s=60.0, max_rows=100, worker="w0")
    written = log.write(T0.timestamp(), [_row(items, T0, "p1")])
    metadata = pq.read_schema(written).metadata
    assert metadata is not None and metadata[SCHEMA_VERSION_KEY] == SCHEMA_VERSION == b"1"


def test_rows_in_the_window_across_two_days_file_by_file(tmp_path: Path, items: ItemTable) -> None:
    # worker w1 logged 23:00-23:50, w0 23:30-00:30 the next day (into one file of the first
    # day), then 00:05 into the next day's folder
    first = rows_table([_row(items, _at(m), f"w1-{m}") for m in (0, 20, 40, 50)])
    second = rows_table([_row(items, _at(m), f"w0-{m}") for m in (30, 40, 70, 90)])
    _log_file(tmp_path, "b-w1", first)
    _log_file(tmp_path, "a-w0", second)
    _log_file(tmp_path, "c-w0", rows_table([_row(items, _at(65), "w0-65")]))
    read = read_request_log(tmp_path, _at(20), _at(70))
    # files in name order (date folder, then name), each file's rows as logged
    assert read.table.column("user").to_pylist() == [
        "w0-30",
        "w0-40",
        "w1-20",
        "w1-40",
        "w1-50",
        "w0-65",
    ]
    assert read.table.schema == REQUEST_SCHEMA
    assert (read.files, read.skipped, read.rows_read) == (3, (), 9)
    again = read_request_log(tmp_path, _at(20), _at(70))
    assert again.table.equals(read.table)


def test_only_the_date_folders_the_window_covers_are_read(tmp_path: Path, items: ItemTable) -> None:
    _log_file(tmp_path, "old", rows_table([_row(items, _at(-60 * 24), "yesterday")]))
    _log_file(tmp_path, "now", rows_table([_row(items, _at(10), "today")]))
    (tmp_path / "date=2026-11-21" / "requests-broken.parquet").write_bytes(b"not parquet")
    read = read_request_log(tmp_path, _at(0), _at(60))  # 23:00-24:00 on the 22nd only
    assert read.table.column("user").to_pylist() == ["today"]
    assert (read.files, read.skipped) == (1, ())
    # until is exclusive: a window ending at midnight does not open the next day's folder
    (tmp_path / "date=2026-11-23").mkdir()
    (tmp_path / "date=2026-11-23" / "requests-broken.parquet").write_bytes(b"")
    assert read_request_log(tmp_path, _at(0), _at(60)).skipped == ()


def test_since_is_inclusive_and_until_exclusive_to_the_millisecond(
    tmp_path: Path, items: ItemTable
) -> None:
    rows = [_row(items, _at(0), "at-since"), _row(items, _at(10), "at-until")]
    _log_file(tmp_path, "w0", rows_table(rows))
    read = read_request_log(tmp_path, _at(0), _at(10))
    assert read.table.column("user").to_pylist() == ["at-since"]
    later = read_request_log(tmp_path, _at(0) + dt.timedelta(microseconds=1), _at(11))
    assert later.table.column("user").to_pylist() == ["at-until"]


def test_one_version_only(tmp_path: Path, items: ItemTable) -> None:
    rows = [_row(items, _at(m), f"p{m}", "v2" if m % 2 else "v1") for m in range(6)]
    _log_file(tmp_path, "w0", rows_table(rows))
    read = read_request_log(tmp_path, _at(0), _at(60), version="v2")
    assert read.table.column("user").to_pylist() == ["p1", "p3", "p5"]
    assert read.rows_read == 6


def test_a_file_of_many_row_groups_gives_the_rows_of_the_window(
    tmp_path: Path, items: ItemTable
) -> None:
    table = rows_table([_row(items, _at(m), f"p{m}") for m in range(40)])
    path = tmp_path / "date=2026-11-22" / "requests-groups.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, row_group_size=7, write_statistics=True)
    assert pq.ParquetFile(path).metadata.num_row_groups == 6
    read = read_request_log(tmp_path, _at(9), _at(23))
    assert read.table.column("user").to_pylist() == [f"p{m}" for m in range(9, 23)]
    assert read.rows_read == 40
    # a window that starts at the last time of a row group (rows 7-13) still reads it
    edge = read_request_log(tmp_path, _at(13), _at(14))
    assert edge.table.column("user").to_pylist() == ["p13"]


def test_bad_files_are_skipped_by_name_and_the_rest_is_read(
    tmp_path: Path, items: ItemTable
) -> None:
    good = rows_table([_row(items, _at(m), f"p{m}") for m in range(3)])
    _log_file(tmp_path, "good", good)
    day = T0.date()
    empty = _log_file(tmp_path, "empty", good, day)
    empty.write_bytes(b"")
    truncated = _log_file(tmp_path, "truncated", good, day)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage = _log_file(tmp_path, "garbage", good, day)
    garbage.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    newer = _log_file(tmp_path, "v2", good.replace_schema_metadata({SCHEMA_VERSION_KEY: b"2"}))
    narrow = _log_file(tmp_path, "narrow", good.drop_columns(["items", "arm"]))
    typed = _log_file(
        tmp_path, "typed", good.set_column(0, "time", good.column("time").cast(pa.int64())), day
    )
    read = read_request_log(tmp_path, _at(0), _at(60))
    assert read.table.column("user").to_pylist() == ["p0", "p1", "p2"]
    assert read.files == 1
    reasons = {s.path: s.reason for s in read.skipped}
    assert set(reasons) == {empty, truncated, garbage, newer, narrow, typed}
    for path, reason in reasons.items():
        assert reason.startswith(f"date=2026-11-22/{path.name}: ")
    assert "empty" in reasons[empty]
    assert "not a readable Parquet file" in reasons[truncated]
    assert "not a readable Parquet file" in reasons[garbage]
    assert "version '2'" in reasons[newer]
    assert "['arm', 'items']" in reasons[narrow]
    assert "column time is int64" in reasons[typed]
    first = read.skipped[0]
    assert first.to_json() == {"path": str(first.path), "reason": reasons[first.path]}


def test_a_file_from_before_the_version_key_is_read(tmp_path: Path, items: ItemTable) -> None:
    table = rows_table([_row(items, _at(1), "p1")]).replace_schema_metadata(None)
    _log_file(tmp_path, "legacy", table)
    read = read_request_log(tmp_path, _at(0), _at(60))
    assert read.table.column("user").to_pylist() == ["p1"] and read.skipped == ()


def test_a_window_without_traffic_is_an_empty_table(tmp_path: Path, items: ItemTable) -> None:
    for folder in (tmp_path / "never-written", tmp_path):
        read = read_request_log(folder, _at(0), _at(60))
        assert read.table.num_rows == 0 and read.table.schema == REQUEST_SCHEMA
        assert (read.files, read.skipped, read.rows_read) == (0, (), 0)
    _log_file(tmp_path, "w0", rows_table([_row(items, _at(50), "later")]))
    read = read_request_log(tmp_path, _at(0), _at(40))  # the same day, before its one request
    assert read.table.num_rows == 0 and read.table.schema == REQUEST_SCHEMA
    assert (read.files, read.rows_read) == (1, 1)


def test_a_window_must_be_aware_and_end_after_it_starts(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="time zone"):
        read_request_log(tmp_path, dt.datetime(2026, 11, 22), _at(0))
    with pytest.raises(InputError, match="end after it starts"):
        read_request_log(tmp_path, _at(5), _at(5))


def test_the_default_window_is_the_last_hours_before_now() -> None:
    now = dt.datetime(2026, 11, 22, 13, 30, 15, 900_000, tzinfo=dt.UTC)
    since, until = window_bounds(None, None, 24.0, now)
    assert until == dt.datetime(2026, 11, 22, 13, 30, 15, tzinfo=dt.UTC)
    assert since == dt.datetime(2026, 11, 21, 13, 30, 15, tzinfo=dt.UTC)
    given = dt.datetime(2026, 11, 22, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert window_bounds(None, given, 1.5, now) == (
        dt.datetime(2026, 11, 22, 2, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 22, 4, tzinfo=dt.UTC),
    )
    assert window_bounds(given, None, 1.0, now) == (
        dt.datetime(2026, 11, 22, 4, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 22, 13, 30, 15, tzinfo=dt.UTC),
    )
    with pytest.raises(InputError, match="end after it starts"):
        window_bounds(now, None, 1.0, now)
    with pytest.raises(InputError, match="time zone"):
        window_bounds(None, None, 1.0, dt.datetime(2026, 11, 22))


def test_the_window_name_states_both_ends_in_utc() -> None:
    since = dt.datetime(2026, 11, 22, 1, 2, 3, tzinfo=dt.UTC)
    until = dt.datetime(2026, 11, 23, 6, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    assert window_name(since, until) == "20261122T010203Z--20261123T010203Z"


def test_a_file_out_of_time_order_keeps_its_rows_of_the_window(
    tmp_path: Path, items: ItemTable
) -> None:
    # a request answered late is logged after a later one
    rows = [_row(items, _at(m), f"p{m}") for m in (10, 70, 20, 5, 80)]
    _log_file(tmp_path, "w0", rows_table(rows))
    read = read_request_log(tmp_path, _at(8), _at(60))
    assert read.table.column("user").to_pylist() == ["p10", "p20"]


def test_extra_columns_and_another_column_order_are_read_as_the_request_columns(
    tmp_path: Path, items: ItemTable
) -> None:
    table = rows_table([_row(items, _at(1), "p1")])
    reordered = table.select(list(reversed(table.column_names))).append_column(
        "note", pa.array(["x"])
    )
    _log_file(tmp_path, "reordered", reordered)
    _log_file(tmp_path, "usual", rows_table([_row(items, _at(2), "p2")]))
    read = read_request_log(tmp_path, _at(0), _at(60))
    assert read.table.schema == REQUEST_SCHEMA
    assert read.table.column("user").to_pylist() == ["p1", "p2"]
