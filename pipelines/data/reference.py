"""Reference statistics of the training traffic, saved beside the prepared data.

Drift monitoring compares served traffic against these: item popularity, category mix,
session length, price distribution and event-type mix, plus a deterministic sample of
reference events for Evidently reports.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.params import PrepareConfig, RunConfig

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
SAMPLE_SIZE = 100_000
SESSION_LENGTH_BINS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    points = np.quantile(values, QUANTILES) if len(values) else np.zeros(len(QUANTILES))
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
    positive = values[values > 0]
    low = float(positive.min()) if len(positive) else 1.0
    high = float(positive.max()) if len(positive) else 1.0
    if high <= low:  # one distinct price: a narrow range around it
        high = low * 1.0001
    edges = np.geomspace(low, high, bins + 1)
    rounded = np.array([float(f"{edge:.9g}") for edge in edges])
    rounded[0], rounded[-1] = min(rounded[0], low), max(rounded[-1], high)
    return rounded if bool(np.all(np.diff(rounded) > 0)) else edges


def _shares(series: pd.Series) -> dict[str, float]:
    counts = series.value_counts()
    total = counts.sum()
    ordered = counts.sort_index()
    return {str(key): round(float(value / total), 8) for key, value in ordered.items()}


def session_lengths(frame: pd.DataFrame) -> pd.Series:
    """Events per session, for each event's session."""
    return frame.groupby("session_id", sort=False)["event_id"].transform("size")


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
    counts = frame.groupby("item_id", sort=False).size().rename("n")
    ranked = counts.reset_index().sort_values(["n", "item_id"], ascending=[False, True])
    total = int(counts.sum())
    values = np.sort(counts.to_numpy())[::-1]

    def top_share(fraction: float) -> float:
        k = max(1, int(np.ceil(len(values) * fraction)))
        return round(float(values[:k].sum() / max(total, 1)), 6)

    per_session = frame.groupby("session_id", sort=False).size().to_numpy()
    hist_edges = [*SESSION_LENGTH_BINS, max(int(per_session.max(initial=1)) + 1, 51)]
    session_hist, _ = np.histogram(per_session, bins=hist_edges)

    prices = frame["price"].to_numpy(dtype=np.float64)
    price_edges = log_edges(prices, cfg.price_bins)
    price_hist, _ = np.histogram(prices, bins=price_edges)

    timestamps = frame["ts"].to_numpy() if "ts" in frame else np.array([], dtype=np.int64)
    return {
        "logical_date": run.logical_date.isoformat(),
        "window": {
            "first_event": _iso(timestamps.min()) if len(timestamps) else None,
            "last_event": _iso(timestamps.max()) if len(timestamps) else None,
        },
        "counts": {
            "events": len(frame),
            "users": int(frame["user_id"].nunique()),
            "items": len(counts),
            "catalog_items": len(catalog),
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
        "category_mix": _shares(frame["category"]),
        "event_type_mix": _shares(frame["event_type"]),
        "session_length": {
            "mean": round(float(per_session.mean()) if len(per_session) else 0.0, 6),
            "quantiles": _quantiles(per_session),
            "histogram": {"edges": hist_edges, "counts": session_hist.tolist()},
        },
        "price": {
            "mean": round(float(prices.mean()) if len(prices) else 0.0, 6),
            "std": round(float(prices.std()) if len(prices) else 0.0, 6),
            "quantiles": _quantiles(prices),
            "histogram": {
                "edges": [float(edge) for edge in price_edges],
                "counts": price_hist.tolist(),
            },
        },
    }


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat()


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
    counts = frame.groupby("item_id", sort=False)["event_id"].transform("size")
    ranks = counts.rank(method="dense", ascending=False).astype(np.int32)
    sample = pd.DataFrame(
        {
            "event_type": frame["event_type"].astype(str),
            "category": frame["category"].astype(str),
            "price": frame["price"].astype(np.float64),
            "item_popularity_rank": ranks,
            "session_length": session_lengths(frame).astype(np.int32),
        }
    )
    if len(sample) > size:
        rows = np.sort(np.random.default_rng(seed).choice(len(sample), size=size, replace=False))
        sample = sample.iloc[rows]
    return pa.Table.from_pandas(sample.reset_index(drop=True), preserve_index=False)


def item_popularity(frame: pd.DataFrame, catalog: pd.DataFrame) -> pa.Table:
    """Interactions per catalog item (0 for catalog items without any), by ``item_id``."""
    counts = frame.groupby("item_id").size()
    ids = sorted(set(catalog["item_id"].astype(str)) | set(counts.index.astype(str)))
    values = counts.reindex(ids, fill_value=0).astype(np.int64)
    return pa.table({"item_id": pa.array(ids, pa.string()), "count": values.to_numpy()})
