"""The prepare stage's folder as training, optimization and the gate read it.

``load_prepared`` reads ``item_map.parquet``, ``train.parquet``, ``valid.parquet`` and
``test.parquet`` into numpy arrays and checks what the model relies on: item indices ``1..N``
without gaps, every step and target inside them, event codes (when asked for) aligned with the
items. ``prepared_fingerprint`` names the data a checkpoint was trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet, sha256_file
from pipelines.data.sequences import N_EVENT_TYPES, step_tokens

PREPARED_FILES = ("item_map.parquet", "train.parquet", "valid.parquet", "test.parquet")
_HINT = "(run the prepare stage first)"

Split = Literal["train", "valid", "test"]


@dataclass(frozen=True)
class Prepared:
    """The prepare stage's output: sequences of item indices ``1..n_items`` (0 is padding).

    Attributes:
        n_items: Items in the catalog the model scores.
        n_categories: Categories (indices ``1..n_categories``; 0 is padding).
        item_category: ``[n_items + 1]`` category index of each item.
        train: Each user's training sequence.
        valid_history, valid_target: Validation histories and the next item after each.
        test_history, test_target: Test histories and the next item after each.
        train_events, valid_events, test_events: Event codes aligned with the sequences,
            loaded on request only.
    """

    n_items: int
    n_categories: int
    item_category: np.ndarray
    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray
    train_events: list[np.ndarray] | None = None
    valid_events: list[np.ndarray] | None = None
    test_events: list[np.ndarray] | None = None

    def model_inputs(self, split: Split, event_types: bool) -> list[np.ndarray]:
        """The split's sequences as a model reads them: items, or with ``event_types`` step
        tokens (:func:`pipelines.data.sequences.step_tokens`).

        Raises:
            InputError: Event types are asked for but were not loaded.
        """
        items = self.train if split == "train" else getattr(self, f"{split}_history")
        if not event_types:
            return list(items)
        events = getattr(self, f"{split}_events")
        if events is None:
            raise InputError("event types were not loaded: load_prepared(..., event_types=True)")
        return [step_tokens(i, e, self.n_items) for i, e in zip(items, events, strict=True)]


def prepared_fingerprint(prepared: Path) -> str:
    """sha256 over the prepared files the trainer reads: which data a checkpoint belongs to."""
    digest = hashlib.sha256()
    for name in PREPARED_FILES:
        path = prepared / name
        digest.update(name.encode())
        digest.update(sha256_file(path).encode() if path.is_file() else b"missing")
    return digest.hexdigest()


def _read(path: Path, columns: list[str]) -> pa.Table:
    return read_parquet(path, path.name, require=columns, hint=_HINT)


def _lists(table: pa.Table, column: str) -> list[np.ndarray]:
    arr = table.column(column).combine_chunks()
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = arr.offsets.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(arr))]


def _event_lists(
    table: pa.Table, column: str, items: list[np.ndarray], path: Path
) -> list[np.ndarray]:
    if column not in table.column_names:
        raise InputError(
            f"{path} has no {column} column, which a model with event types needs "
            "(written by the prepare stage: run it again)"
        )
    events = _lists(table, column)
    if any(len(e) != len(i) for e, i in zip(events, items, strict=True)):
        raise InputError(f"{path}: {column} and the item lists differ in length")
    if any(len(e) and (e.min() < 0 or e.max() >= N_EVENT_TYPES) for e in events):
        raise InputError(f"{path}: {column} has codes outside 0..{N_EVENT_TYPES - 1}")
    return events


def load_prepared(prepared: Path, *, event_types: bool = False) -> Prepared:
    """Read the prepare stage's folder (with the event types of each step if asked).

    Raises:
        InputError: A file is missing, unreadable, of the wrong shape, or an item index is
            outside the item map; or event types are asked for and missing or invalid.
    """
    items = _read(prepared / "item_map.parquet", ["item_idx", "category_idx"])
    item_idx = items.column("item_idx").to_numpy().astype(np.int64)
    n_items = len(item_idx)
    if n_items == 0 or not np.array_equal(np.sort(item_idx), np.arange(1, n_items + 1)):
        raise InputError(f"{prepared / 'item_map.parquet'}: item_idx must be 1..N without gaps")
    category = np.zeros(n_items + 1, dtype=np.int64)
    category[item_idx] = items.column("category_idx").to_numpy().astype(np.int64)
    train_table = _read(prepared / "train.parquet", ["item_idx"])
    train = _lists(train_table, "item_idx")
    splits = {}
    events: dict[str, list[np.ndarray] | None] = {"train": None, "valid": None, "test": None}
    if event_types:
        events["train"] = _event_lists(
            train_table, "event_types", train, prepared / "train.parquet"
        )
    for name in ("valid", "test"):
        table = _read(prepared / f"{name}.parquet", ["history", "target"])
        splits[name] = (
            _lists(table, "history"),
            table.column("target").to_numpy().astype(np.int64),
        )
        if event_types:
            events[name] = _event_lists(
                table, "history_event_types", splits[name][0], prepared / f"{name}.parquet"
            )
    for name, seqs in (
        ("train", train),
        ("valid", splits["valid"][0]),
        ("test", splits["test"][0]),
    ):
        top = max((int(s.max()) for s in seqs if len(s)), default=0)
        low = min((int(s.min()) for s in seqs if len(s)), default=1)
        if top > n_items or low < 1:
            raise InputError(f"{name}.parquet has item indices outside 1..{n_items}")
    for name in ("valid", "test"):
        targets = splits[name][1]
        if len(targets) and (targets.min() < 1 or targets.max() > n_items):
            raise InputError(f"{name}.parquet has targets outside 1..{n_items}")
    if not any(len(s) >= 2 for s in train):
        raise InputError(f"{prepared / 'train.parquet'} has no sequence of two or more steps")
    # the tables are read: Arrow's pool hands the memory it keeps for reuse back to the system
    pa.default_memory_pool().release_unused()
    return Prepared(
        n_items=n_items,
        n_categories=int(category.max()),
        item_category=category,
        train=train,
        valid_history=splits["valid"][0],
        valid_target=splits["valid"][1],
        test_history=splits["test"][0],
        test_target=splits["test"][1],
        train_events=events["train"],
        valid_events=events["valid"],
        test_events=events["test"],
    )
