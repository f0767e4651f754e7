"""Features of hand-built requests, the popularity profile, item counts, and the request table
made from an events batch."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.core.errors import InputError
from pipelines.core.params import FEATURE_NAMES
from pipelines.monitoring.features import (
    FEATURE_SCHEMA,
    Profile,
    count_items,
    features_table,
    featurize,
    item_counts,
    popularity_buckets,
    unseen_share,
)
from pipelines.monitoring.requests import (
    BATCH_ARM,
    REQUEST_SCHEMA,
    conform,
    empty_requests,
    events_as_requests,
)
from pipelines.serving.items import ItemTable
from pipelines.serving.server.requestlog import Row, rows_table
from tests.monitoring.conftest import EDGES, T0, make_items, make_requests


@pytest.fixture
def profile(tiny_items: ItemTable) -> Profile:
    return Profile.from_items(tiny_items, EDGES)


def test_buckets_follow_the_cumulative_share_of_interactions(tiny_items: ItemTable) -> None:
    profile = Profile.from_items(tiny_items, EDGES)
    assert profile.bucket_names == ("b0", "b1", "b2", "b3", "unseen")
    assert profile.categories == ("x", "y", "z")
    ids = pa.array(["a", "b", "c", "d", "e", "never", None])
    assert profile.bucket_of(ids).to_pylist() == [
        "b0",
        "b1",
        "b2",
        "b3",
        "unseen",  # in the table, no interactions
        "unseen",  # not in the table
        None,
    ]


def test_ties_rank_by_item_id_and_one_edge_gives_two_buckets() -> None:
    # four equal items: the two first by id hold the first half
    buckets = popularity_buckets(np.array(["d", "c", "b", "a"]), np.array([1, 1, 1, 1]), (0.5,))
    assert buckets.tolist() == ["b1", "b1", "b0", "b0"]
    assert popularity_buckets(np.array(["a"]), np.array([0]), (0.5,)).tolist() == ["unseen"]


def test_featurize_computes_each_feature(tiny_items: ItemTable, profile: Profile) -> None:
    requests = make_requests(
        tiny_items,
        [
            {"history": ["a", "c", "b"], "unknown": 1, "answer": ["c", "a"]},
            {"history": [], "answer": []},  # cold start, nothing answered
            {"history": [], "unknown": 2, "answer": ["d"]},  # every history item unknown
            {"history": ["d", "e"], "answer": ["e"]},  # d has no price, e no interactions
            {"history": ["zz"], "answer": ["zz"]},  # an id the version does not know
            {"history": ["d"], "answer": ["b", "a"]},  # no price at all
        ],
    )
    frame = featurize(requests, profile)
    assert list(frame.columns) == list(FEATURE_NAMES)
    assert frame["history_length"].tolist() == [4, 0, 2, 2, 1, 1]
    assert frame["history_category"].tolist() == ["x", "none", "none", "z", "?", "y"]
    prices = frame["history_price"].tolist()
    assert prices[0] == pytest.approx(20.0)  # mean of 10, 30, 20
    assert math.isnan(prices[1]) and math.isnan(prices[2]) and math.isnan(prices[5])
    assert prices[3] == pytest.approx(50.0)  # the known price only
    assert math.isnan(prices[4])
    assert frame["history_popularity"].tolist() == ["b1", "none", "none", "unseen", "unseen", "b3"]
    assert frame["unknown_share"].tolist() == pytest.approx([0.25, 0.0, 1.0, 0.0, 0.0, 0.0])
    assert frame["top_category"].tolist() == ["y", "none", "y", "z", "?", "x"]
    assert frame["top_popularity"].tolist() == ["b2", "none", "b3", "unseen", "unseen", "b1"]
    assert frame.dtypes["history_length"] == np.int64
    assert frame.dtypes["history_price"] == np.float64
    assert frame.dtypes["unknown_share"] == np.float64


def test_featurize_reads_chunked_and_sliced_tables_by_their_offsets(
    tiny_items: ItemTable, profile: Profile
) -> None:
    rng = np.random.default_rng(3)
    ids = ["a", "b", "c", "d", "e", "zz"]
    rows = [
        {
            "history": list(rng.choice(ids, size=rng.integers(0, 5))),
            "answer": list(rng.choice(ids, size=rng.integers(0, 3))),
            "unknown": int(rng.integers(0, 2)),
        }
        for _ in range(40)
    ]
    whole = make_requests(tiny_items, rows)
    expected = featurize(whole, profile)
    chunked = pa.concat_tables([whole.slice(0, 13), whole.slice(13, 20), whole.slice(33)])
    assert chunked.column("history_items").num_chunks == 3
    pd.testing.assert_frame_equal(featurize(chunked, profile), expected)
    pd.testing.assert_frame_equal(
        featurize(whole.slice(7, 21), profile), expected.iloc[7:28].reset_index(drop=True)
    )


def test_featurize_of_no_rows_has_every_column(profile: Profile) -> None:
    frame = featurize(empty_requests(), profile)
    assert list(frame.columns) == list(FEATURE_NAMES) and len(frame) == 0
    assert features_table(frame).schema == FEATURE_SCHEMA


def test_featurize_refuses_a_table_without_the_request_columns(profile: Profile) -> None:
    with pytest.raises(InputError, match="history_items"):
        featurize(pa.table({"user": ["u"]}), profile)


def test_features_table_round_trips_the_frame(tiny_items: ItemTable, profile: Profile) -> None:
    frame = featurize(
        make_requests(tiny_items, [{"history": ["a"], "answer": ["b"]}, {"history": []}]),
        profile,
    )
    table = features_table(frame)
    assert table.schema == FEATURE_SCHEMA and tuple(table.column_names) == FEATURE_NAMES
    assert table.schema.metadata is None  # no pandas metadata: the same frame, the same bytes
    pd.testing.assert_frame_equal(table.to_pandas(), frame)


def test_item_counts_and_the_unseen_share(tiny_items: ItemTable, profile: Profile) -> None:
    requests = make_requests(
        tiny_items,
        [
            {"history": ["a", "b", "a"], "unknown": 1},
            {"history": ["e", "zz", "a"], "unknown": 2},
            {"history": []},
        ],
    )
    counts = item_counts(requests)
    assert counts.as_dict() == {"a": 3, "b": 1, "e": 1, "zz": 1}
    assert counts.ids.tolist() == ["a", "b", "e", "zz"]  # sorted
    assert counts.unknown == 3 and counts.total == 9
    # e (no interactions), zz (not in the table) and the 3 unknown: 5 of 9
    assert unseen_share(counts, profile) == pytest.approx(5 / 9)
    nothing = item_counts(empty_requests())
    assert nothing.total == 0 and math.isnan(unseen_share(nothing, profile))


def test_aligned_counts_cover_both_sides() -> None:
    mine = count_items(["b", "a", "b"], [1, 2, 3])
    theirs = count_items(["c", "a"], [4, 5], unknown=7)
    ids, left, right = mine.aligned(theirs)
    assert ids.tolist() == ["a", "b", "c"]
    assert left.tolist() == [2, 4, 0] and right.tolist() == [5, 0, 4]
    assert theirs.total == 16


def test_request_schema_is_the_request_logs(tiny_items: ItemTable) -> None:
    row = Row(
        time=T0.timestamp(),
        user="p",
        version="v1",
        arm="stable",
        history=np.array([1, 2]),
        items=np.array([3]),
        table=tiny_items,
        latency_ms=1.0,
        fallback=False,
        cache_hit=False,
        unknown_items=0,
    )
    logged = rows_table([row])
    assert logged.schema.remove_metadata() == REQUEST_SCHEMA
    assert conform(logged).equals(logged.replace_schema_metadata(None))


def test_conform_names_what_is_missing() -> None:
    with pytest.raises(InputError, match="unknown_items"):
        conform(empty_requests().drop_columns(["unknown_items"]), "the request log")


def _events(rows: list[tuple[str, str, str, int, str, float, str]]) -> pa.Table:
    """Events from (user, item, event_type, minute, event_id, price, category)."""
    return pa.table(
        {
            "event_id": [r[4] for r in rows],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "session_id": ["s"] * len(rows),
            "event_type": [r[2] for r in rows],
            "timestamp": pa.array(
                [T0 + dt.timedelta(minutes=r[3]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
            "price": [r[5] for r in rows],
            "category": [r[6] for r in rows],
        }
    )


def test_events_become_one_request_per_user(tiny_items: ItemTable, profile: Profile) -> None:
    events = _events(
        [
            ("u2", "c", "view", 5, "e9", 3.0, "cat-c"),
            ("u1", "c", "purchase", 9, "e5", 31.0, "cat-c"),  # u1's last step: not history
            ("u1", "a", "view", 1, "e1", 11.0, "cat-a"),
            ("u1", "q", "view", 8, "e4", 99.0, "cat-q"),  # unknown to the version
            ("u1", "a", "add_to_cart", 2, "e2", 11.0, "cat-a"),  # one step with the view of a
            ("u1", "b", "purchase", 3, "e3b", 21.0, "cat-b"),
            ("u1", "d", "view", 3, "e3d", 41.0, "cat-d"),  # same minute: view before purchase
            ("u1", "c", "view", 9, "e6", 31.0, "cat-c"),  # same step as the purchase of c
        ]
    )
    requests = events_as_requests(events.take([5, 0, 3, 2, 7, 1, 4, 6]), tiny_items, max_len=50)
    assert requests.schema == REQUEST_SCHEMA
    rows = requests.to_pylist()
    assert [r["user"] for r in rows] == ["u1", "u2"]
    u1, u2 = rows
    assert u1["history_items"] == ["a", "d", "b"]
    assert u1["history_categories"] == ["cat-a", "cat-d", "cat-b"]  # from the events
    assert u1["history_prices"] == [11.0, 41.0, 21.0]
    assert u1["unknown_items"] == 1
    assert u1["items"] == [] and u1["item_categories"] == []
    assert u1["time"] == T0 + dt.timedelta(minutes=9)
    assert (u1["arm"], u1["model_version"]) == (BATCH_ARM, "")
    assert u2["history_items"] == [] and u2["unknown_items"] == 0
    frame = featurize(requests, profile)
    assert frame["history_length"].tolist() == [4, 0]
    assert frame["top_category"].tolist() == ["none", "none"]
    assert frame["top_popularity"].tolist() == ["none", "none"]
    # the newest two steps before the last: b and q
    newest = events_as_requests(events, tiny_items, max_len=2).to_pylist()[0]
    assert newest["history_items"] == ["b"] and newest["unknown_items"] == 1


def test_events_refuse_unknown_event_types_and_missing_columns(tiny_items: ItemTable) -> None:
    events = _events([("u1", "a", "click", 1, "e1", 1.0, "x")])
    with pytest.raises(InputError, match="click"):
        events_as_requests(events, tiny_items, max_len=5)
    with pytest.raises(InputError, match="category"):
        events_as_requests(events.drop_columns(["category"]), tiny_items, max_len=5)
    assert events_as_requests(events.slice(0, 0), tiny_items, max_len=5).num_rows == 0


def test_profile_refuses_a_repeated_item() -> None:
    with pytest.raises(InputError, match="more than once"):
        Profile.from_counts(["a", "a"], [1, 2], ["x", "x"], EDGES)


def test_make_items_builds_what_the_reader_would(tiny_items: ItemTable) -> None:
    assert tiny_items.by_popularity.tolist() == [1, 2, 3, 4, 5]
    assert make_items(["b", "a"], ["x", "x"], [1.0, 1.0], [1, 1]).by_popularity.tolist() == [2, 1]
