"""The synthetic shop's traffic as Arrow tables: ``synthesize`` and the ids it writes.

Ids are fixed-width ASCII (``e<day>-<n>``, ``u<n>``, ``i<n>``, ``s<day>-<n>``, ``c<n>``,
``b<n>``), assembled from preformatted byte tables with numpy so that millions of them cost no
Python loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.core.params import DriftConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA, EVENT_TYPES
from pipelines.data.synthetic.presets import SyntheticPreset
from pipelines.data.synthetic.shop import Shop, build_shop
from pipelines.data.synthetic.simulation import EPOCH, US_PER_DAY, simulate_day

log = logging.getLogger("recflow.synthetic")

_CHUNK_ROWS = 1 << 22


def _number_table(count: int, digits: int, prefix: str = "") -> np.ndarray:
    """Rows of ASCII text ``prefix`` + the numbers ``0 .. count-1`` zero-padded to ``digits``."""
    table = np.empty((max(count, 1), len(prefix) + digits), dtype=np.uint8)
    table[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    rest = np.arange(max(count, 1))
    for column in range(table.shape[1] - 1, len(prefix) - 1, -1):
        table[:, column] = 48 + rest % 10
        rest //= 10
    if rest.any():
        raise ValueError(f"{count - 1} does not fit in {digits} digits")
    return table


def _text_table(values: Sequence[str]) -> np.ndarray:
    """Rows of ASCII text, one per value; the values must all have the same length."""
    return np.array([list(v.encode("ascii")) for v in values], dtype=np.uint8)


def _ascii_ids(parts: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> pa.ChunkedArray:
    """Fixed-width ASCII strings assembled from rows of preformatted text tables.

    String ``i`` is the concatenation, over ``parts = [(codes, table), ...]``, of row
    ``codes[i]`` of each table (a uint8 matrix). Formatting millions of ids one Python string
    at a time would dominate the run time; the bytes are gathered with numpy, one opaque
    record per row, and handed to Arrow as a string array instead.
    """
    layout = np.dtype([(f"f{k}", f"V{table.shape[1]}") for k, (_, table) in enumerate(parts)])
    packed = [np.ascontiguousarray(table).view(f"V{table.shape[1]}").ravel() for _, table in parts]
    chunks = []
    for lo in range(0, max(n, 1), _CHUNK_ROWS):
        hi = min(n, lo + _CHUNK_ROWS)
        if len(parts) == 1:
            rows = packed[0][parts[0][0][lo:hi]]
        else:
            rows = np.empty(hi - lo, dtype=layout)
            for k, (codes, _) in enumerate(parts):
                rows[f"f{k}"] = packed[k][codes[lo:hi]]
        offsets = np.arange(0, (hi - lo + 1) * layout.itemsize, layout.itemsize, dtype=np.int32)
        chunks.append(
            pa.StringArray.from_buffers(hi - lo, pa.py_buffer(offsets), pa.py_buffer(rows))
        )
    return pa.chunked_array(chunks, type=pa.string())


def _numeric(arrow_type: pa.DataType, values: np.ndarray) -> pa.Array:
    """Wrap a numpy array's buffer as an Arrow array (no conversion: it must match the type)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _coded_strings(values: Sequence[str], codes: np.ndarray) -> pa.ChunkedArray:
    """Strings ``values[codes[i]]``, decoded from a dictionary array by Arrow."""
    encoded = [v.encode("ascii") for v in values]
    offsets = np.cumsum([0] + [len(v) for v in encoded], dtype=np.int32)
    # built from buffers: pa.array() on Python objects would import pandas (seconds)
    dictionary = pa.StringArray.from_buffers(
        len(values), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))
    )
    codes = np.ascontiguousarray(codes, dtype=np.int8)
    chunks = []
    for lo in range(0, max(len(codes), 1), _CHUNK_ROWS):
        part = codes[lo : lo + _CHUNK_ROWS]
        indices = pa.Array.from_buffers(pa.int8(), len(part), [None, pa.py_buffer(part)])
        chunks.append(pa.DictionaryArray.from_arrays(indices, dictionary).dictionary_decode())
    return pa.chunked_array(chunks, type=pa.string())


@dataclass(frozen=True)
class _Window:
    """The simulated days of a window, in event-id order, before they become tables."""

    shop: Shop
    simulated: list[dt.date]
    sizes: list[int]
    max_sessions: int
    timestamp: np.ndarray
    day_index: np.ndarray
    counter: np.ndarray
    kind: np.ndarray
    item: np.ndarray
    user: np.ndarray
    session: np.ndarray
    previous_view: np.ndarray
    mission: np.ndarray


