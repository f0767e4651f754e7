"""Reference statistics of the training traffic, saved beside the prepared data.

Drift monitoring compares served traffic against these: item popularity, category mix,
session length, price distribution and event-type mix, plus a deterministic sample of
reference events for Evidently reports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.params import PrepareConfig, RunConfig

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
SAMPLE_SIZE = 100_000
SESSION_LENGTH_BINS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)


def _quantiles(values: np.ndarray, *, overwrite: bool = False) -> dict[str, float]:
    # overwrite lets numpy partition ``values`` in place (the same result, without a copy)
    points = (
        np.quantile(values, QUANTILES, overwrite_input=overwrite)
        if len(values)
        else np.zeros(len(QUANTILES))
    )
    return {
        f"p{round(q * 100):02d}": round(float(v), 6) for q, v in zip(QUANTILES, points, strict=True)
    }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of a count vector (0 = uniform, towards 1 = concentrated)."""
    if len(counts) == 0 or counts.sum() == 0:
        return 0.0
    ordered = np.sort(counts.astype(np.float64))
    n = len(ordered)
    cumulative = np.cumsum(ordered)
    return float((n + 1 - 2 * (cumulative / cumulative[-1]).sum()) / n)


def log_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """``bins + 1`` log-spaced histogram edges from the smallest to the largest positive value.

    Edges are rounded to 9 significant digits where that keeps them increasing, so that the
    edges written to ``reference.json`` are exactly the ones counted with (a price of 20 lands
    in the bin that starts at 20, not below a float edge of 20.000000000000004). The last bin
    is closed, so the largest value is counted.
    """
    positive = values > 0
    # min and max over a mask: no copy of the positive values
    found = bool(positive.any())
    low = float(values.min(where=positive, initial=np.inf)) if found else 1.0
    high = float(values.max(where=positive, initial=-np.inf)) if found else 1.0
    if high <= low:  # one distinct price: a narrow range around it
        high = low * 1.0001
    edges = np.geomspace(low, high, bins + 1)
    rounded = np.array([float(f"{edge:.9g}") for edge in edges])
    rounded[0], rounded[-1] = min(rounded[0], low), max(rounded[-1], high)
    return rounded if bool(np.all(np.diff(rounded) > 0)) else edges


def _shares(counts: pd.Series) -> dict[str, float]:
    total = counts.sum()
    ordered = counts.sort_index()
    return {str(key): round(float(value / total), 8) for key, value in ordered.items()}


def session_lengths(frame: pd.DataFrame) -> pd.Series:
    """Events per session, for each event's session."""
    return frame.groupby("session_id", sort=False)["event_id"].transform("size")


@dataclass(frozen=True)
class Traffic:
    """What the reference statistics are computed from: counts and one column of the traffic.

    Built from an ordered frame (:func:`traffic_of`) or gathered in one pass over the batch;
    every field but ``prices`` is order-free.

    Attributes:
        events: Events of the configured types.
        users: Distinct users among them.
        item_counts: Events per ``item_id`` (index), items with traffic only, any order.
        session_sizes: Events per session, any order.
        category_counts: Events per category (index).
        event_type_counts: Events per event type (index).
        prices: Every event's price, in the order of the ordered events (the mean and the
            standard deviation are float sums, so the order decides their last bits).
        first_event: Epoch seconds of the first event, ``None`` when there is none.
        last_event: Epoch seconds of the last event, ``None`` when there is none.
    """

    events: int
    users: int
    item_counts: pd.Series
    session_sizes: np.ndarray
    category_counts: pd.Series
    event_type_counts: pd.Series
    prices: np.ndarray
    first_event: int | None
    last_event: int | None


