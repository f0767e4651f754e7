"""The features the monitor compares: a few numbers and words per request, and item counts.

A request (one row of the table of :mod:`pipelines.monitoring.requests`) becomes the
``FEATURE_NAMES`` columns:

==================  =========================================================================
feature             meaning
==================  =========================================================================
history_length      items in the history, known and unknown to the model
history_category    category of the newest history item ("none": empty history)
history_price       mean price of the history's known items (NaN: none has a price)
history_popularity  popularity bucket of the newest history item ("none": empty history)
unknown_share       share of the history the model did not know (0 for an empty history)
top_category        category of the first answered item ("none": nothing answered)
top_popularity      popularity bucket of the first answered item ("none": nothing answered)
==================  =========================================================================

A popularity bucket comes from the version's :class:`Profile`: items ranked by their share of
the interactions the version was trained on (most first, ties by item id); an item is in
bucket ``b0`` (the head) while the items ranked before it hold less than the first edge of
``monitor.popularity_buckets`` together, ``b1`` before the second edge, and so on to ``bN``;
an item without interactions, or one the version does not know, is ``unseen``.

Every step is a pass over Arrow or numpy arrays (list offsets, ``take``, ``index_in``), never
a Python loop over rows: a day of traffic is millions of requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core.params import FEATURE_NAMES
from pipelines.serving.items import ItemTable

if TYPE_CHECKING:
    import pandas as pd

NONE = "none"  # the category or bucket of an empty history or answer
UNSEEN = "unseen"  # the bucket of an item without interactions, or unknown to the version
# tolerance on cumulative shares, so that four items of a quarter each split at exactly 0.5
_EPS = 1e-12
# history items per batch that item_counts groups
_COUNT_BATCH = 1 << 20

# the stored and compared type of each feature
FEATURE_SCHEMA = pa.schema(
    [
        pa.field("history_length", pa.int64()),
        pa.field("history_category", pa.string()),
        pa.field("history_price", pa.float64()),
        pa.field("history_popularity", pa.string()),
        pa.field("unknown_share", pa.float64()),
        pa.field("top_category", pa.string()),
        pa.field("top_popularity", pa.string()),
    ]
)
# the features of what the model answered: absent (all "none") for an events batch
PREDICTION_FEATURES: tuple[str, ...] = ("top_category", "top_popularity")


def bucket_names(edges: Sequence[float]) -> tuple[str, ...]:
    """The bucket words of ``edges``: ``b0`` (head) .. ``bN``, then ``unseen``."""
    return (*(f"b{i}" for i in range(len(edges) + 1)), UNSEEN)


def popularity_buckets(ids: np.ndarray, weights: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The bucket word of each item of ``ids`` by its interaction ``weights`` (counts or shares).

    Args:
        ids: Item ids.
        weights: Interactions of each item (any non-negative scale).
        edges: Increasing cumulative shares strictly between 0 and 1.

    Returns:
        An object array of bucket words aligned with ``ids``.
    """
    ids = np.asarray(ids, dtype=object)
    weights = np.asarray(weights, dtype=np.float64)
    names = np.array(bucket_names(edges), dtype=object)
    out = np.full(len(ids), UNSEEN, dtype=object)
    total = float(weights.sum())
    if not len(ids) or total <= 0:
        return out
    order = np.lexsort((ids.astype(str), -weights))
    share = weights[order] / total
    before = np.cumsum(share) - share  # what the items ranked before each one hold
    code = np.searchsorted(np.asarray(edges, dtype=np.float64), before + _EPS, side="right")
    ranked = names[code]
    ranked[share <= 0] = UNSEEN
    out[order] = ranked
    return out