def _simulate_window(
    preset: SyntheticPreset, seed: int, end_date: dt.date, days: int, drift: DriftConfig
) -> _Window:
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    seed = int(seed) % 2**63
    shop = build_shop(preset, seed, drift)
    first_day = end_date - dt.timedelta(days=days - 1)
    window_lo = (first_day - EPOCH).days * US_PER_DAY
    window_hi = (end_date - EPOCH).days * US_PER_DAY + US_PER_DAY

    # the day before the window is simulated too, for the sessions that run past its midnight
    simulated = [first_day + dt.timedelta(days=i) for i in range(-1, days)]
    day_events = [simulate_day(shop, preset, seed, day, drift) for day in simulated]
    sizes = [len(d.timestamp) for d in day_events]
    max_sessions = max(int(d.session.max(initial=0)) + 1 for d in day_events)

    timestamp = np.concatenate([d.timestamp for d in day_events])
    # Days are concatenated in date order and sorted inside, so a stable sort by time breaks
    # ties by (day, counter): exactly the order of the fixed-width event ids.
    order = np.argsort(timestamp, kind="stable")
    timestamp = timestamp[order]
    inside = (timestamp >= window_lo) & (timestamp < window_hi)
    order, timestamp = order[inside], timestamp[inside]
    return _Window(
        shop=shop,
        simulated=simulated,
        sizes=sizes,
        max_sessions=max_sessions,
        timestamp=timestamp,
        day_index=np.repeat(np.arange(len(simulated), dtype=np.int32), sizes)[order],
        counter=np.concatenate([np.arange(s, dtype=np.int32) for s in sizes])[order],
        kind=np.concatenate([d.kind for d in day_events])[order],
        item=np.concatenate([d.item for d in day_events])[order],
        user=np.concatenate([d.user for d in day_events])[order],
        session=np.concatenate([d.session for d in day_events])[order],
        previous_view=np.concatenate([d.previous_view for d in day_events])[order],
        mission=np.concatenate([d.mission for d in day_events])[order],
    )


def _event_ids(window: _Window) -> pa.ChunkedArray:
    day_prefixes = _text_table([f"e{d:%Y%m%d}-" for d in window.simulated])
    numbers = _number_table(max(window.sizes), 8)
    parts = [(window.day_index, day_prefixes), (window.counter, numbers)]
    return _ascii_ids(parts, len(window.timestamp))


def synthesize(
    preset: SyntheticPreset,
    *,
    seed: int,
    end_date: dt.date,
    days: int,
    drift: DriftConfig,
) -> tuple[pa.Table, pa.Table]:
    """Simulate ``days`` days of shop traffic ending on ``end_date`` (inclusive).

    Args:
        preset: Size and behaviour of the shop.
        seed: Seed of every random draw; the same seed gives the same tables.
        end_date: Last day of the history; no event is later than its 23:59:59.999999 UTC.
        days: Number of days of history.
        drift: Shifts away from the reference traffic; all zero gives the reference.

    Returns:
        ``(events, catalog)`` matching ``EVENT_SCHEMA`` and ``CATALOG_SCHEMA``; events sorted
        by timestamp then event_id, catalog by item_id.

    Raises:
        ValueError: ``days`` is not positive.
    """
    window = _simulate_window(preset, seed, end_date, days, drift)
    shop, simulated, n = window.shop, window.simulated, len(window.timestamp)
    item, session = window.item, window.session
    items = _number_table(len(shop.item_category), shop.item_digits, "i")
    categories = _number_table(preset.n_categories, shop.category_digits, "c")
    session_prefixes = _text_table([f"s{d:%Y%m%d}-" for d in simulated])
    users = _number_table(preset.n_users, shop.user_digits, "u")
    events = pa.Table.from_arrays(
        [
            _event_ids(window),
            _ascii_ids([(window.user, users)], n),
            _ascii_ids([(item, items)], n),
            _ascii_ids(
                [
                    (window.day_index, session_prefixes),
                    (session, _number_table(window.max_sessions, 7)),
                ],
                n,
            ),
            _coded_strings(EVENT_TYPES, window.kind),
            _numeric(pa.timestamp("us", tz="UTC"), window.timestamp.astype(np.int64)),
            _numeric(pa.float64(), shop.item_price[item]),
            _ascii_ids([(shop.item_category[item], categories)], n),
        ],
        schema=EVENT_SCHEMA,
    )
    n_items = len(shop.item_category)
    brands = _number_table(preset.n_brands, shop.brand_digits, "b")
    catalog = pa.Table.from_arrays(
        [
            _ascii_ids([(np.arange(n_items), items)], n_items),
            _ascii_ids([(shop.item_category, categories)], n_items),
            _ascii_ids([(shop.item_brand, brands)], n_items),
            _numeric(pa.float64(), shop.item_price),
        ],
        schema=CATALOG_SCHEMA,
    )
    log.debug("synthesized %d events over %d days, %d catalog items", n, days, n_items)
    return events, catalog


def hidden_states(
    preset: SyntheticPreset,
    *,
    seed: int,
    end_date: dt.date,
    days: int,
    drift: DriftConfig,
) -> tuple[Shop, pa.Table]:
    """The generator's hidden state behind each event ``synthesize`` writes (for the oracle).

    Never part of the event log: the same simulation as :func:`synthesize` (same arguments, same
    events), returned as the shop and, per event in the same order, ``event_id``, ``user`` and
    ``item`` (numbers in the shop), ``kind`` (index into ``EVENT_TYPES``) and
    ``previous_view`` (the item the walk goes on from at a view: the session's view before it,
    or the one before a staple detour; -1 at a session's start and for add_to_cart and purchase
    events) and ``mission`` (the mission a view's session follows; -1: none, and for add_to_cart
    and purchase events).
    """
    window = _simulate_window(preset, seed, end_date, days, drift)
    table = pa.table(
        {
            "event_id": _event_ids(window),
            "user": window.user.astype(np.int32),
            "item": window.item.astype(np.int32),
            "kind": window.kind.astype(np.int8),
            "previous_view": window.previous_view.astype(np.int32),
            "mission": window.mission.astype(np.int32),
        }
    )
    return window.shop, table
