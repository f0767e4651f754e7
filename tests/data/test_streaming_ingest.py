"""Ingest of a source read a batch at a time: the bytes of the in-memory sort, whatever the order.

A ``synthetic`` folder is streamed; in (timestamp, event_id) order it is written as it comes,
out of order it goes through DuckDB's out-of-core sort. Either way the batch must be the one a
whole-table filter and stable sort writes. Row groups and read batches are made tiny so that
every path crosses many of them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import pipelines.core.io
import pipelines.data.sources.synthetic
from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file, write_parquet
from pipelines.core.params import GenerateConfig, IngestConfig, RunConfig
from pipelines.core.schema import EVENT_SCHEMA
from pipelines.data.batch_window import batch_window
from pipelines.data.ingest import ingest
from pipelines.data.sources.sorting import sort_events
from pipelines.data.synthetic.generator import generate

DAY = dt.date(2026, 11, 22)
RUN = RunConfig(logical_date=DAY, seed=8)
WEEK = IngestConfig(window_days=7)
ORDER = [("timestamp", "ascending"), ("event_id", "ascending")]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("source") / "synthetic"
    generate(GenerateConfig(preset="tiny", days=14), RUN, out)
    return out


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipelines.core.io, "ROW_GROUP_ROWS", 256)
    monkeypatch.setattr(pipelines.data.sources.synthetic, "BATCH_ROWS", 100)


def _copy(source: Path, to: Path, events: pa.Table) -> Path:
    to.mkdir()
    write_parquet(to / "events.parquet", events)
    (to / "catalog.parquet").write_bytes((source / "catalog.parquet").read_bytes())
    return to


def _sorted_in_memory(
    events: pa.Table, window_days: int, shift_days: int = 0, day: dt.date = DAY
) -> pa.Table:
    """The batch's events as one whole-table shift, filter and stable sort give them."""
    if shift_days:
        moved = pc.add(
            events.column("timestamp"),
            pa.scalar(dt.timedelta(days=shift_days), pa.duration("us")),
        )
        events = events.set_column(5, EVENT_SCHEMA.field("timestamp"), moved)
    window = batch_window(day, window_days)
    stamps = events.column("timestamp")
    inside = pc.and_(
        pc.greater_equal(stamps, pa.scalar(window.start, stamps.type)),
        pc.less(stamps, pa.scalar(window.end, stamps.type)),
    )
    events = events.filter(inside)
    return events.take(pc.sort_indices(events, ORDER)).combine_chunks()


def _expected_bytes(events: pa.Table, to: Path) -> str:
    write_parquet(to, events)
    return sha256_file(to)


def test_a_source_in_order_is_written_as_it_streams(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="recflow.ingest"):
        result = ingest(WEEK, RUN, source, tmp_path / "raw")
    assert "out of core" not in caplog.text
    expected = _sorted_in_memory(pq.read_table(source / "events.parquet"), 7)
    written = result.batch / "events.parquet"
    assert sha256_file(written) == _expected_bytes(expected, tmp_path / "expected.parquet")
    assert pq.ParquetFile(written).num_row_groups > 3
    assert (result.rows, result.users, result.items) == (
        expected.num_rows,
        pc.count_distinct(expected.column("user_id")).as_py(),
        pc.count_distinct(expected.column("item_id")).as_py(),
    )


