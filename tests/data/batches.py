"""Valid event batches built quickly with numpy, for the validation tests and benchmark.

They follow ``pipelines/schema.py`` exactly and pass the default suite; tests corrupt copies.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.io import sha256_file
from pipelines.core.schema import (
    CATALOG_FILE,
    CATALOG_SCHEMA,
    EVENT_SCHEMA,
    EVENT_TYPES,
    EVENTS_FILE,
)

_MICROS_PER_DAY = 86_400 * 1_000_000


def _ids(prefix: str, count: int) -> pa.Array:
    width = len(str(max(count - 1, 0)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(count)], pa.string())


def make_batch(
    rows: int,
    logical_date: dt.date,
    window_days: int = 28,
    seed: int = 0,
    *,
    users: int | None = None,
    items: int | None = None,
    user_prefix: str = "u",
) -> tuple[pa.Table, pa.Table]:
    """Build a valid ``(events, catalog)`` pair.

    Args:
        rows: Number of events.
        logical_date: Last day of the batch window.
        window_days: Days the window covers.
        seed: RNG seed; the same arguments give the same tables.
        users: Distinct users (default: about 20 events each).
        items: Catalog size (default: about 50 events per item).
        user_prefix: Prefix of user ids, to make batches with disjoint users.

    Returns:
        The events (sorted by timestamp, then event id) and the catalog.
    """
    rng = np.random.default_rng(seed)
    n_users = users or max(rows // 20, 1)
    n_items = items or max(rows // 50, 1)
    item_ids = _ids("i", n_items)
    categories = pa.array([f"c{i % 17:02d}" for i in range(n_items)], pa.string())
    item_prices = np.round(rng.uniform(1.0, 500.0, n_items), 2)
    catalog = pa.Table.from_arrays(
        [
            item_ids,
            categories,
            pa.array([f"b{i % 11:02d}" for i in range(n_items)], pa.string()),
            pa.array(item_prices),
        ],
        schema=CATALOG_SCHEMA,
    )
    end = dt.datetime.combine(logical_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    end_us = int(end.timestamp() * 1_000_000)
    start_us = end_us - window_days * _MICROS_PER_DAY
    stamps = np.sort(rng.integers(start_us, end_us, rows, dtype=np.int64))
    user_of = pa.array(rng.integers(0, n_users, rows, dtype=np.int32))
    item_of = pa.array(rng.integers(0, n_items, rows, dtype=np.int32))
    type_of = pa.array(rng.choice(3, rows, p=[0.85, 0.1, 0.05]).astype(np.int32))
    events = pa.Table.from_arrays(
        [
            _ids("e", rows),
            pc.take(_ids(user_prefix, n_users), user_of),
            pc.take(item_ids, item_of),
            pc.take(
                _ids("s", max(rows // 8, 1)), pa.array(rng.integers(0, max(rows // 8, 1), rows))
            ),
            pc.take(pa.array(EVENT_TYPES, pa.string()), type_of),
            pa.array(stamps, pa.timestamp("us", tz="UTC")),
            pc.take(pa.array(item_prices), item_of),
            pc.take(categories, item_of),
        ],
        schema=EVENT_SCHEMA,
    )
    return events, catalog


def write_batch(
    folder: Path,
    events: pa.Table,
    catalog: pa.Table,
    logical_date: dt.date | None = None,
) -> Path:
    """Write a batch folder as ingest does: events, catalog and a manifest.

    Args:
        folder: The batch folder to create.
        events: Event table (may be corrupted on purpose).
        catalog: Catalog table.
        logical_date: Date recorded in the manifest.

    Returns:
        ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(events, folder / EVENTS_FILE)
    pq.write_table(catalog, folder / CATALOG_FILE)
    manifest = {
        "logical_date": logical_date.isoformat() if logical_date else None,
        "rows": events.num_rows,
        "sha256": {
            EVENTS_FILE: sha256_file(folder / EVENTS_FILE),
            CATALOG_FILE: sha256_file(folder / CATALOG_FILE),
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder
