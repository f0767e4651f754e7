"""The item table of a served bundle: what the model's item indices mean in the catalog.

An optimized artifact scores item *indices* ``1..N``; clients speak in catalog item ids. The
table ``items.parquet`` beside the artifact holds, per index, the item id, its category, its
price (where the catalog has one) and its popularity rank, built from the prepare stage's
``item_map.parquet`` and ``item_popularity.parquet`` by :func:`write_item_table`.

An item is a catalog id at every boundary: indices mean something only inside the version
whose table made them. A request is encoded with the table of the version that scores it and
its answer decoded with the same table (:meth:`ItemTable.encode`, :meth:`ItemTable.decode`),
and two versions are compared on catalog ids, never on indices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet, write_parquet

ITEMS_FILE = "items.parquet"
_COLUMNS = ("item_idx", "item_id", "category", "price", "popularity_rank", "popularity")


def write_item_table(prepared: Path, folder: Path) -> Path:
    """Write ``items.parquet`` (item_idx, item_id, category, price, popularity rank) to ``folder``.

    The popularity is the interaction count of the prepare stage's reference statistics; the
    rank orders items by it (most popular first, ties by item id), so the popularity fallback
    of the server is the table sorted by rank.

    Args:
        prepared: The prepare stage's folder (``item_map.parquet``, ``item_popularity.parquet``).
        folder: The artifact folder the table goes into.

    Returns:
        The written file.

    Raises:
        InputError: A prepared file is missing or lacks a column.
    """
    hint = "(run the prepare stage first)"
    items = read_parquet(
        prepared / "item_map.parquet",
        "the prepared item map",
        require=("item_idx", "item_id", "category"),
        hint=hint,
    ).to_pandas()
    popularity = read_parquet(
        prepared / "item_popularity.parquet",
        "the prepared item popularity",
        require=("item_id", "count"),
        hint=hint,
    ).to_pandas()
    counts = dict(zip(popularity["item_id"].astype(str), popularity["count"], strict=True))
    items = items.sort_values("item_idx", kind="mergesort").reset_index(drop=True)
    ids = items["item_id"].astype(str)
    count = np.array([int(counts.get(i, 0)) for i in ids], dtype=np.int64)
    order = np.lexsort((ids.to_numpy(), -count))
    rank = np.empty(len(items), dtype=np.int32)
    rank[order] = np.arange(1, len(items) + 1, dtype=np.int32)
    price = items["price"].astype("float64") if "price" in items.columns else None
    table = pa.table(
        {
            "item_idx": pa.array(items["item_idx"].to_numpy(np.int32), pa.int32()),
            "item_id": pa.array(ids.tolist(), pa.string()),
            "category": pa.array(items["category"].astype(str).tolist(), pa.string()),
            "price": pa.array(
                price.to_numpy() if price is not None else [None] * len(items), pa.float64()
            ),
            "popularity_rank": pa.array(rank, pa.int32()),
            "popularity": pa.array(count, pa.int64()),
        }
    )
    target = folder / ITEMS_FILE
    write_parquet(target, table)
    return target


@dataclass(frozen=True)
class ItemTable:
    """The catalog side of a bundle, as arrays indexed by item index (row 0 is padding).

    Attributes:
        ids: ``[N + 1]`` item id of each index (``""`` at 0).
        categories: ``[N + 1]`` category of each index.
        prices: ``[N + 1]`` price (NaN where unknown).
        index: item id -> item index.
        by_popularity: item indices, most popular first (the fallback shelf).
        popularity_share: ``[N + 1]`` each item's share of all interactions (fallback scores).
    """

    ids: np.ndarray
    categories: np.ndarray
    prices: np.ndarray
    index: dict[str, int]
    by_popularity: np.ndarray
    popularity_share: np.ndarray

    @property
    def n_items(self) -> int:
        """Items in the table (indices ``1..n_items``)."""
        return len(self.ids) - 1

    def encode(self, history: Sequence[str]) -> list[int]:
        """The item indices of ``history``'s catalog ids, in order; ids not in the table are
        dropped (the caller counts them as unknown)."""
        index = self.index
        return [i for i in map(index.get, history) if i is not None]

    def decode(self, indices: Iterable[int]) -> list[str]:
        """The catalog ids of item ``indices``, in order."""
        ids = self.ids
        return [ids[i] for i in indices]

    @classmethod
    def read(cls, folder: Path, n_items: int) -> ItemTable:
        """Read ``folder/items.parquet`` and check it covers indices ``1..n_items`` exactly.

        Raises:
            InputError: The file is missing (with the fix), lacks columns, or its indices do
                not match the model's.
        """
        path = folder / ITEMS_FILE
        if not path.is_file():
            raise InputError(
                f"{path} not found: a served folder needs its item table beside the artifact "
                "(written by the optimize stage: run it again)"
            )
        table = read_parquet(path, "the item table", require=_COLUMNS)
        idx = table.column("item_idx").to_numpy().astype(np.int64)
        if len(idx) != n_items or not np.array_equal(np.sort(idx), np.arange(1, n_items + 1)):
            raise InputError(
                f"{path} holds {len(idx)} items with indices {idx.min(initial=0)}.."
                f"{idx.max(initial=0)}, the model scores indices 1..{n_items}"
            )
        ids = np.empty(n_items + 1, dtype=object)
        ids[0] = ""
        ids[idx] = table.column("item_id").to_pylist()
        categories = np.empty(n_items + 1, dtype=object)
        categories[0] = ""
        categories[idx] = table.column("category").to_pylist()
        prices = np.full(n_items + 1, np.nan)
        prices[idx] = table.column("price").to_numpy(zero_copy_only=False).astype(np.float64)
        rank = np.zeros(n_items + 1, dtype=np.int64)
        rank[idx] = table.column("popularity_rank").to_numpy()
        count = np.zeros(n_items + 1, dtype=np.float64)
        count[idx] = table.column("popularity").to_numpy()
        by_popularity = idx[np.argsort(rank[idx], kind="stable")]
        share = count / count.sum() if count.sum() > 0 else count
        index = {str(item): i for i, item in enumerate(ids) if i > 0}
        if len(index) != n_items:
            raise InputError(f"{path} lists an item id more than once")
        return cls(ids, categories, prices, index, by_popularity, share)