def traffic_of(frame: pd.DataFrame) -> Traffic:
    """The :class:`Traffic` of an ordered frame (``pipelines.data.preparation.ordered_events``)."""
    timestamps = frame["ts"].to_numpy() if "ts" in frame else np.array([], dtype=np.int64)
    return Traffic(
        events=len(frame),
        users=int(frame["user_id"].nunique()),
        item_counts=frame.groupby("item_id", sort=False).size(),
        session_sizes=frame.groupby("session_id", sort=False).size().to_numpy(),
        category_counts=frame["category"].value_counts(),
        event_type_counts=frame["event_type"].value_counts(),
        prices=frame["price"].to_numpy(dtype=np.float64),
        first_event=int(timestamps.min()) if len(timestamps) else None,
        last_event=int(timestamps.max()) if len(timestamps) else None,
    )


def reference_statistics(
    frame: pd.DataFrame, catalog: pd.DataFrame, cfg: PrepareConfig, run: RunConfig
) -> dict[str, Any]:
    """Reference statistics of the traffic in ``frame``, as a JSON-ready mapping.

    Args:
        frame: Events of the configured types
            (``pipelines.data.preparation.ordered_events``), before
            dedupe, user filtering or truncation: the traffic as it was served.
        catalog: The item catalog (its size is reported beside the items with traffic).
        cfg: ``price_bins`` sets the number of log-spaced price histogram bins.
        run: The logical date recorded with the statistics.

    Returns:
        Counts, the window of event times, item popularity (top 100, Gini, top 1%/10% shares),
        category and event-type mix, session length and price distributions.
    """
    return statistics(traffic_of(frame), len(catalog), cfg, run)


def statistics(
    traffic: Traffic,
    catalog_items: int,
    cfg: PrepareConfig,
    run: RunConfig,
    *,
    reorder_prices: bool = False,
) -> dict[str, Any]:
    """Reference statistics of ``traffic``, as :func:`reference_statistics` describes them.

    Args:
        traffic: The traffic's counts and prices.
        catalog_items: Items in the catalog.
        cfg: ``price_bins`` sets the number of log-spaced price histogram bins.
        run: The logical date recorded with the statistics.
        reorder_prices: ``traffic.prices`` may be reordered in place (no copy for the
            quantiles), for a caller that owns the array.
    """
    counts = traffic.item_counts.rename("n")
    ranked = counts.rename_axis("item_id").reset_index()
    ranked = ranked.sort_values(["n", "item_id"], ascending=[False, True])
    total = int(counts.sum())
    values = np.sort(counts.to_numpy())[::-1]

    def top_share(fraction: float) -> float:
        k = max(1, int(np.ceil(len(values) * fraction)))
        return round(float(values[:k].sum() / max(total, 1)), 6)

    per_session = traffic.session_sizes
    hist_edges = [*SESSION_LENGTH_BINS, max(int(per_session.max(initial=1)) + 1, 51)]
    session_hist, _ = np.histogram(per_session, bins=hist_edges)

    prices = traffic.prices
    price_edges = log_edges(prices, cfg.price_bins)
    price_hist, _ = np.histogram(prices, bins=price_edges)
    # the sums first: the quantiles may reorder the prices
    price_mean = round(float(prices.mean()) if len(prices) else 0.0, 6)
    price_std = round(float(prices.std()) if len(prices) else 0.0, 6)
    price_quantiles = _quantiles(prices, overwrite=reorder_prices)

    first, last = traffic.first_event, traffic.last_event
    return {
        "logical_date": run.logical_date.isoformat(),
        "window": {
            "first_event": _iso(first) if first is not None else None,
            "last_event": _iso(last) if last is not None else None,
        },
        "counts": {
            "events": traffic.events,
            "users": traffic.users,
            "items": len(counts),
            "catalog_items": catalog_items,
            "sessions": len(per_session),
        },
        "item_popularity": {
            "gini": round(gini(counts.to_numpy()), 6),
            "top_1pct_share": top_share(0.01),
            "top_10pct_share": top_share(0.10),
            "top_100": [
                {"item_id": str(row.item_id), "count": int(row.n), "share": round(row.n / total, 8)}
                for row in ranked.head(100).itertuples(index=False)
            ],
        },
        "category_mix": _shares(traffic.category_counts),
        "event_type_mix": _shares(traffic.event_type_counts),
        "session_length": {
            "mean": round(float(per_session.mean()) if len(per_session) else 0.0, 6),
            "quantiles": _quantiles(per_session),
            "histogram": {"edges": hist_edges, "counts": session_hist.tolist()},
        },
        "price": {
            "mean": price_mean,
            "std": price_std,
            "quantiles": price_quantiles,
            "histogram": {
                "edges": [float(edge) for edge in price_edges],
                "counts": price_hist.tolist(),
            },
        },
    }


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat()


