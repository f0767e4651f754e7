"""Loaders that map public data set formats to the canonical schema (fixtures in fixtures/)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InputError
from pipelines.core.io import write_parquet
from pipelines.core.params import DriftConfig, IngestConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA
from pipelines.data.sources.loaders import load_source, open_source
from pipelines.data.synthetic.presets import PRESETS
from pipelines.data.synthetic.tables import synthesize

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULTS = IngestConfig(default_price=2.5, default_category="misc")
CLICKS_MAP = {
    "timestamp": "ts",
    "user_id": "visitor",
    "item_id": "sku",
    "event_type": "action",
    "price": "amount",
    "category": "dept",
    "brand": "maker",
}


def _load(kind: str, path: Path, cfg: IngestConfig = DEFAULTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    events, catalog = load_source(kind, path, cfg)
    assert events.schema.equals(EVENT_SCHEMA)
    assert catalog.schema.equals(CATALOG_SCHEMA)
    events_frame, catalog_frame = events.to_pandas(), catalog.to_pandas()
    # invariants every loader keeps
    assert events_frame["event_id"].is_unique
    assert catalog_frame["item_id"].is_unique
    assert set(events_frame["item_id"]) <= set(catalog_frame["item_id"])
    assert (events_frame["price"] > 0).all()
    return events_frame, catalog_frame


def _sessions_of(events: pd.DataFrame, user: str) -> list[list[str]]:
    mine = events[events["user_id"] == user].sort_values("timestamp")
    return [list(g["item_id"]) for _, g in mine.groupby("session_id", sort=False)]


def _tiny_source(days: int = 1) -> tuple[pa.Table, pa.Table]:
    return synthesize(
        PRESETS["tiny"], seed=1, end_date=dt.date(2026, 11, 22), days=days, drift=DriftConfig()
    )


def _utc(seconds: int) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s", tz="UTC")


# ---------------------------------------------------------------- each format


def test_synthetic_folder(tmp_path: Path) -> None:
    events, catalog = _tiny_source(days=3)
    write_parquet(tmp_path / "events.parquet", events)
    write_parquet(tmp_path / "catalog.parquet", catalog)
    loaded_events, loaded_catalog = load_source("synthetic", tmp_path, DEFAULTS)
    assert loaded_events.equals(events)
    assert loaded_catalog.equals(catalog)


def test_synthetic_folder_with_other_column_order_and_types(tmp_path: Path) -> None:
    events, catalog = _tiny_source(days=2)
    shuffled = events.select(list(reversed(events.column_names))).set_column(
        0, "category", events.column("category").cast(pa.large_string())
    )
    write_parquet(tmp_path / "events.parquet", shuffled)
    write_parquet(tmp_path / "catalog.parquet", catalog)
    loaded, _ = load_source("synthetic", tmp_path, DEFAULTS)
    assert loaded.equals(events)


def test_synthetic_folder_opened_reads_the_same_events_in_batches(tmp_path: Path) -> None:
    events, catalog = _tiny_source(days=3)
    shuffled = events.select(list(reversed(events.column_names)))
    write_parquet(tmp_path / "events.parquet", shuffled)
    write_parquet(tmp_path / "catalog.parquet", catalog)
    source = open_source("synthetic", tmp_path, DEFAULTS)
    assert source.table is None  # left on disk
    assert source.rows == events.num_rows
    assert pa.Table.from_batches(list(source.batches())).equals(events)
    stamps = pa.Table.from_batches(list(source.batches(["timestamp"])))
    assert stamps.equals(events.select(["timestamp"]))
    assert source.catalog.equals(catalog)


def test_other_sources_opened_are_their_loaded_tables() -> None:
    events, catalog = load_source("recbole", FIXTURES / "recbole", DEFAULTS)
    source = open_source("recbole", FIXTURES / "recbole", DEFAULTS)
    assert source.table is not None and source.table.equals(events)
    assert pa.Table.from_batches(list(source.batches())).equals(events)
    assert source.catalog.equals(catalog)


def test_opened_synthetic_folder_is_checked_like_a_loaded_one(tmp_path: Path) -> None:
    (tmp_path / "events.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(
        InputError, match=r"synthetic events .*events\.parquet is not a readable Parquet file"
    ):
        open_source("synthetic", tmp_path, DEFAULTS)
    events = _tiny_source()[0]
    write_parquet(tmp_path / "events.parquet", events.drop_columns(["price"]))
    with pytest.raises(InputError, match=r"events\.parquet lacks the columns \['price'\]"):
        open_source("synthetic", tmp_path, DEFAULTS)
    write_parquet(tmp_path / "events.parquet", events)
    with pytest.raises(InputError, match=r"synthetic catalog not found: .*catalog\.parquet"):
        open_source("synthetic", tmp_path, DEFAULTS)


def test_recbole_folder_with_item_file() -> None:
    events, catalog = _load("recbole", FIXTURES / "recbole")
    assert len(events) == 24
    assert set(events["event_type"]) == {"view"}
    first = events.iloc[0]
    assert (first["user_id"], first["item_id"]) == ("196", "242")
    assert first["timestamp"] == _utc(881250949)
    categories = catalog.set_index("item_id")["category"]
    assert categories["302"] == "Crime"  # first token of "Crime Film-Noir Mystery Thriller"
    assert categories["377"] == "Children's"
    assert categories["465"] == "misc"  # rated but not in the .item file
    assert set(catalog["brand"]) == {"unknown"}
    assert set(events["price"]) == {2.5}
    # 881251300 -> 881260000 is a pause of more than 30 minutes
    assert _sessions_of(events, "196") == [["242", "302", "377"], ["51"]]


def test_recbole_inter_file_with_column_map(tmp_path: Path) -> None:
    inter = tmp_path / "shop.inter"
    inter.write_text(
        "session:token\tuid:token\tiid:token\tts:float\n"
        "s1\ta\tx\t1700000000.5\n"
        "s1\ta\ty\t1700000060\n"
        "s2\tb\tx\t1700000100\n"
    )
    cfg = IngestConfig(column_map={"user_id": "uid", "item_id": "iid", "timestamp": "ts"})
    events, catalog = _load("recbole", inter, cfg)
    assert list(events["user_id"]) == ["a", "a", "b"]
    assert events["timestamp"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20.5", tz="UTC")
    assert sorted(catalog["item_id"]) == ["x", "y"]
    assert set(catalog["category"]) == {"unknown"}


def test_movielens_100k_with_genres() -> None:
    events, catalog = _load("movielens", FIXTURES / "movielens" / "ml-100k")
    assert len(events) == 24
    assert set(events["event_type"]) == {"view"}
    assert events.iloc[0]["timestamp"] == _utc(881250949)
    categories = catalog.set_index("item_id")["category"]
    assert categories["51"] == "Drama"  # Drama, Romance, War, Western: the first flagged
    assert categories["29"] == "Action"
    assert categories["999"] == "misc"  # listed without any genre
    assert categories["451"] == "misc"  # rated, not listed
    assert "999" in categories.index  # the catalog keeps listed items nobody rated


def test_movielens_1m_ratings_dat() -> None:
    events, catalog = _load("movielens", FIXTURES / "movielens" / "ml-1m" / "ratings.dat")
    assert len(events) == 20
    categories = catalog.set_index("item_id")["category"]
    assert categories["661"] == "Animation"
    assert categories["1193"] == "Drama"
    # 978300275 .. 978302109 is one sitting (no pause over 30 minutes); 978824291 another day
    assert _sessions_of(events, "1") == [["3408", "1193", "914", "661"], ["2355"]]


def test_movielens_latest_csv(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,20,5.0,964982931\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"Heat, (1995)",Action|Crime\n20,Nothing,(no genres listed)\n'
    )
    events, catalog = _load("movielens", tmp_path)
    assert list(events["item_id"]) == ["10", "20"]
    assert catalog.set_index("item_id")["category"].to_dict() == {"10": "Action", "20": "misc"}


def test_retailrocket_events_and_categories() -> None:
    events, catalog = _load("retailrocket", FIXTURES / "retailrocket")
    assert len(events) == 22
    types = events.groupby("event_type").size().to_dict()
    assert types == {"view": 19, "add_to_cart": 2, "purchase": 1}
    funnel = events[events["user_id"] == "257597"].sort_values("timestamp")
    assert list(funnel["event_type"]) == ["view", "add_to_cart", "purchase"]
    assert funnel["session_id"].nunique() == 1
    assert funnel["timestamp"].iloc[0] == pd.Timestamp(1433221332117, unit="ms", tz="UTC")
    categories = catalog.set_index("item_id")["category"]
    assert categories["355908"] == "1339"  # the later of its two categoryid values
    assert categories["22556"] == "491"
    assert categories["443030"] == "misc"  # only a non-category property


def test_table_csv_with_column_map() -> None:
    cfg = IngestConfig(source="table", column_map=CLICKS_MAP, default_price=3.0)
    events, catalog = _load("table", FIXTURES / "table" / "clicks.csv", cfg)
    assert len(events) == 12
    assert events["event_type"].value_counts().to_dict() == {
        "view": 8,
        "add_to_cart": 2,
        "purchase": 2,
    }
    by_id = events.set_index("event_id")
    assert by_id.loc["e000000005", "price"] == 3.0  # empty amount
    assert by_id.loc["e000000007", "category"] == "unknown"  # empty department
    assert by_id.loc["e000000000", "timestamp"] == pd.Timestamp("2026-11-20 08:00", tz="UTC")
    items = catalog.set_index("item_id")
    assert items.loc["A-1", "brand"] == "acme"
    assert items.loc["B-7", "brand"] == "unknown"
    assert items.loc["A-1", "price"] == 18.99  # the latest price seen
    assert _sessions_of(events, "alice") == [["A-1", "A-2", "A-2", "A-2"], ["B-7", "B-8"]]
    # a session may run past midnight
    assert _sessions_of(events, "carol") == [["B-7", "B-7", "A-1"]]


def test_table_csv_with_canonical_names_and_epoch_seconds() -> None:
    events, catalog = _load("table", FIXTURES / "table" / "minimal.csv")
    assert list(events["event_id"]) == [f"e{n:09d}" for n in range(6)]
    assert events["timestamp"].iloc[0] == _utc(1763625600)
    assert set(events["event_type"]) == {"view"}
    assert set(events["category"]) == {"misc"}
    assert set(catalog["price"]) == {2.5}
    assert _sessions_of(events, "u1") == [["i1", "i2"], ["i3"]]


def test_table_parquet_with_datetimes_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    frame = pd.DataFrame(
        {
            "event_id": ["x2", "x1", "x3"],
            "user_id": ["a", "a", "b"],
            "item_id": ["p", "q", "p"],
            "session_id": ["s1", "s1", "s9"],
            "timestamp": pd.to_datetime(
                ["2026-01-01 10:00", "2026-01-01 09:00", "2026-01-02 00:00"]
            ),
            "price": [1.5, 2.0, 1.5],
        }
    )
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    events, _ = _load("table", path)
    assert list(events["event_id"]) == ["x2", "x1", "x3"]
    assert list(events["session_id"]) == ["s1", "s1", "s9"]
    assert events["timestamp"].iloc[0] == pd.Timestamp("2026-01-01 10:00", tz="UTC")


def test_table_epoch_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "ms.csv"
    path.write_text("user_id,item_id,timestamp\na,p,1763625600123\n")
    events, _ = _load("table", path)
    assert events["timestamp"].iloc[0] == pd.Timestamp(1763625600123, unit="ms", tz="UTC")


def test_event_ids_follow_file_rows_so_appending_keeps_them(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "table" / "minimal.csv", tmp_path / "log.csv")
    before, _ = _load("table", tmp_path / "log.csv")
    with open(tmp_path / "log.csv", "a") as handle:
        handle.write("u9,i1,1763600000\n")
    after, _ = _load("table", tmp_path / "log.csv")
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)


# ---------------------------------------------------------------- bad inputs


def test_unknown_kind() -> None:
    with pytest.raises(InputError, match="unknown source kind 'kafka'; known kinds: synthetic"):
        load_source("kafka", FIXTURES, DEFAULTS)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"movielens source .*nowhere does not exist"):
        load_source("movielens", tmp_path / "nowhere", DEFAULTS)


def test_synthetic_missing_file(tmp_path: Path) -> None:
    write_parquet(tmp_path / "events.parquet", _tiny_source()[0])
    with pytest.raises(InputError, match=r"synthetic catalog not found: .*catalog\.parquet"):
        load_source("synthetic", tmp_path, DEFAULTS)


def test_synthetic_empty_file(tmp_path: Path) -> None:
    (tmp_path / "events.parquet").write_bytes(b"")
    with pytest.raises(
        InputError, match=r"synthetic events .*events\.parquet is empty \(0 bytes\)"
    ):
        load_source("synthetic", tmp_path, DEFAULTS)


def test_synthetic_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "events.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "catalog.parquet").write_bytes(b"")
    with pytest.raises(
        InputError, match=r"synthetic events .*events\.parquet is not a readable Parquet file"
    ):
        load_source("synthetic", tmp_path, DEFAULTS)


def test_synthetic_missing_column(tmp_path: Path) -> None:
    events, catalog = _tiny_source()
    write_parquet(tmp_path / "events.parquet", events.drop_columns(["price"]))
    write_parquet(tmp_path / "catalog.parquet", catalog)
    with pytest.raises(InputError, match=r"events\.parquet lacks the columns \['price'\]"):
        load_source("synthetic", tmp_path, DEFAULTS)


def test_synthetic_column_of_another_type(tmp_path: Path) -> None:
    events, catalog = _tiny_source()
    index = events.schema.get_field_index("price")
    as_text = pa.array(["cheap"] * events.num_rows, pa.string())
    write_parquet(tmp_path / "events.parquet", events.set_column(index, "price", as_text))
    write_parquet(tmp_path / "catalog.parquet", catalog)
    with pytest.raises(InputError, match=r"events\.parquet does not match the canonical schema"):
        load_source("synthetic", tmp_path, DEFAULTS)


def test_recbole_folder_without_inter(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"exactly one .inter file, found 0"):
        load_source("recbole", tmp_path, DEFAULTS)


def test_recbole_header_without_types(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_text("user_id\titem_id\ttimestamp\n1\t2\t3\n")
    with pytest.raises(InputError, match="header must be tab-separated name:type fields"):
        load_source("recbole", tmp_path, DEFAULTS)


def test_recbole_without_timestamps(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(InputError, match=r"x.inter has no column 'timestamp'"):
        load_source("recbole", tmp_path, DEFAULTS)


def test_recbole_bad_timestamp(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\tyesterday\n"
    )
    with pytest.raises(InputError, match=r"1 timestamps are not numbers, e.g. 'yesterday'"):
        load_source("recbole", tmp_path, DEFAULTS)


def test_movielens_folder_without_ratings(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"has none of u.data, ratings.dat, ratings.csv"):
        load_source("movielens", tmp_path, DEFAULTS)


def test_movielens_malformed_ratings_dat(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n1::11\n")
    with pytest.raises(InputError, match="expected 4 '::'-separated fields"):
        load_source("movielens", tmp_path, DEFAULTS)


def test_movielens_malformed_u_data(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("196\t242\t3\n")
    with pytest.raises(InputError, match="expected 4 tab-separated fields"):
        load_source("movielens", tmp_path, DEFAULTS)


def test_movielens_empty_ratings(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("")
    with pytest.raises(InputError, match=r"u.data is empty"):
        load_source("movielens", tmp_path, DEFAULTS)


def test_retailrocket_unknown_event_type(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        "timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,view,2,\n"
        "1433221332118,1,wishlist,2,\n"
    )
    with pytest.raises(InputError, match="unknown event types 'wishlist'; expected one of"):
        load_source("retailrocket", tmp_path, DEFAULTS)


def test_retailrocket_missing_column(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text("timestamp,event,itemid\n1433221332117,view,2\n")
    with pytest.raises(InputError, match=r"events.csv has no column 'visitorid'"):
        load_source("retailrocket", tmp_path, DEFAULTS)


def test_retailrocket_malformed_item_properties(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "retailrocket" / "events.csv", tmp_path / "events.csv")
    (tmp_path / "item_properties_part1.csv").write_text("timestamp,itemid,value\n1,2,3\n")
    with pytest.raises(InputError, match=r"item_properties_part1.csv has no column 'property'"):
        load_source("retailrocket", tmp_path, DEFAULTS)


def test_retailrocket_missing_events_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"RetailRocket events .*events.csv does not exist"):
        load_source("retailrocket", tmp_path, DEFAULTS)


def test_table_mapped_column_not_in_file() -> None:
    cfg = IngestConfig(column_map={"timestamp": "when"})
    with pytest.raises(InputError, match=r"mapped columns not in the file: timestamp -> 'when'"):
        load_source("table", FIXTURES / "table" / "minimal.csv", cfg)


def test_table_unknown_canonical_column() -> None:
    cfg = IngestConfig(column_map={"when": "timestamp"})
    with pytest.raises(InputError, match="unknown canonical columns 'when'"):
        load_source("table", FIXTURES / "table" / "minimal.csv", cfg)


def test_table_without_required_column() -> None:
    with pytest.raises(InputError, match=r"has no column 'item_id', 'timestamp'; map it"):
        load_source(
            "table",
            FIXTURES / "table" / "clicks.csv",
            IngestConfig(column_map={"user_id": "visitor"}),
        )


def test_table_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "log.parquet").write_bytes(b"PAR1 but nothing else")
    with pytest.raises(
        InputError, match=r"table source .*log\.parquet is not a readable Parquet file"
    ):
        load_source("table", tmp_path / "log.parquet", DEFAULTS)


def test_table_unsupported_file_type(tmp_path: Path) -> None:
    (tmp_path / "log.json").write_text("[]")
    with pytest.raises(InputError, match=r"unsupported file type '.json'"):
        load_source("table", tmp_path / "log.json", DEFAULTS)


def test_table_unparseable_timestamps(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\na,p,2026-01-01\nb,q,soon\n")
    with pytest.raises(InputError, match="cannot parse timestamps"):
        load_source("table", tmp_path / "log.csv", DEFAULTS)


def test_table_rows_without_user(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\na,p,1763625600\n,q,1763625601\n")
    with pytest.raises(InputError, match="1 events have no user_id"):
        load_source("table", tmp_path / "log.csv", DEFAULTS)


def test_table_unparseable_csv(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text('user_id,item_id,timestamp\na,"p,1763625600\n')
    with pytest.raises(InputError, match=r"cannot parse table .*log.csv"):
        load_source("table", tmp_path / "log.csv", DEFAULTS)
