"""Reference statistics for drift monitoring, on a hand-built batch with known values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines.core.params import PrepareConfig, RunConfig
from pipelines.data.preparation import ordered_events
from pipelines.data.reference import (
    gini,
    item_popularity,
    log_edges,
    reference_sample,
    reference_statistics,
)

RUN = RunConfig(logical_date=dt.date(2026, 3, 10), seed=7)
START = dt.datetime(2026, 3, 9, 8, tzinfo=dt.UTC)

# item -> (interactions, category, price); 10 events in all
ITEMS = {
    "a": (4, "shoes", 10.0),
    "b": (3, "shoes", 20.0),
    "c": (2, "books", 40.0),
    "d": (1, "books", 80.0),
}
# sessions of 5, 3 and 2 events
SESSIONS = ["s1"] * 5 + ["s2"] * 3 + ["s3"] * 2
KINDS = ["view"] * 6 + ["add_to_cart"] * 3 + ["purchase"]


@pytest.fixture
def frame() -> pd.DataFrame:
    items = [item for item, (count, _, _) in ITEMS.items() for _ in range(count)]
    events = pd.DataFrame(
        {
            "event_id": [f"e{k:02d}" for k in range(10)],
            "user_id": ["u1"] * 5 + ["u2"] * 5,
            "item_id": items,
            "session_id": SESSIONS,
            "event_type": KINDS,
            "timestamp": [START + dt.timedelta(minutes=k) for k in range(10)],
            "price": [ITEMS[item][2] for item in items],
            "category": [ITEMS[item][1] for item in items],
        }
    )
    return ordered_events(events, PrepareConfig())


@pytest.fixture
def catalog() -> pd.DataFrame:
    rows = [(item, category, "b", price) for item, (_, category, price) in ITEMS.items()]
    rows.append(("e", "toys", "b", 5.0))  # in the catalog, never interacted with
    return pd.DataFrame(rows, columns=["item_id", "category", "brand", "price"])


def test_counts_and_window(frame: pd.DataFrame, catalog: pd.DataFrame) -> None:
    stats = reference_statistics(frame, catalog, PrepareConfig(), RUN)
    assert stats["counts"] == {
        "events": 10,
        "users": 2,
        "items": 4,
        "catalog_items": 5,
        "sessions": 3,
    }
    assert stats["logical_date"] == "2026-03-10"
    assert stats["window"] == {
        "first_event": "2026-03-09T08:00:00+00:00",
        "last_event": "2026-03-09T08:09:00+00:00",
    }


def test_item_popularity(frame: pd.DataFrame, catalog: pd.DataFrame) -> None:
    popularity = reference_statistics(frame, catalog, PrepareConfig(), RUN)["item_popularity"]
    assert [(row["item_id"], row["count"]) for row in popularity["top_100"]] == [
        ("a", 4),
        ("b", 3),
        ("c", 2),
        ("d", 1),
    ]
    assert [row["share"] for row in popularity["top_100"]] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    # mean absolute difference over all pairs: 20 / (2 * 4**2 * 2.5)
    assert popularity["gini"] == pytest.approx(0.25)
    # with 4 items, the top 1% and the top 10% are both the single most popular item
    assert popularity["top_1pct_share"] == pytest.approx(0.4)
    assert popularity["top_10pct_share"] == pytest.approx(0.4)


def test_mixes_sum_to_one(frame: pd.DataFrame, catalog: pd.DataFrame) -> None:
    stats = reference_statistics(frame, catalog, PrepareConfig(), RUN)
    assert stats["category_mix"] == pytest.approx({"books": 0.3, "shoes": 0.7})
    assert stats["event_type_mix"] == pytest.approx(
        {"add_to_cart": 0.3, "purchase": 0.1, "view": 0.6}
    )
    assert sum(stats["category_mix"].values()) == pytest.approx(1.0)


def test_session_length_distribution(frame: pd.DataFrame, catalog: pd.DataFrame) -> None:
    sessions = reference_statistics(frame, catalog, PrepareConfig(), RUN)["session_length"]
    assert sessions["mean"] == pytest.approx(10 / 3)
    assert sessions["quantiles"]["p50"] == pytest.approx(3.0)
    edges, counts = sessions["histogram"]["edges"], sessions["histogram"]["counts"]
    assert len(counts) == len(edges) - 1
    assert sum(counts) == 3
    # one session each of 2, 3 and 5 events
    hits = {edges[k]: n for k, n in enumerate(counts) if n}
    assert hits == {2: 1, 3: 1, 5: 1}


def test_price_distribution(frame: pd.DataFrame, catalog: pd.DataFrame) -> None:
    price = reference_statistics(frame, catalog, PrepareConfig(price_bins=3), RUN)["price"]
    prices = np.array([10.0] * 4 + [20.0] * 3 + [40.0] * 2 + [80.0])
    assert price["mean"] == pytest.approx(prices.mean())
    assert price["std"] == pytest.approx(prices.std())
    assert price["quantiles"]["p50"] == pytest.approx(np.median(prices))
    edges, counts = price["histogram"]["edges"], price["histogram"]["counts"]
    assert len(counts) == 3
    assert sum(counts) == 10  # every event, the most expensive included
    assert edges[0] == pytest.approx(10.0)
    assert edges[-1] == pytest.approx(80.0)
    # log-spaced: 10, 20, 40, 80
    assert edges == pytest.approx([10.0, 20.0, 40.0, 80.0])
    assert counts == [4, 3, 3]


def test_sample_columns_and_ranks(frame: pd.DataFrame) -> None:
    sample = reference_sample(frame, seed=RUN.seed).to_pandas()
    assert list(sample.columns) == [
        "event_type",
        "category",
        "price",
        "item_popularity_rank",
        "session_length",
    ]
    assert len(sample) == 10
    rank_of_price = dict(zip(sample["price"], sample["item_popularity_rank"], strict=True))
    assert rank_of_price == {10.0: 1, 20.0: 2, 40.0: 3, 80.0: 4}
    assert sorted(sample["session_length"]) == [2, 2, 3, 3, 3, 5, 5, 5, 5, 5]


def test_sample_is_seeded_and_bounded(frame: pd.DataFrame) -> None:
    first = reference_sample(frame, seed=1, size=5)
    assert first.num_rows == 5
    assert first.equals(reference_sample(frame, seed=1, size=5))
    draws = {tuple(reference_sample(frame, seed=s, size=5)["price"].to_pylist()) for s in range(5)}
    assert len(draws) > 1  # the seed decides which rows are kept


def test_item_popularity_covers_the_catalog(frame: pd.DataFrame, catalog: pd.DataFrame) -> None:
    table = item_popularity(frame, catalog)
    assert table.column_names == ["item_id", "count"]
    assert table.to_pylist() == [
        {"item_id": "a", "count": 4},
        {"item_id": "b", "count": 3},
        {"item_id": "c", "count": 2},
        {"item_id": "d", "count": 1},
        {"item_id": "e", "count": 0},
    ]


def test_gini_bounds() -> None:
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 100])) == pytest.approx(0.75)
    assert gini(np.array([], dtype=np.int64)) == 0.0


def test_log_edges_cover_every_value() -> None:
    prices = np.random.default_rng(0).lognormal(3.0, 1.5, size=2_000)
    edges = log_edges(prices, 1000)
    assert len(edges) == 1001 and bool(np.all(np.diff(edges) > 0))
    assert edges[0] <= prices.min() and edges[-1] >= prices.max()
    assert np.histogram(prices, bins=edges)[0].sum() == len(prices)


def test_log_edges_of_a_single_price() -> None:
    edges = log_edges(np.array([25.0, 25.0]), 4)
    assert len(edges) == 5 and bool(np.all(np.diff(edges) > 0))
    assert np.histogram(np.array([25.0, 25.0]), bins=edges)[0].tolist() == [2, 0, 0, 0]
