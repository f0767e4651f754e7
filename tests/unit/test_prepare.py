"""The prepare stage on hand-built batches: ordering, dedupe, splits, maps, reference stats."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file
from pipelines.core.params import PrepareConfig, RunConfig, TimeSplitConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA
from pipelines.data.preparation import prepare
from pipelines.stages import prepare as prepare_stage

RUN = RunConfig(logical_date=dt.date(2026, 3, 10), seed=7)
DAY = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)


def _event(user: str, item: str, ts: dt.datetime, kind: str = "view", eid: str | None = None):
    return {
        "event_id": eid or f"{user}-{item}-{ts.timestamp():.0f}-{kind}",
        "user_id": user,
        "item_id": item,
        "session_id": f"s-{user}-{ts:%d}",
        "event_type": kind,
        "timestamp": ts,
        "price": 10.0 if item < "i5" else 100.0,
        "category": "shoes" if item < "i5" else "books",
    }


def _write_batch(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), folder / "events.parquet")
    items = sorted({row["item_id"] for row in rows} | {"i9"})
    catalog = [
        {
            "item_id": item,
            "category": "shoes" if item < "i5" else "books",
            "brand": "b",
            "price": 10.0 if item < "i5" else 100.0,
        }
        for item in items
    ]
    pq.write_table(pa.Table.from_pylist(catalog, schema=CATALOG_SCHEMA), folder / "catalog.parquet")
    return folder


def _at(hours: float, days: int = 0) -> dt.datetime:
    return DAY - dt.timedelta(days=days) + dt.timedelta(hours=hours)


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    rows = [
        # u1: five distinct items, in time order
        *[_event("u1", f"i{k}", _at(k, days=3)) for k in range(1, 6)],
        # u2: view, add_to_cart and purchase of i2 at the same second, then i3 and i4
        _event("u2", "i2", _at(1, 2), "purchase", eid="e3"),
        _event("u2", "i2", _at(1, 2), "view", eid="e9"),
        _event("u2", "i2", _at(1, 2), "add_to_cart", eid="e1"),
        _event("u2", "i3", _at(2, 2)),
        _event("u2", "i4", _at(3, 2)),
        _event("u2", "i1", _at(4, 2)),
        # u3: too short after dedupe (i1, i1, i2)
        _event("u3", "i1", _at(1, 1)),
        _event("u3", "i1", _at(2, 1)),
        _event("u3", "i2", _at(3, 1)),
    ]
    return _write_batch(tmp_path / "validated", rows)


def _read(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / f"{name}.parquet").to_pylist()


def _items(out: Path) -> dict[int, str]:
    return {row["item_idx"]: row["item_id"] for row in _read(out, "item_map")}


def test_tie_rule_and_dedupe_keep_the_strongest_event(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    result = prepare(PrepareConfig(), RUN, batch, out)
    names = _items(out)
    sequences = {row["user_idx"]: row for row in _read(out, "sequences")}
    users = {row["user_id"]: row["user_idx"] for row in _read(out, "user_map")}
    u2 = sequences[users["u2"]]
    assert [names[i] for i in u2["item_idx"]] == ["i2", "i3", "i4", "i1"]
    assert u2["event_types"][0] == 2  # view, add_to_cart, purchase of i2 collapse to a purchase
    assert "u3" not in users and result.dropped_users == 1
    assert result.users == 2


def test_without_dedupe_equal_timestamps_follow_the_funnel(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(PrepareConfig(dedupe_consecutive=False), RUN, batch, out)
    users = {row["user_id"]: row["user_idx"] for row in _read(out, "user_map")}
    u2 = next(r for r in _read(out, "sequences") if r["user_idx"] == users["u2"])
    assert u2["event_types"][:3] == [0, 1, 2]
    u3 = next(r for r in _read(out, "sequences") if r["user_idx"] == users["u3"])
    assert len(u3["item_idx"]) == 3


def test_leave_one_out_targets(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(PrepareConfig(), RUN, batch, out)
    names = _items(out)
    users = {row["user_id"]: row["user_idx"] for row in _read(out, "user_map")}
    test = {row["user_idx"]: row for row in _read(out, "test")}
    valid = {row["user_idx"]: row for row in _read(out, "valid")}
    train = {row["user_idx"]: row for row in _read(out, "train")}
    u1 = users["u1"]
    assert names[test[u1]["target"]] == "i5"
    assert [names[i] for i in test[u1]["history"]] == ["i1", "i2", "i3", "i4"]
    assert names[valid[u1]["target"]] == "i4"
    assert [names[i] for i in valid[u1]["history"]] == ["i1", "i2", "i3"]
    assert [names[i] for i in train[u1]["item_idx"]] == ["i1", "i2", "i3"]


def test_truncation_keeps_the_last_steps(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(PrepareConfig(max_sequence_length=3), RUN, batch, out)
    names = _items(out)
    users = {row["user_id"]: row["user_idx"] for row in _read(out, "user_map")}
    u1 = next(r for r in _read(out, "sequences") if r["user_idx"] == users["u1"])
    assert [names[i] for i in u1["item_idx"]] == ["i3", "i4", "i5"]


def test_time_split_cut_points(tmp_path: Path) -> None:
    rows = [
        _event("u1", "i1", _at(1, days=5)),
        _event("u1", "i2", _at(1, days=4)),
        _event("u1", "i3", _at(2, days=1)),  # valid period: 2026-03-09
        _event("u1", "i4", _at(3, days=1)),
        _event("u1", "i1", _at(5, days=0)),  # test period: 2026-03-10
        _event("u2", "i2", _at(1, days=6)),
        _event("u2", "i3", _at(2, days=6)),
        _event("u2", "i4", _at(3, days=6)),
        _event("u2", "i1", _at(9, days=0)),  # test only
    ]
    batch = _write_batch(tmp_path / "validated", rows)
    out = tmp_path / "prepared"
    cfg = PrepareConfig(split="time", time_split=TimeSplitConfig(valid_days=1, test_days=1))
    result = prepare(cfg, RUN, batch, out)
    names = _items(out)
    users = {row["user_id"]: row["user_idx"] for row in _read(out, "user_map")}
    valid = {row["user_idx"]: row for row in _read(out, "valid")}
    test = {row["user_idx"]: row for row in _read(out, "test")}
    train = {row["user_idx"]: row for row in _read(out, "train")}
    assert set(valid) == {users["u1"]} and result.valid_rows == 1
    assert names[valid[users["u1"]]["target"]] == "i3"
    assert [names[i] for i in valid[users["u1"]]["history"]] == ["i1", "i2"]
    assert names[test[users["u1"]]["target"]] == "i1"
    assert [names[i] for i in test[users["u1"]]["history"]] == ["i1", "i2", "i3", "i4"]
    assert [names[i] for i in test[users["u2"]]["history"]] == ["i2", "i3", "i4"]
    assert [names[i] for i in train[users["u1"]]["item_idx"]] == ["i1", "i2"]


def test_maps_start_at_one_and_round_trip(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(PrepareConfig(), RUN, batch, out)
    item_map = _read(out, "item_map")
    assert [row["item_idx"] for row in item_map] == list(range(1, len(item_map) + 1))
    counts = [row["count"] for row in item_map]
    assert counts == sorted(counts, reverse=True)
    flat = np.concatenate([row["item_idx"] for row in _read(out, "sequences")])
    assert flat.min() >= 1 and flat.max() <= len(item_map)
    user_map = _read(out, "user_map")
    assert [row["user_idx"] for row in user_map] == list(range(1, len(user_map) + 1))


def test_reference_statistics(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(PrepareConfig(price_bins=5), RUN, batch, out)
    stats = json.loads((out / "reference.json").read_text())
    events = stats["counts"]["events"]
    assert events == 14
    assert sum(stats["category_mix"].values()) == pytest.approx(1.0)
    assert sum(stats["event_type_mix"].values()) == pytest.approx(1.0)
    assert sum(stats["price"]["histogram"]["counts"]) == events
    assert len(stats["price"]["histogram"]["counts"]) == 5
    assert sum(stats["session_length"]["histogram"]["counts"]) == stats["counts"]["sessions"]
    assert (
        stats["item_popularity"]["top_100"][0]["count"]
        >= stats["item_popularity"]["top_100"][-1]["count"]
    )
    popularity = {row["item_id"]: row["count"] for row in _read(out, "item_popularity")}
    assert popularity["i9"] == 0  # catalog item without traffic is kept with count 0
    assert sum(popularity.values()) == events
    assert len(_read(out, "reference_sample")) == events


def test_rerun_gives_the_same_bytes(batch: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    prepare(PrepareConfig(), RUN, batch, first)
    prepare(PrepareConfig(), RUN, batch, second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert sha256_file(first / name) == sha256_file(second / name), name


def test_no_user_left_is_a_clear_error(batch: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="min_sequence_length=50"):
        prepare(PrepareConfig(min_sequence_length=50), RUN, batch, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_only_the_configured_event_types_are_used(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    cfg = PrepareConfig(event_types=("view",), dedupe_consecutive=False)
    result = prepare(cfg, RUN, batch, out)
    assert result.events == 12  # 14 events less u2's add_to_cart and purchase
    assert all(set(row["event_types"]) == {0} for row in _read(out, "sequences"))
    stats = json.loads((out / "reference.json").read_text())
    assert stats["event_type_mix"] == {"view": 1.0}


def test_timestamps_are_epoch_seconds(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(PrepareConfig(), RUN, batch, out)
    users = {row["user_id"]: row["user_idx"] for row in _read(out, "user_map")}
    u1 = next(r for r in _read(out, "sequences") if r["user_idx"] == users["u1"])
    assert u1["timestamps"] == [int(_at(k, days=3).timestamp()) for k in range(1, 6)]


def test_missing_catalog_is_named(batch: Path, tmp_path: Path) -> None:
    (batch / "catalog.parquet").unlink()
    with pytest.raises(InputError, match=r"validated catalog not found: .*catalog\.parquet"):
        prepare(PrepareConfig(), RUN, batch, tmp_path / "o")


def test_unreadable_events_are_named(batch: Path, tmp_path: Path) -> None:
    (batch / "events.parquet").write_bytes(b"not parquet")
    with pytest.raises(
        InputError, match=r"validated events .*events\.parquet is not a readable Parquet file"
    ):
        prepare(PrepareConfig(), RUN, batch, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_events_without_a_column_are_named(batch: Path, tmp_path: Path) -> None:
    events = pq.read_table(batch / "events.parquet")
    pq.write_table(events.drop_columns(["session_id"]), batch / "events.parquet")
    with pytest.raises(
        InputError, match=r"validated events .*events\.parquet lacks the columns \['session_id'\]"
    ):
        prepare(PrepareConfig(), RUN, batch, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_catalog_without_a_column_is_named(batch: Path, tmp_path: Path) -> None:
    catalog = pq.read_table(batch / "catalog.parquet")
    pq.write_table(catalog.drop_columns(["brand"]), batch / "catalog.parquet")
    with pytest.raises(
        InputError, match=r"validated catalog .*catalog\.parquet lacks the columns \['brand'\]"
    ):
        prepare(PrepareConfig(), RUN, batch, tmp_path / "o")


def test_duplicate_catalog_items_are_rejected(batch: Path, tmp_path: Path) -> None:
    catalog = pq.read_table(batch / "catalog.parquet")
    pq.write_table(pa.concat_tables([catalog, catalog.slice(0, 1)]), batch / "catalog.parquet")
    with pytest.raises(InputError, match=r"item_id more than once, e\.g\. 'i1'"):
        prepare(PrepareConfig(), RUN, batch, tmp_path / "o")


def test_cli_missing_input(
    tmp_path: Path, project_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = prepare_stage.main(
        [
            "--params",
            str(project_root / "params.yaml"),
            "--validated",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "error: validated events not found" in err and "Traceback" not in err
    assert str(tmp_path / "none" / "events.parquet") in err
    assert not (tmp_path / "out").exists()


def test_cli_writes_metrics(batch: Path, tmp_path: Path, project_root: Path) -> None:
    metrics = tmp_path / "metrics.json"
    code = prepare_stage.main(
        [
            "--params",
            str(project_root / "params.yaml"),
            "--validated",
            str(batch),
            "--out",
            str(tmp_path / "out"),
            "--metrics",
            str(metrics),
        ]
    )
    assert code == 0
    assert json.loads(metrics.read_text())["users"] == 2