@dataclass(frozen=True, eq=False)
class Profile:
    """What a version's reference says about items: the popularity bucket of each item id.

    Attributes:
        edges: The cumulative shares ending the buckets (``monitor.popularity_buckets``).
        item_ids: The item ids the version knows.
        buckets: The bucket word of each of ``item_ids``.
        categories: The categories of the version's items, sorted.
    """

    edges: tuple[float, ...]
    item_ids: pa.Array
    buckets: pa.Array
    categories: tuple[str, ...]

    @property
    def bucket_names(self) -> tuple[str, ...]:
        """``b0`` .. ``bN`` and ``unseen``."""
        return bucket_names(self.edges)

    @classmethod
    def from_counts(
        cls,
        ids: Iterable[str],
        counts: Iterable[float],
        categories: Iterable[str],
        edges: Sequence[float],
    ) -> Profile:
        """The profile of items with interaction ``counts`` (or shares).

        Raises:
            InputError: An item id is listed twice, or ``ids`` and ``counts`` differ in length.
        """
        id_array = np.array(list(ids), dtype=object)
        weights = np.array(list(counts), dtype=np.float64)
        if len(id_array) != len(weights):
            raise InputError(f"{len(id_array)} item ids but {len(weights)} counts")
        if len(set(id_array.tolist())) != len(id_array):
            raise InputError("the profile lists an item id more than once")
        buckets = popularity_buckets(id_array, weights, edges)
        return cls(
            edges=tuple(float(e) for e in edges),
            item_ids=pa.array(id_array.tolist(), pa.string()),
            buckets=pa.array(buckets.tolist(), pa.string()),
            categories=tuple(sorted(set(categories))),
        )

    @classmethod
    def from_items(cls, items: ItemTable, edges: Sequence[float]) -> Profile:
        """The profile of a version's item table (its ``popularity_share``)."""
        return cls.from_counts(
            items.ids[1:].tolist(),
            items.popularity_share[1:].tolist(),
            (str(c) for c in items.categories[1:]),
            edges,
        )

    def bucket_of(self, ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The bucket word of each item id: ``unseen`` for ids the profile lacks, null for null."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.chunk(0) if ids.num_chunks == 1 else ids.combine_chunks()
        position = pc.index_in(ids, value_set=self.item_ids)
        found = self.buckets.take(position)
        unseen = pc.and_(pc.is_valid(ids), pc.is_null(position))
        return pc.if_else(unseen, pa.scalar(UNSEEN, pa.string()), found)


def _parts(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A list column's values and offsets into them (starting at 0); a null list is empty."""
    array = column
    if isinstance(column, pa.ChunkedArray):
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not isinstance(array, pa.ListArray | pa.LargeListArray):
        raise InputError(f"a list column was expected, not {array.type}")
    offsets = array.offsets.to_numpy().astype(np.int64)
    start, stop = int(offsets[0]), int(offsets[-1])
    return array.values.slice(start, stop - start), offsets - start


def _ends(column: pa.ChunkedArray | pa.Array, last: bool) -> pa.Array:
    """Each list's last (or first) value; null where the list is empty."""
    values, offsets = _parts(column)
    empty = offsets[1:] == offsets[:-1]
    where = offsets[1:] - 1 if last else offsets[:-1]
    return values.take(pa.array(np.where(empty, 0, where), mask=empty))


def _words(array: pa.Array) -> np.ndarray:
    """A string array as an object array, "none" for null (decoded once per distinct word)."""
    encoded = pc.fill_null(array, NONE).dictionary_encode()
    words = encoded.dictionary.to_numpy(zero_copy_only=False)
    return words[encoded.indices.to_numpy(zero_copy_only=False)]


def _require(requests: pa.Table, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in requests.column_names]
    if missing:
        raise InputError(f"the requests lack the columns {missing}")


def _mean_price(column: pa.ChunkedArray) -> np.ndarray:
    """Mean of each list's prices; NaN where none is known."""
    values, offsets = _parts(column)
    prices = values.to_numpy(zero_copy_only=False)
    known = np.isfinite(prices)
    filled = prices if known.all() else np.where(known, prices, 0.0)
    # segments of the non-empty lists only: each one ends where the next begins, the last
    # at the end of the values
    nonempty = offsets[1:] != offsets[:-1]
    starts = offsets[:-1][nonempty]
    sums = np.zeros(len(offsets) - 1)
    counts = np.diff(offsets)
    if len(starts):
        sums[nonempty] = np.add.reduceat(filled, starts)
        if filled is not prices:
            counts[nonempty] = np.add.reduceat(known, starts, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def feature_columns(requests: pa.Table, profile: Profile) -> dict[str, np.ndarray]:
    """The ``FEATURE_NAMES`` columns of ``requests`` as numpy arrays (see the module doc).

    Raises:
        InputError: A column of the request table is missing or not a list where one is due.
    """
    _require(
        requests,
        (
            "history_items",
            "history_categories",
            "history_prices",
            "items",
            "item_categories",
            "unknown_items",
        ),
    )
    _, offsets = _parts(requests.column("history_items"))
    known = np.diff(offsets)
    unknown = (
        pc.fill_null(requests.column("unknown_items"), 0).to_numpy().astype(np.int64, copy=False)
    )
    total = known + unknown
    with np.errstate(invalid="ignore", divide="ignore"):
        unknown_share = np.where(total > 0, unknown / np.maximum(total, 1), 0.0)
    newest = _ends(requests.column("history_items"), last=True)
    first = _ends(requests.column("items"), last=False)
    return {
        "history_length": total,
        "history_category": _words(_ends(requests.column("history_categories"), last=True)),
        "history_price": _mean_price(requests.column("history_prices")),
        "history_popularity": _words(profile.bucket_of(newest)),
        "unknown_share": unknown_share.astype(np.float64),
        "top_category": _words(_ends(requests.column("item_categories"), last=False)),
        "top_popularity": _words(profile.bucket_of(first)),
    }


def featurize(requests: pa.Table, profile: Profile) -> pd.DataFrame:
    """The ``FEATURE_NAMES`` columns of each request, in the order of ``requests``.

    Args:
        requests: A table of requests (:data:`pipelines.monitoring.requests.REQUEST_SCHEMA`).
        profile: The popularity buckets of the version compared against.

    Returns:
        One row per request; ``history_length`` int64, ``history_price`` and
        ``unknown_share`` float64, the others words (object).

    Raises:
        InputError: A column of the request table is missing or of the wrong kind.
    """
    import pandas as pd

    columns = feature_columns(requests, profile)
    return pd.DataFrame({name: columns[name] for name in FEATURE_NAMES})


def features_table(frame: pd.DataFrame) -> pa.Table:
    """``frame``'s ``FEATURE_NAMES`` columns as an Arrow table of :data:`FEATURE_SCHEMA`, without
    pandas metadata (the same frame gives the same bytes).

    Raises:
        InputError: A feature column is missing or of another type.
    """
    missing = [name for name in FEATURE_NAMES if name not in frame.columns]
    if missing:
        raise InputError(f"the features lack the columns {missing}")
    try:
        return pa.table(
            {
                name: pa.array(
                    frame[name].to_numpy(), FEATURE_SCHEMA.field(name).type, from_pandas=True
                )
                for name in FEATURE_NAMES
            },
            schema=FEATURE_SCHEMA,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"the features are not of the stored types: {exc}") from exc


@dataclass(frozen=True, eq=False)
class ItemCounts:
    """How often each item id occurs in the histories of a table of requests.

    Attributes:
        ids: Item ids, sorted.
        counts: Occurrences of each (int64).
        unknown: History items the model did not know (dropped from the histories; their ids
            are not recorded).
    """

    ids: np.ndarray
    counts: np.ndarray
    unknown: int

    @property
    def total(self) -> int:
        """Every history item: the counted ones and the unknown."""
        return int(self.counts.sum()) + self.unknown

    def as_dict(self) -> dict[str, int]:
        """Item id -> occurrences."""
        return dict(zip(self.ids.tolist(), self.counts.tolist(), strict=True))

    def aligned(self, other: ItemCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both counts over the union of the item ids (sorted): ``(ids, these, other's)``."""
        ids = np.union1d(self.ids.astype(str), other.ids.astype(str))
        mine = np.zeros(len(ids), dtype=np.int64)
        theirs = np.zeros(len(ids), dtype=np.int64)
        mine[np.searchsorted(ids, self.ids.astype(str))] = self.counts
        theirs[np.searchsorted(ids, other.ids.astype(str))] = other.counts
        return ids.astype(object), mine, theirs


def count_items(ids: Iterable[str], counts: Iterable[int], unknown: int = 0) -> ItemCounts:
    """:class:`ItemCounts` from parallel ids and counts (summed per id, sorted by id)."""
    id_array = np.array(list(ids), dtype=object)
    count_array = np.array(list(counts), dtype=np.int64)
    if len(id_array) != len(count_array):
        raise InputError(f"{len(id_array)} item ids but {len(count_array)} counts")
    unique, inverse = np.unique(id_array.astype(str), return_inverse=True)
    summed = np.bincount(inverse, weights=count_array, minlength=len(unique)).astype(np.int64)
    return ItemCounts(unique.astype(object), summed, int(unknown))


def item_counts(requests: pa.Table) -> ItemCounts:
    """The occurrences of each item id in the histories of ``requests`` (and the unknown ones).

    Raises:
        InputError: ``history_items`` or ``unknown_items`` is missing.
    """
    _require(requests, ("history_items", "unknown_items"))
    values, _ = _parts(requests.column("history_items"))
    unknown = int(pc.sum(pc.fill_null(requests.column("unknown_items"), 0)).as_py() or 0)
    if len(values) == 0:
        return ItemCounts(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), unknown)
    values = pc.drop_null(values)
    # Arrow's grouping counts batches on several threads, a single array on one
    chunks = [values.slice(i, _COUNT_BATCH) for i in range(0, len(values), _COUNT_BATCH)]
    grouped = (
        pa.table({"item_id": pa.chunked_array(chunks, values.type)})
        .group_by("item_id")
        .aggregate([([], "count_all")])
        .sort_by("item_id")
    )
    return ItemCounts(
        grouped.column("item_id").to_numpy().astype(object),
        grouped.column("count_all").to_numpy().astype(np.int64),
        unknown,
    )


def unseen_share(counts: ItemCounts, profile: Profile) -> float:
    """The share of history items unseen in training: unknown to the version, or in the
    ``unseen`` bucket of ``profile``; NaN when there are none at all."""
    total = counts.total
    if total == 0:
        return math.nan
    buckets = profile.bucket_of(pa.array(counts.ids.tolist(), pa.string()))
    unseen = pc.equal(buckets, UNSEEN).to_numpy(zero_copy_only=False)
    return float((int(counts.counts[unseen].sum()) + counts.unknown) / total)
