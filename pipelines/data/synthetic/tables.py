"""The synthetic shop's traffic as Arrow tables: ``simulate`` (a day at a time), ``synthesize``
(all at once) and the ids they write.

Ids are fixed-width ASCII (``e<day>-<n>``, ``u<n>``, ``i<n>``, ``s<day>-<n>``, ``c<n>``,
``b<n>``), assembled from preformatted byte tables with numpy so that millions of them cost no
Python loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from pipelines.core.params import DriftConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA, EVENT_TYPES
from pipelines.data.synthetic.presets import SyntheticPreset
from pipelines.data.synthetic.shop import Shop, build_shop
from pipelines.data.synthetic.simulation import EPOCH, US_PER_DAY, Day, simulate_day

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
class _Part:
    """A run of the window's events in the file's order, as numpy arrays, before the ids.

    ``day_index`` is the position of the event's simulated day and ``counter`` its number in
    that day: together they make the event id. ``previous_view`` and ``mission`` are hidden
    state for the oracle, never written.
    """

    timestamp: np.ndarray
    day_index: np.ndarray
    counter: np.ndarray
    kind: np.ndarray
    item: np.ndarray
    user: np.ndarray
    session: np.ndarray
    previous_view: np.ndarray
    mission: np.ndarray

    @classmethod
    def of_day(cls, day: Day, index: int) -> _Part:
        n = len(day.timestamp)
        return cls(
            timestamp=day.timestamp,
            day_index=np.full(n, index, dtype=np.int32),
            counter=np.arange(n, dtype=np.int32),
            kind=day.kind,
            item=day.item,
            user=day.user,
            session=day.session,
            previous_view=day.previous_view,
            mission=day.mission,
        )

    @classmethod
    def concat(cls, parts: Sequence[_Part]) -> _Part:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in _FIELDS})

    def take(self, rows: np.ndarray | slice) -> _Part:
        """The rows ``rows`` (positions or a slice), copied so that the rest can be freed."""
        return _Part(**{f.name: np.array(getattr(self, f.name)[rows]) for f in _FIELDS})

    def __len__(self) -> int:
        return len(self.timestamp)


_FIELDS = fields(_Part)


class _Numbers:
    """Zero-padded numbers as rows of text, the table grown as larger numbers come."""

    def __init__(self, digits: int) -> None:
        self.digits = digits
        self._table = _number_table(0, digits)

    def covering(self, numbers: np.ndarray) -> np.ndarray:
        """A table with a row for every one of ``numbers`` (the same text whatever its size)."""
        needed = int(numbers.max(initial=0)) + 1
        if needed > len(self._table):
            grown = max(needed, min(2 * len(self._table), 10**self.digits))
            self._table = _number_table(grown, self.digits)
        return self._table


class _Ids:
    """The preformatted text every id of a window is assembled from."""

    def __init__(self, shop: Shop, preset: SyntheticPreset, simulated: Sequence[dt.date]) -> None:
        self.event_days = _text_table([f"e{d:%Y%m%d}-" for d in simulated])
        self.session_days = _text_table([f"s{d:%Y%m%d}-" for d in simulated])
        self.event_numbers = _Numbers(8)
        self.session_numbers = _Numbers(7)
        self.users = _number_table(preset.n_users, shop.user_digits, "u")
        self.items = _number_table(len(shop.item_category), shop.item_digits, "i")
        self.categories = _number_table(preset.n_categories, shop.category_digits, "c")

    def events(self, part: _Part) -> pa.ChunkedArray:
        numbers = self.event_numbers.covering(part.counter)
        return _ascii_ids([(part.day_index, self.event_days), (part.counter, numbers)], len(part))


@dataclass(frozen=True)
class EventChunk:
    """Events of the window that became final once ``day`` was simulated, in the file's order.

    Attributes:
        day: The simulated day; no later day can produce an event before the ones here.
        events: The events, matching ``EVENT_SCHEMA`` (may have no rows).
        users: Per event, the user's number in the shop (for counting users without the ids).
    """

    day: dt.date
    events: pa.Table
    users: np.ndarray


class Traffic:
    """The simulated traffic of a window, produced one day at a time in the file's order.

    The day before the window is simulated too, for the sessions that run past its midnight.
    """

    def __init__(
        self, preset: SyntheticPreset, seed: int, end_date: dt.date, days: int, drift: DriftConfig
    ) -> None:
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        self.preset, self.seed, self.drift = preset, int(seed) % 2**63, drift
        self.shop = build_shop(preset, self.seed, drift)
        first_day = end_date - dt.timedelta(days=days - 1)
        self.window_lo = (first_day - EPOCH).days * US_PER_DAY
        self.window_hi = (end_date - EPOCH).days * US_PER_DAY + US_PER_DAY
        self.simulated = [first_day + dt.timedelta(days=i) for i in range(-1, days)]

    def _parts(self) -> Iterator[tuple[dt.date, _Part]]:
        """Per simulated day, the window's events that became final, in event order.

        A day's sessions start on that day, so no later day has an event before its next
        midnight: once day ``d`` is simulated, every event before ``d + 1`` at 00:00 is final,
        and the events after it (sessions running past midnight) wait for the next days. The
        waiting events come first in each merge and the sort is stable, so ties break by
        (day, counter): exactly the order of a stable sort of all days at once, which is the
        order of the fixed-width event ids.
        """
        waiting: _Part | None = None
        for index, day in enumerate(self.simulated):
            fresh = _Part.of_day(
                simulate_day(self.shop, self.preset, self.seed, day, self.drift), index
            )
            if waiting is None or not len(waiting):
                merged = fresh
            else:
                merged = _Part.concat([waiting, fresh])
                merged = merged.take(np.argsort(merged.timestamp, kind="stable"))
            midnight = (day - EPOCH).days * US_PER_DAY + US_PER_DAY
            final = int(np.searchsorted(merged.timestamp, midnight, side="left"))
            lo, hi = np.searchsorted(merged.timestamp[:final], [self.window_lo, self.window_hi])
            waiting = merged.take(slice(final, None))
            yield day, merged.take(slice(int(lo), int(hi)))
        # the last day's midnight is the window's end: what still waits lies outside it

    def _whole(self) -> _Part:
        return _Part.concat([part for _, part in self._parts()])

    def _events(self, ids: _Ids, part: _Part) -> pa.Table:
        shop, n = self.shop, len(part)
        sessions = ids.session_numbers.covering(part.session)
        return pa.Table.from_arrays(
            [
                ids.events(part),
                _ascii_ids([(part.user, ids.users)], n),
                _ascii_ids([(part.item, ids.items)], n),
                _ascii_ids([(part.day_index, ids.session_days), (part.session, sessions)], n),
                _coded_strings(EVENT_TYPES, part.kind),
                _numeric(pa.timestamp("us", tz="UTC"), part.timestamp.astype(np.int64)),
                _numeric(pa.float64(), shop.item_price[part.item]),
                _ascii_ids([(shop.item_category[part.item], ids.categories)], n),
            ],
            schema=EVENT_SCHEMA,
        )

    def chunks(self) -> Iterator[EventChunk]:
        """The window's events, a chunk per simulated day, in the file's order."""
        ids = _Ids(self.shop, self.preset, self.simulated)
        for day, part in self._parts():
            yield EventChunk(day=day, events=self._events(ids, part), users=part.user)

    def events(self) -> pa.Table:
        """All the window's events in one table, in the file's order."""
        return self._events(_Ids(self.shop, self.preset, self.simulated), self._whole())

    def catalog(self) -> pa.Table:
        """The shop's catalog, matching ``CATALOG_SCHEMA``, sorted by item_id."""
        shop, preset = self.shop, self.preset
        n_items = len(shop.item_category)
        items = _number_table(n_items, shop.item_digits, "i")
        categories = _number_table(preset.n_categories, shop.category_digits, "c")
        brands = _number_table(preset.n_brands, shop.brand_digits, "b")
        return pa.Table.from_arrays(
            [
                _ascii_ids([(np.arange(n_items), items)], n_items),
                _ascii_ids([(shop.item_category, categories)], n_items),
                _ascii_ids([(shop.item_brand, brands)], n_items),
                _numeric(pa.float64(), shop.item_price),
            ],
            schema=CATALOG_SCHEMA,
        )

    def hidden_states(self) -> pa.Table:
        """Per event of :meth:`events`, in the same order, the generator's hidden state."""
        whole = self._whole()
        ids = _Ids(self.shop, self.preset, self.simulated)
        return pa.table(
            {
                "event_id": ids.events(whole),
                "user": whole.user.astype(np.int32),
                "item": whole.item.astype(np.int32),
                "kind": whole.kind.astype(np.int8),
                "previous_view": whole.previous_view.astype(np.int32),
                "mission": whole.mission.astype(np.int32),
            }
        )