def test_a_shuffled_source_is_sorted_out_of_core_to_the_same_batch(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = pq.read_table(source / "events.parquet")
    shuffled = events.take(np.random.default_rng(3).permutation(events.num_rows))
    shuffled_source = _copy(source, tmp_path / "shuffled", shuffled)
    in_order = ingest(WEEK, RUN, source, tmp_path / "in_order")
    with caplog.at_level(logging.INFO, logger="recflow.ingest"):
        sorted_out_of_core = ingest(WEEK, RUN, shuffled_source, tmp_path / "sorted")
    assert "sorting it out of core" in caplog.text
    for name in ("events.parquet", "catalog.parquet", "manifest.json"):
        assert sha256_file(sorted_out_of_core.batch / name) == sha256_file(in_order.batch / name)
    assert [p.name for p in sorted_out_of_core.batch.iterdir()] == [
        p.name for p in in_order.batch.iterdir()
    ]


def test_out_of_order_late_in_the_stream_still_gives_the_sorted_batch(
    source: Path, tmp_path: Path
) -> None:
    # in order for many batches, then one swap: the streamed write is dropped half-way
    events = pq.read_table(source / "events.parquet")
    window = _sorted_in_memory(events, 7)
    last = window.num_rows - 5
    order = np.arange(window.num_rows)
    order[[last, last + 1]] = order[[last + 1, last]]
    swapped = _copy(source, tmp_path / "swapped", window.take(order))
    result = ingest(WEEK, RUN, swapped, tmp_path / "raw")
    expected = _expected_bytes(window, tmp_path / "expected.parquet")
    assert sha256_file(result.batch / "events.parquet") == expected
    assert result.rows == window.num_rows


def test_ties_keep_the_order_of_the_source_as_a_stable_sort_does() -> None:
    stamps = pa.array([3, 1, 3, 1, 2, 3], pa.timestamp("us", tz="UTC"))
    ids = pa.array(["b", "a", "b", "a", "c", "a"])
    users = pa.array(["u0", "u1", "u2", "u3", "u4", "u5"])
    columns = {name: pa.array(["x"] * 6) for name in EVENT_SCHEMA.names}
    columns.update(event_id=ids, user_id=users, timestamp=stamps)
    columns["price"] = pa.array([1.0] * 6)
    table = pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)
    expected = table.take(pc.sort_indices(table, ORDER))
    pieces = [table.slice(0, 2), table.slice(2, 3), table.slice(5)]
    got = pa.concat_tables(list(sort_events(pieces)))
    assert got.column("user_id").to_pylist() == ["u1", "u3", "u4", "u5", "u0", "u2"]
    assert got.equals(expected)


def test_alignment_of_a_streamed_source_moves_the_newest_event_onto_the_date(
    source: Path, tmp_path: Path
) -> None:
    later = RunConfig(logical_date=DAY + dt.timedelta(days=30), seed=RUN.seed)
    cfg = IngestConfig(window_days=7, align_to_logical_date=True)
    result = ingest(cfg, later, source, tmp_path / "raw")
    manifest = json.loads((result.batch / "manifest.json").read_text())
    assert manifest["time_shift_days"] == 30
    events = pq.read_table(source / "events.parquet")
    moved = _sorted_in_memory(events, 7, shift_days=30, day=later.logical_date)
    expected = _expected_bytes(moved, tmp_path / "expected.parquet")
    assert sha256_file(result.batch / "events.parquet") == expected
    assert moved.num_rows > 0


def test_a_streamed_batch_that_does_not_cast_is_refused(source: Path, tmp_path: Path) -> None:
    events = pq.read_table(source / "events.parquet")
    index = events.schema.get_field_index("price")
    cheap = pa.array(["cheap"] * events.num_rows)
    bad = _copy(source, tmp_path / "bad", events.set_column(index, "price", cheap))
    with pytest.raises(InputError, match=r"events\.parquet does not match the canonical schema"):
        ingest(WEEK, RUN, bad, tmp_path / "raw")
    assert not (tmp_path / "raw" / DAY.isoformat()).exists()


def test_a_batch_that_does_not_cast_is_refused_while_sorting_out_of_core(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # out of order from the start, so the sort reads the file; prices are text that casts to
    # numbers until the last rows
    events = pq.read_table(source / "events.parquet")
    events = events.take(np.arange(events.num_rows)[::-1])
    prices = ["2.5"] * (events.num_rows - 10) + ["cheap"] * 10
    index = events.schema.get_field_index("price")
    bad = _copy(source, tmp_path / "bad", events.set_column(index, "price", pa.array(prices)))
    with (
        caplog.at_level(logging.INFO, logger="recflow.ingest"),
        pytest.raises(InputError, match=r"events\.parquet does not match the canonical schema"),
    ):
        ingest(IngestConfig(window_days=14), RUN, bad, tmp_path / "raw")
    assert "sorting it out of core" in caplog.text
    assert not (tmp_path / "raw" / DAY.isoformat()).exists()
