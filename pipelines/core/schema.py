"""The canonical event and catalog schemas every source is mapped to.

Events (one Parquet file per batch):

============  ==================  ==========================================
column        type                meaning
============  ==================  ==========================================
event_id      string, unique      identifier of the event
user_id       string              who acted
item_id       string              on which item
session_id    string              browsing session the event belongs to
event_type    string              one of ``view``, ``add_to_cart``, ``purchase``
timestamp     timestamp[us, UTC]  when it happened
price         float64, > 0        item price at the time of the event
category      string              item category at the time of the event
============  ==================  ==========================================

Item catalog: ``item_id`` (string, unique), ``category`` (string), ``brand`` (string),
``price`` (float64, > 0).
"""

from __future__ import annotations

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "purchase")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
    ]
)

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("brand", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
    ]
)

EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)
CATALOG_COLUMNS: tuple[str, ...] = tuple(CATALOG_SCHEMA.names)

EVENTS_FILE = "events.parquet"
CATALOG_FILE = "catalog.parquet"
