"""The prepare stage in bounded memory: ranges of a few users at a time and small row groups
write the same bytes as one range, and the out-of-core order agrees with the in-memory
definitions (``ordered_events``, ``dedupe_consecutive``, ``reference_statistics``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import io
from pipelines.core.errors import InputError
from pipelines.core.params import PrepareConfig, RunConfig, TimeSplitConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA
from pipelines.data import preparation, reference
from pipelines.data.preparation import dedupe_consecutive, ordered_events, prepare

RUN = RunConfig(logical_date=dt.date(2026, 3, 10), seed=11)
END = dt.datetime(2026, 3, 11, tzinfo=dt.UTC)
KINDS = ("view", "add_to_cart", "purchase")


def _events(rng: np.random.Generator) -> pd.DataFrame:
    """Users with 1 to 14 events over 5 days: few items, whole-second timestamps and
    sub-second ones (ties within a second), events before 1970 and non-ASCII user ids."""
    rows = []
    users = [f"u{k:02d}" for k in range(24)] + ["é1", "Ω2", "ä3"]
    for user in users:
        for k in range(int(rng.integers(1, 15))):
            seconds = int(rng.integers(0, 5 * 86_400)) // 60 * 60
            micros = int(rng.choice([0, 0, 250_000, 999_999]))
            when = END - dt.timedelta(seconds=seconds, microseconds=micros)
            if user == "u03":  # before the epoch: whole seconds round down
                when = dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.UTC) + dt.timedelta(
                    microseconds=micros + k
                )
            item = f"i{int(rng.integers(0, 6))}"
            rows.append(
                {
                    "event_id": f"e{int(rng.integers(0, 10**6)):06d}{user}{k}",
                    "user_id": user,
                    "item_id": item,
                    "session_id": f"s{user}{int(rng.integers(0, 3))}",
                    "event_type": KINDS[int(rng.integers(0, 3))],
                    "timestamp": when,
                    "price": float(rng.choice([5.0, 12.5, 40.0])),
                    "category": f"c{item[-1]}",
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    folder = tmp_path / "validated"
    folder.mkdir()
    events = _events(np.random.default_rng(3))
    pq.write_table(
        pa.Table.from_pandas(events, schema=EVENT_SCHEMA, preserve_index=False),
        folder / "events.parquet",
        row_group_size=40,
    )
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(5)],  # i5 has traffic but no catalog row
            "category": [f"c{k}" for k in range(5)],
            "brand": "b",
            "price": 9.0,
        }
    )
    pq.write_table(
        pa.Table.from_pandas(catalog, schema=CATALOG_SCHEMA, preserve_index=False),
        folder / "catalog.parquet",
    )
    return folder


CONFIGS = {
    "default": PrepareConfig(),
    "no_dedupe_truncated": PrepareConfig(dedupe_consecutive=False, max_sequence_length=4),
    "views_and_carts": PrepareConfig(event_types=("view", "add_to_cart"), min_sequence_length=4),
    "time_split": PrepareConfig(
        split="time", time_split=TimeSplitConfig(valid_days=1, test_days=1)
    ),
}


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ranges_of_a_few_users_write_the_same_bytes(
    name: str, batch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = CONFIGS[name]
    monkeypatch.setattr(io, "ROW_GROUP_ROWS", 5)  # several row groups per file
    monkeypatch.setattr(reference, "SAMPLE_SIZE", 17)  # a sample smaller than the traffic
    whole = prepare(cfg, RUN, batch, tmp_path / "whole")
    monkeypatch.setattr(preparation, "CHUNK_EVENTS", 3)  # a user or two per range
    chunked = prepare(cfg, RUN, batch, tmp_path / "chunked")
    assert chunked == whole
    expected, written = _files(tmp_path / "whole"), _files(tmp_path / "chunked")
    assert sorted(written) == sorted(expected)
    assert [file for file in expected if written[file] != expected[file]] == []
    assert pq.ParquetFile(tmp_path / "chunked" / "sequences.parquet").num_row_groups > 1
    assert not list(tmp_path.glob(".*work*")), "the work folder is left behind"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sequences_follow_the_in_memory_definitions(
    name: str, batch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = CONFIGS[name]
    monkeypatch.setattr(preparation, "CHUNK_EVENTS", 2)
    out = tmp_path / "prepared"
    result = prepare(cfg, RUN, batch, out)

    frame = ordered_events(pq.read_table(batch / "events.parquet").to_pandas(), cfg)
    steps = dedupe_consecutive(frame) if cfg.dedupe_consecutive else frame
    expected = {}
    for user, group in steps.groupby("user_id", sort=True):
        if len(group) >= cfg.min_sequence_length:
            tail = group.tail(cfg.max_sequence_length)
            expected[user] = (
                tail["item_id"].tolist(),
                tail["ts"].tolist(),
                tail["event_code"].tolist(),
            )
    items = {
        row["item_idx"]: row["item_id"]
        for row in pq.read_table(out / "item_map.parquet").to_pylist()
    }
    users = [row["user_id"] for row in pq.read_table(out / "user_map.parquet").to_pylist()]
    assert users == sorted(expected)
    written = {
        users[row["user_idx"] - 1]: (
            [items[i] for i in row["item_idx"]],
            row["timestamps"],
            row["event_types"],
        )
        for row in pq.read_table(out / "sequences.parquet").to_pylist()
    }
    assert written == expected
    assert result.events == len(frame)
    assert result.dropped_users == frame["user_id"].nunique() - len(expected)


def test_reference_files_follow_the_in_memory_definitions(
    batch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = PrepareConfig(price_bins=4)
    monkeypatch.setattr(preparation, "CHUNK_EVENTS", 4)
    monkeypatch.setattr(reference, "SAMPLE_SIZE", 23)
    out = tmp_path / "prepared"
    prepare(cfg, RUN, batch, out)
    frame = ordered_events(pq.read_table(batch / "events.parquet").to_pandas(), cfg)
    catalog = pq.read_table(batch / "catalog.parquet").to_pandas()
    stats = reference.reference_statistics(frame, catalog, cfg, RUN)
    assert json.loads((out / "reference.json").read_text()) == json.loads(
        json.dumps(stats, default=str)
    )
    sample = pq.read_table(out / "reference_sample.parquet")
    assert sample.equals(reference.reference_sample(frame, RUN.seed, size=23))
    assert sample.num_rows == 23
    popularity = pq.read_table(out / "item_popularity.parquet")
    assert popularity.equals(reference.item_popularity(frame, catalog))


def test_a_timestamp_that_is_not_a_time_is_named(batch: Path, tmp_path: Path) -> None:
    events = pq.read_table(batch / "events.parquet")
    as_text = events.set_column(
        events.schema.get_field_index("timestamp"),
        "timestamp",
        events["timestamp"].cast(pa.string()),
    )
    pq.write_table(as_text, batch / "events.parquet")
    with pytest.raises(InputError, match=r"validated events .*events\.parquet could not be read"):
        prepare(PrepareConfig(), RUN, batch, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".*work*"))


def test_nanosecond_timestamps_round_down_to_the_same_seconds(batch: Path, tmp_path: Path) -> None:
    prepare(PrepareConfig(), RUN, batch, tmp_path / "micros")
    events = pq.read_table(batch / "events.parquet")
    column = events.schema.get_field_index("timestamp")
    nanos = events["timestamp"].cast(pa.timestamp("ns", tz="UTC"))
    pq.write_table(events.set_column(column, "timestamp", nanos), batch / "events.parquet")
    prepare(PrepareConfig(), RUN, batch, tmp_path / "nanos")
    assert _files(tmp_path / "nanos") == _files(tmp_path / "micros")
