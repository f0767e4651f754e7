"""The ``retailrocket`` source: the RetailRocket e-commerce data set.

``events.csv`` (``timestamp`` in ms, ``visitorid``, ``event``, ``itemid``, ``transactionid``);
``view``/``addtocart``/``transaction`` become ``view``/``add_to_cart``/``purchase``. The last
``categoryid`` in ``item_properties*.csv`` beside it, if any, is an item's category.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.params import IngestConfig
from pipelines.data.sources.canonical import (
    epoch_timestamps,
    read_csv,
    require_columns,
    to_canonical,
)


def _retailrocket_categories(folder: Path) -> pd.DataFrame | None:
    """Each item's latest ``categoryid`` from the ``item_properties*.csv`` files, if any."""
    files = sorted(folder.glob("item_properties*.csv"))
    if not files:
        return None
    parts = []
    for file in files:
        if file.stat().st_size == 0:
            raise InputError(f"item properties {file} is empty")
        # the real files hold ~20M rows of which few are categories: filter chunk by chunk
        try:
            with pd.read_csv(file, dtype=str, chunksize=1_000_000) as reader:
                for chunk in reader:
                    require_columns(chunk, ("timestamp", "itemid", "property", "value"), file)
                    parts.append(chunk[chunk["property"] == "categoryid"])
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
            raise InputError(f"cannot parse item properties {file}: {exc}") from exc
    found = pd.concat(parts, ignore_index=True)
    found["timestamp"] = pd.to_numeric(found["timestamp"], errors="coerce")
    latest = found.sort_values(["timestamp"], kind="stable").drop_duplicates("itemid", keep="last")
    return pd.DataFrame({"item_id": latest["itemid"], "category": latest["value"]})


def load_retailrocket(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """RetailRocket ``events.csv``: views, add-to-carts and transactions of visitors."""
    if path.is_dir():
        path = path / "events.csv"
    raw = read_csv(path, "RetailRocket events", dtype=str)
    require_columns(raw, ("timestamp", "visitorid", "event", "itemid"), path)
    events = pd.DataFrame(
        {
            "user_id": raw["visitorid"],
            "item_id": raw["itemid"],
            "timestamp": epoch_timestamps(raw["timestamp"], "ms", path),
            "event_type": raw["event"],
        }
    )
    return to_canonical(events, _retailrocket_categories(path.parent), cfg, path)