def sample_rows(events: int, seed: int, size: int = SAMPLE_SIZE) -> np.ndarray:
    """Positions (increasing) of the reference sample among ``events`` ordered events.

    Args:
        events: Number of events.
        seed: Seed of the sample (the run's seed), so a rerun picks the same rows.
        size: Most rows to keep; smaller traffic is kept whole.
    """
    if events <= size:
        return np.arange(events, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(events, size=size, replace=False))


def popularity_ranks(item_counts: pd.Series) -> pd.Series:
    """Dense rank of each item's interaction count (1 = most popular), by ``item_id``."""
    return item_counts.rank(method="dense", ascending=False).astype(np.int32)


def sample_table(
    event_type: pd.Series | np.ndarray,
    category: pd.Series | np.ndarray,
    price: pd.Series | np.ndarray,
    item_popularity_rank: pd.Series | np.ndarray,
    session_length: pd.Series | np.ndarray,
) -> pa.Table:
    """The reference sample's table from its columns, in order (see :func:`reference_sample`)."""
    sample = pd.DataFrame(
        {
            "event_type": pd.Series(event_type).astype(str).to_numpy(),
            "category": pd.Series(category).astype(str).to_numpy(),
            "price": np.asarray(price, dtype=np.float64),
            "item_popularity_rank": np.asarray(item_popularity_rank, dtype=np.int32),
            "session_length": np.asarray(session_length, dtype=np.int32),
        }
    )
    return pa.Table.from_pandas(sample, preserve_index=False)


def reference_sample(frame: pd.DataFrame, seed: int, size: int = SAMPLE_SIZE) -> pa.Table:
    """A deterministic sample of reference events with the columns monitoring compares.

    Args:
        frame: Events of the configured types, as for ``reference_statistics``.
        seed: Seed of the sample (the run's seed), so a rerun picks the same rows.
        size: Most rows to keep; smaller traffic is kept whole.

    Returns:
        ``event_type``, ``category``, ``price``, ``item_popularity_rank`` (dense rank of the
        item's interaction count, 1 = most popular) and ``session_length`` (events in the
        event's session), in the order of ``frame``.
    """
    rows = sample_rows(len(frame), seed, size)
    picked = frame.iloc[rows]
    ranks = popularity_ranks(frame.groupby("item_id", sort=False).size())
    sessions = session_lengths(frame).iloc[rows]
    return sample_table(
        picked["event_type"],
        picked["category"],
        picked["price"],
        ranks.reindex(picked["item_id"]).to_numpy(),
        sessions,
    )


def item_popularity(frame: pd.DataFrame, catalog: pd.DataFrame) -> pa.Table:
    """Interactions per catalog item (0 for catalog items without any), by ``item_id``."""
    return popularity_table(frame.groupby("item_id").size(), catalog)


def popularity_table(item_counts: pd.Series, catalog: pd.DataFrame) -> pa.Table:
    """Interactions per catalog item from counts by ``item_id`` (see :func:`item_popularity`)."""
    ids = sorted(set(catalog["item_id"].astype(str)) | set(item_counts.index.astype(str)))
    values = item_counts.reindex(ids, fill_value=0).astype(np.int64)
    return pa.table({"item_id": pa.array(ids, pa.string()), "count": values.to_numpy()})
