"""One pass over the ordered batch, a range of whole users at a time.

Each range of users is folded into its steps (``dedupe_consecutive``, the minimum and maximum
sequence length, exactly as ``pipelines.data.preparation`` defines them in memory), which go to
an Arrow file on disk with items as codes (positions in the batch's sorted item ids): the item
map needs the step counts of every user before an item index is known. What the reference
statistics need of the served traffic (prices in order, the window, the sampled rows) is kept
on the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core.params import PrepareConfig
from pipelines.data import reference
from pipelines.data.event_order import OrderedBatch, user_starts
from pipelines.data.sequences import EVENT_CODES, list_array

STEPS_SCHEMA = pa.schema(
    [
        ("items", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.int64())),
        ("event_types", pa.list_(pa.int8())),
    ]
)
_EVENT_NAMES = np.array(list(EVENT_CODES), dtype=object)


@dataclass
class Gathered:
    """What the pass leaves besides the steps file.

    Attributes:
        events: Events of the configured types.
        users: Users among them.
        kept_users: ``user_id`` of the users with a sequence, in order, a piece per range.
        lengths: Their sequence lengths, a piece per range.
        step_counts: Steps per item code.
        prices: Every event's price, in the order of the ordered events.
        first_event: Epoch seconds of the first event (``None`` before the first range).
        last_event: Epoch seconds of the last event.
    """

    events: int = 0
    users: int = 0
    kept_users: list[pa.Array] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    step_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    prices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    first_event: int | None = None
    last_event: int | None = None
    sample_rows: list[np.ndarray] = field(default_factory=list)
    sample_codes: list[np.ndarray] = field(default_factory=list)
    sample_items: list[np.ndarray] = field(default_factory=list)
    sample_prices: list[np.ndarray] = field(default_factory=list)


def _fold(
    cfg: PrepareConfig,
    table: pa.Table,
    vocabulary: pa.Array,
    gathered: Gathered,
    sample_positions: np.ndarray,
    steps: pa.RecordBatchFileWriter,
) -> None:
    """Fold the ordered events of whole users in ``table`` into ``gathered`` and ``steps``."""
    n = table.num_rows
    offset = gathered.events
    users = table["user_id"].chunk(0)
    user_start = user_starts(users)
    item = pc.index_in(table["item_id"], value_set=vocabulary).to_numpy()
    ts = table["ts"].to_numpy()
    code = table["event_code"].to_numpy()
    gathered.prices[offset : offset + n] = table["price"].to_numpy()
    low, high = int(ts.min()), int(ts.max())
    first, last = gathered.first_event, gathered.last_event
    gathered.first_event = low if first is None else min(first, low)
    gathered.last_event = high if last is None else max(last, high)
    lo, hi = np.searchsorted(sample_positions, [offset, offset + n])
    picked = sample_positions[lo:hi] - offset
    gathered.sample_rows.append(table["row"].to_numpy()[picked])
    gathered.sample_codes.append(code[picked])
    gathered.sample_items.append(item[picked])
    gathered.sample_prices.append(gathered.prices[offset + picked])

    user_of_row = np.cumsum(user_start) - 1
    n_users = int(user_of_row[-1]) + 1
    if cfg.dedupe_consecutive:
        # a step per run of one item within a user: first timestamp, strongest event type
        step_start = user_start.copy()
        step_start[1:] |= item[1:] != item[:-1]
        starts = np.flatnonzero(step_start)
        code = np.maximum.reduceat(code, starts)
        item, ts, step_user = item[starts], ts[starts], user_of_row[starts]
    else:
        step_user = user_of_row
    lengths = np.bincount(step_user, minlength=n_users)
    kept = lengths >= cfg.min_sequence_length
    # keep the last max_sequence_length steps of each kept user
    first_step = np.r_[0, np.cumsum(lengths)[:-1]]
    from_end = lengths[step_user] - 1 - (np.arange(len(step_user)) - first_step[step_user])
    keep = kept[step_user] & (from_end < cfg.max_sequence_length)
    item, ts, code = item[keep], ts[keep], code[keep]
    kept_lengths = np.minimum(lengths, cfg.max_sequence_length)[kept]

    gathered.events += n
    gathered.users += n_users
    gathered.step_counts += np.bincount(item, minlength=len(vocabulary))
    if not len(kept_lengths):
        return
    gathered.kept_users.append(users.take(pa.array(np.flatnonzero(user_start)[kept])))
    gathered.lengths.append(kept_lengths.astype(np.int64))
    offsets = np.r_[0, np.cumsum(kept_lengths)]
    steps.write_batch(
        pa.record_batch(
            [
                list_array(item.astype(np.int32), offsets, pa.int32()),
                list_array(ts.astype(np.int64), offsets, pa.int64()),
                list_array(code.astype(np.int8), offsets, pa.int8()),
            ],
            schema=STEPS_SCHEMA,
        )
    )


def gather(
    cfg: PrepareConfig,
    batch: OrderedBatch,
    vocabulary: pa.Array,
    events: int,
    seed: int,
    steps_path: Path,
    chunk_events: int,
) -> Gathered:
    """Run the pass: the steps of every kept user to ``steps_path``, the rest returned.

    Args:
        cfg: Event types, dedupe and sequence lengths.
        batch: The ordered batch.
        vocabulary: The batch's distinct ``item_id``; an item's code is its position here.
        events: Events of the configured types (the length of the price column).
        seed: Seed of the reference sample.
        steps_path: The Arrow file written: a record batch per range, a row per kept user
            (``STEPS_SCHEMA``).
        chunk_events: Events per range of whole users (at least, but the last).
    """
    gathered = Gathered(
        step_counts=np.zeros(len(vocabulary), dtype=np.int64),
        prices=np.empty(events, dtype=np.float64),
    )
    sample_positions = reference.sample_rows(events, seed, reference.SAMPLE_SIZE)
    with pa.OSFile(str(steps_path), "wb") as sink, pa.ipc.new_file(sink, STEPS_SCHEMA) as steps:
        for table in batch.user_ranges(chunk_events):
            _fold(cfg, table, vocabulary, gathered, sample_positions, steps)
    if gathered.events != events:
        raise InputError(
            f"validated events changed while they were read ({gathered.events} != {events})"
        )
    return gathered


def read_steps(steps_path: Path) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The ranges of the steps file: ``offsets`` (from 0), item codes, timestamps, event codes."""
    # read, not mapped: the pages of a mapped file would stay in the process's memory
    with pa.OSFile(str(steps_path)) as source:
        reader = pa.ipc.open_file(source)
        for k in range(reader.num_record_batches):
            steps = reader.get_batch(k)
            column = steps.column(0)
            offsets = column.offsets.to_numpy().astype(np.int64)
            yield (
                offsets - offsets[0],
                column.flatten().to_numpy(),
                steps.column(1).flatten().to_numpy(),
                steps.column(2).flatten().to_numpy(),
            )


def sample(batch: OrderedBatch, gathered: Gathered, item_counts: pd.Series) -> pa.Table:
    """The reference sample of the rows the pass picked (as ``reference.reference_sample``).

    Args:
        batch: The ordered batch (categories and session lengths of the picked rows).
        gathered: The pass's result.
        item_counts: Events per item, in the order of the item codes.
    """

    def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype), *parts]).astype(dtype)

    categories, session_lengths = batch.sample_details(joined(gathered.sample_rows, np.int64))
    ranks = reference.popularity_ranks(item_counts).to_numpy()
    return reference.sample_table(
        _EVENT_NAMES[joined(gathered.sample_codes, np.int64)],
        categories,
        joined(gathered.sample_prices, np.float64),
        ranks[joined(gathered.sample_items, np.int64)],
        session_lengths,
    )