def simulate(
    preset: SyntheticPreset,
    *,
    seed: int,
    end_date: dt.date,
    days: int,
    drift: DriftConfig,
) -> Traffic:
    """The traffic of ``days`` days ending on ``end_date`` (inclusive), simulated when read.

    Args:
        preset: Size and behaviour of the shop.
        seed: Seed of every random draw; the same seed gives the same events.
        end_date: Last day of the history; no event is later than its 23:59:59.999999 UTC.
        days: Number of days of history.
        drift: Shifts away from the reference traffic; all zero gives the reference.

    Returns:
        The shop drawn from the seed, and its traffic: :meth:`Traffic.chunks` a day at a
        time (bounded memory), :meth:`Traffic.events` all at once, :meth:`Traffic.catalog`.

    Raises:
        ValueError: ``days`` is not positive.
    """
    return Traffic(preset, seed, end_date, days, drift)


def synthesize(
    preset: SyntheticPreset,
    *,
    seed: int,
    end_date: dt.date,
    days: int,
    drift: DriftConfig,
) -> tuple[pa.Table, pa.Table]:
    """Simulate ``days`` days of shop traffic ending on ``end_date`` (inclusive), in memory.

    The same events as :func:`simulate` gives, as whole tables (for tests and small windows;
    the ``generate`` stage streams them instead).

    Returns:
        ``(events, catalog)`` matching ``EVENT_SCHEMA`` and ``CATALOG_SCHEMA``; events sorted
        by timestamp then event_id, catalog by item_id.

    Raises:
        ValueError: ``days`` is not positive.
    """
    traffic = simulate(preset, seed=seed, end_date=end_date, days=days, drift=drift)
    events, catalog = traffic.events(), traffic.catalog()
    log.debug(
        "synthesized %d events over %d days, %d catalog items",
        events.num_rows,
        days,
        catalog.num_rows,
    )
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
    and purchase events). Held in memory: meant for small presets.
    """
    traffic = simulate(preset, seed=seed, end_date=end_date, days=days, drift=drift)
    return traffic.shop, traffic.hidden_states()
