"""Fixtures of the monitoring tier: a tiny item table, hand-built request tables, and the tiny
prepared data and served model of the model and serving tiers (trained once per session)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.monitoring.requests import REQUEST_SCHEMA
from pipelines.serving.items import ItemTable
from tests.model.conftest import tiny_model, tiny_prepared
from tests.serving.conftest import served_folder

__all__ = ["make_items", "make_requests", "served_folder", "tiny_model", "tiny_prepared"]

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
EDGES = (0.5, 0.8, 0.95)


def make_items(
    ids: Sequence[str],
    categories: Sequence[str],
    prices: Sequence[float],
    counts: Sequence[int],
) -> ItemTable:
    """An item table of ``ids`` (indices 1..N in this order), as ``ItemTable.read`` builds one:
    most popular first (ties by id) on the shelf, each item's share of all ``counts``."""
    table_ids = np.array(["", *ids], dtype=object)
    table_categories = np.array(["", *categories], dtype=object)
    table_prices = np.array([np.nan, *prices], dtype=np.float64)
    count = np.array([0, *counts], dtype=np.float64)
    order = np.lexsort((np.array(ids, dtype=object).astype(str), -count[1:]))
    return ItemTable(
        ids=table_ids,
        categories=table_categories,
        prices=table_prices,
        index={item: i + 1 for i, item in enumerate(ids)},
        by_popularity=(order + 1).astype(np.int64),
        popularity_share=count / count.sum() if count.sum() else count,
    )


@pytest.fixture
def tiny_items() -> ItemTable:
    """Five items whose shares (0.5, 0.3, 0.15, 0.05, 0) put them in buckets b0, b1, b2, b3 and
    unseen for the edges 0.5, 0.8, 0.95; ``d`` has no price."""
    return make_items(
        ["a", "b", "c", "d", "e"],
        ["x", "x", "y", "y", "z"],
        [10.0, 20.0, 30.0, float("nan"), 50.0],
        [50, 30, 15, 5, 0],
    )


def make_requests(items: ItemTable, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A table of requests (``REQUEST_SCHEMA``) from short descriptions of each row.

    A row gives ``history`` (item ids the server knew, oldest first) and ``answer`` (item ids
    returned), and optionally ``unknown`` (dropped history items), ``time``, ``user``,
    ``version``, ``arm``, ``latency_ms``. Categories and prices come from ``items`` as the
    server logs them; an id ``items`` lacks gets category ``"?"`` and no price.
    """

    def category(item: str) -> str:
        index = items.index.get(item)
        return str(items.categories[index]) if index is not None else "?"

    def price(item: str) -> float | None:
        index = items.index.get(item)
        value = float(items.prices[index]) if index is not None else float("nan")
        return None if np.isnan(value) else value

    columns: dict[str, list[Any]] = {name: [] for name in REQUEST_SCHEMA.names}
    for i, row in enumerate(rows):
        history = list(row.get("history", ()))
        answer = list(row.get("answer", ()))
        columns["time"].append(row.get("time", T0 + dt.timedelta(seconds=i)))
        columns["user"].append(row.get("user", f"u{i}"))
        columns["model_version"].append(row.get("version", "v1"))
        columns["arm"].append(row.get("arm", "stable"))
        columns["history_items"].append(history)
        columns["history_categories"].append([category(x) for x in history])
        columns["history_prices"].append([price(x) for x in history])
        columns["items"].append(answer)
        columns["item_categories"].append([category(x) for x in answer])
        columns["latency_ms"].append(row.get("latency_ms", 5.0))
        columns["fallback"].append(bool(row.get("fallback", False)))
        columns["cache_hit"].append(bool(row.get("cache_hit", False)))
        columns["unknown_items"].append(int(row.get("unknown", 0)))
    return pa.table(columns, schema=REQUEST_SCHEMA)
