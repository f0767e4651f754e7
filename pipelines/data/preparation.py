"""The ``prepare`` stage's work: user sequences, id maps, splits and the reference statistics.

Reads the accepted batch (``events.parquet``, ``catalog.parquet``) and writes, as one folder
replaced atomically:

- ``item_map.parquet``: ``item_idx`` 1..N (0 is padding), by descending interaction count, then
  ``item_id``; with category, ``category_idx``, brand, price and count;
- ``user_map.parquet``: ``user_idx`` 1..U by ``user_id``;
- ``sequences.parquet``: per user, ``item_idx``, ``timestamps`` (epoch seconds) and
  ``event_types`` (view 0, add_to_cart 1, purchase 2) in the order of ``pipelines.data.sequences``;
- ``train.parquet`` (``user_idx``, ``item_idx``, ``event_types``), ``valid.parquet`` and
  ``test.parquet`` (``user_idx``, ``history``, ``history_event_types``, ``target``):
  leave-one-out or a time split; the event types are aligned step by step with the items;
- ``reference.json``, ``reference_sample.parquet``, ``item_popularity.parquet``: the reference
  statistics drift monitoring compares served traffic against (``pipelines.data.reference``);
- ``summary.json``: the counts also written to ``--metrics``.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import (
    atomic_dir,
    read_parquet,
    write_json,
    write_parquet,
    write_parquet_stream,
)
from pipelines.core.params import PrepareConfig, RunConfig
from pipelines.core.schema import CATALOG_COLUMNS, CATALOG_FILE, EVENT_COLUMNS, EVENTS_FILE
from pipelines.data import reference
from pipelines.data.event_order import open_batch
from pipelines.data.gathering import gather, read_steps
from pipelines.data.gathering import sample as reference_sample
from pipelines.data.sequences import (
    EVENT_CODES,
    Ragged,
    first_in_period,
    leave_one_out,
    list_array,
    select,
)

log = logging.getLogger("recflow.prepare")

# events per range of whole users built at a time (a user's events are never split, so a
# range may hold more); the memory of a range is a few hundred bytes per event
CHUNK_EVENTS = 1_000_000


@dataclass(frozen=True)
class PrepareResult:
    """Counts of what ``prepare`` wrote (also the stage's DVC metrics)."""

    events: int
    users: int
    items: int
    sequences: int
    dropped_users: int
    mean_sequence_length: float
    median_sequence_length: float
    train_rows: int
    valid_rows: int
    test_rows: int
    split: str


def ordered_events(events: pd.DataFrame, cfg: PrepareConfig) -> pd.DataFrame:
    """Events of the configured types, ordered by user and the documented tie rule."""
    missing = {"user_id", "item_id", "event_type", "timestamp", "event_id"} - set(events.columns)
    if missing:
        raise InputError(f"events lack the columns {sorted(missing)}")
    frame = events[events["event_type"].isin(cfg.event_types)].copy()
    frame["event_code"] = frame["event_type"].map(EVENT_CODES).astype(np.int8)
    # whole epoch seconds, whatever unit the timestamps were read with
    epoch = pd.Timestamp(0, tz="UTC")
    frame["ts"] = ((frame["timestamp"] - epoch) // pd.Timedelta(seconds=1)).astype(np.int64)
    return frame.sort_values(
        ["user_id", "ts", "event_code", "event_id"], kind="mergesort", ignore_index=True
    )


def dedupe_consecutive(frame: pd.DataFrame) -> pd.DataFrame:
    """Collapse a user's consecutive events on one item into one step.

    The step keeps the first timestamp and the strongest event type (purchase > add_to_cart >
    view), so view → add_to_cart → purchase of one item is one purchase step.
    """
    user = frame["user_id"].to_numpy()
    item = frame["item_id"].to_numpy()
    new_step = np.r_[True, (user[1:] != user[:-1]) | (item[1:] != item[:-1])]
    step = np.cumsum(new_step) - 1
    firsts = frame.loc[new_step].reset_index(drop=True)
    strongest = np.zeros(len(firsts), dtype=np.int8)
    np.maximum.at(strongest, step, frame["event_code"].to_numpy())
    firsts["event_code"] = strongest
    return firsts


def item_map(counts: pd.Series, catalog: pd.DataFrame) -> pd.DataFrame:
    """Items with interactions, indexed from 1 by descending count, then ``item_id``.

    Args:
        counts: Steps per ``item_id`` (the index), items with steps only, in any order.
        catalog: The validated catalog (category, brand and price of each item).
    """
    counts = counts.rename("count").rename_axis("item_id").reset_index()
    counts = counts.sort_values(["count", "item_id"], ascending=[False, True], kind="mergesort")
    duplicated = catalog["item_id"][catalog["item_id"].duplicated()]
    if len(duplicated):
        raise InputError(
            f"validated catalog lists {duplicated.nunique()} item_id more than once, "
            f"e.g. {duplicated.iloc[0]!r}"
        )
    items = counts.merge(catalog, on="item_id", how="left", validate="one_to_one")
    items["category"] = items["category"].fillna("unknown")
    items["brand"] = items["brand"].fillna("unknown")
    items["price"] = items["price"].astype("float64")
    items.insert(0, "item_idx", np.arange(1, len(items) + 1, dtype=np.int32))
    categories = sorted(items["category"].unique())
    code = {name: i + 1 for i, name in enumerate(categories)}
    items["category_idx"] = items["category"].map(code).astype(np.int32)
    columns = ["item_idx", "item_id", "category", "category_idx", "brand", "price", "count"]
    return items[columns].reset_index(drop=True)


def _split_table(
    name: str,
    cfg: PrepareConfig,
    run: RunConfig,
    user_idx: np.ndarray,
    ragged: Ragged,
    items: np.ndarray,
    ts: np.ndarray,
    codes: np.ndarray,
) -> pa.Table:
    """The ``train``, ``valid`` or ``test`` rows of the users in ``ragged`` (users are
    independent, so a split of a range of users is that range of the whole split)."""

    def lists(
        values: np.ndarray, kind: pa.DataType, keep: np.ndarray, rows: np.ndarray
    ) -> pa.ListArray:
        offsets = select(ragged, keep)
        return list_array(values[keep], offsets, kind).take(pa.array(rows))

    def histories(keep: np.ndarray, rows: np.ndarray) -> pa.ListArray:
        return lists(items, pa.int32(), keep, rows)

    def events(keep: np.ndarray, rows: np.ndarray) -> pa.ListArray:
        return lists(codes, pa.int8(), keep, rows)

    if cfg.split == "leave_one_out":
        parts = leave_one_out(ragged)
        rows = np.arange(len(user_idx))
        if name == "train":
            return pa.table(
                {
                    "user_idx": user_idx,
                    "item_idx": histories(parts["train_keep"], rows),
                    "event_types": events(parts["train_keep"], rows),
                }
            )
        keep = parts[f"{name}_history_keep"]
        return pa.table(
            {
                "user_idx": user_idx,
                "history": histories(keep, rows),
                "history_event_types": events(keep, rows),
                "target": items[parts[f"{name}_target"]].astype(np.int32),
            }
        )

    end = dt.datetime.combine(run.logical_date, dt.time(), dt.UTC) + dt.timedelta(days=1)
    test_start = int((end - dt.timedelta(days=cfg.time_split.test_days)).timestamp())
    valid_start = test_start - cfg.time_split.valid_days * 86_400
    if name == "train":
        train_keep = ts < valid_start
        rows_of = ragged.rows()
        train_rows = np.flatnonzero(np.bincount(rows_of[train_keep], minlength=len(user_idx)) > 0)
        return pa.table(
            {
                "user_idx": user_idx[train_rows],
                "item_idx": histories(train_keep, train_rows),
                "event_types": events(train_keep, train_rows),
            }
        )
    period = (ts >= valid_start) & (ts < test_start) if name == "valid" else ts >= test_start
    target = first_in_period(ragged, period)
    rows = np.flatnonzero(target >= 0)
    # history: every step of the user before the target step
    target_of_row = np.repeat(np.where(target >= 0, target, -1), ragged.lengths)
    keep = np.arange(len(items)) < target_of_row
    return pa.table(
        {
            "user_idx": user_idx[rows],
            "history": histories(keep, rows),
            "history_event_types": events(keep, rows),
            "target": items[target[rows]].astype(np.int32),
        }
    )


SEQUENCES_SCHEMA = pa.schema(
    [
        ("user_idx", pa.int32()),
        ("item_idx", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.int64())),
        ("event_types", pa.list_(pa.int8())),
    ]
)
SPLIT_SCHEMAS = {
    "train": pa.schema(
        [
            ("user_idx", pa.int32()),
            ("item_idx", pa.list_(pa.int32())),
            ("event_types", pa.list_(pa.int8())),
        ]
    ),
    **{
        name: pa.schema(
            [
                ("user_idx", pa.int32()),
                ("history", pa.list_(pa.int32())),
                ("history_event_types", pa.list_(pa.int8())),
                ("target", pa.int32()),
            ]
        )
        for name in ("valid", "test")
    },
}


def _pieces(
    name: str,
    cfg: PrepareConfig,
    run: RunConfig,
    steps_path: Path,
    item_of_code: np.ndarray,
) -> Iterator[pa.Table]:
    """The rows of ``sequences`` or of a split, a range of users at a time, in user order."""
    first_user = 1
    for offsets, item_codes, ts, codes in read_steps(steps_path):
        users = len(offsets) - 1
        user_idx = np.arange(first_user, first_user + users, dtype=np.int32)
        first_user += users
        items = item_of_code[item_codes]
        if name == "sequences":
            yield pa.table(
                {
                    "user_idx": user_idx,
                    "item_idx": list_array(items, offsets, pa.int32()),
                    "timestamps": list_array(ts, offsets, pa.int64()),
                    "event_types": list_array(codes, offsets, pa.int8()),
                }
            )
        else:
            yield _split_table(name, cfg, run, user_idx, Ragged(offsets), items, ts, codes)


def prepare(cfg: PrepareConfig, run: RunConfig, validated: Path, out: Path) -> PrepareResult:
    """Build sequences, splits and reference statistics from the accepted batch.

    Memory stays bounded whatever the batch size: DuckDB sorts the events (spilling beyond its
    memory limit), the sequences are built a range of users at a time and kept on disk until
    the item map is known, and the outputs are written a row group at a time. What stays in
    memory grows with the users, the items and the sessions, and by 8 bytes per event (the
    prices, for the reference statistics).

    Args:
        cfg: Sequence and split settings.
        run: The run's logical date (time split cut points) and seed (reference sample).
        validated: Folder with the accepted ``events.parquet`` and ``catalog.parquet``.
        out: Output folder, replaced as a whole.

    Returns:
        The counts, also written to ``summary.json``.

    Raises:
        InputError: The inputs are missing or unreadable, or no user is left.
    """
    started = time.perf_counter()
    hint = "(run the validate stage first)"
    events_path = validated / EVENTS_FILE
    # reads the schema only: the events are read through DuckDB
    read_parquet(events_path, "validated events", columns=[], require=EVENT_COLUMNS, hint=hint)
    catalog = read_parquet(
        validated / CATALOG_FILE, "validated catalog", require=CATALOG_COLUMNS, hint=hint
    ).to_pandas()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work.", dir=out.parent) as work_dir:
        work = Path(work_dir)
        steps_path = work / "steps.arrow"
        with open_batch(events_path, cfg.event_types, work) as batch:
            counts = batch.counts()
            frame_items = counts.items
            events = int(frame_items.sum())
            vocabulary = pa.array(frame_items.index.to_numpy(), pa.string())
            gathered = gather(cfg, batch, vocabulary, events, run.seed, steps_path, CHUNK_EVENTS)
            log.info(
                "ordered %d events of %d users in %.1f s",
                gathered.events,
                gathered.users,
                time.perf_counter() - started,
            )
            traffic = reference.Traffic(
                events=gathered.events,
                users=gathered.users,
                item_counts=frame_items,
                session_sizes=batch.session_sizes(),
                category_counts=counts.categories,
                event_type_counts=counts.event_types,
                prices=gathered.prices,
                first_event=gathered.first_event,
                last_event=gathered.last_event,
            )
            sample = reference_sample(batch, gathered, frame_items)
        lengths = np.concatenate([np.zeros(0, np.int64), *gathered.lengths])
        dropped = gathered.users - len(lengths)
        if not len(lengths):
            raise InputError(
                f"no user has at least prepare.min_sequence_length={cfg.min_sequence_length} "
                f"steps ({gathered.users} users, {gathered.events} events)"
            )
        stats = reference.statistics(traffic, len(catalog), cfg, run, reorder_prices=True)
        popularity = reference.popularity_table(frame_items, catalog)
        del traffic
        gathered.prices = np.zeros(0, np.float64)

        nonzero = np.flatnonzero(gathered.step_counts)
        vocabulary_ids = frame_items.index.to_numpy()
        items = item_map(
            pd.Series(gathered.step_counts[nonzero], index=vocabulary_ids[nonzero]), catalog
        )
        item_of_code = np.zeros(len(vocabulary_ids), dtype=np.int32)
        item_of_code[pd.Index(vocabulary_ids).get_indexer(items["item_id"])] = items["item_idx"]
        users = pd.DataFrame(
            {"user_id": pa.concat_arrays(gathered.kept_users).to_numpy(zero_copy_only=False)}
        )
        users.insert(0, "user_idx", np.arange(1, len(users) + 1, dtype=np.int32))
        gathered.kept_users.clear()
        user_table = pa.Table.from_pandas(users, preserve_index=False)
        del users

        with atomic_dir(out) as tmp:
            write_parquet(
                tmp / "item_map.parquet", pa.Table.from_pandas(items, preserve_index=False)
            )
            write_parquet(tmp / "user_map.parquet", user_table)
            rows: dict[str, int] = {}
            del user_table
            for name, schema in (("sequences", SEQUENCES_SCHEMA), *SPLIT_SCHEMAS.items()):
                # freed Arrow memory back to the system first: the next file's row group
                # is the largest thing held
                pa.default_memory_pool().release_unused()
                rows[name] = write_parquet_stream(
                    tmp / f"{name}.parquet",
                    schema,
                    _pieces(name, cfg, run, steps_path, item_of_code),
                )
            result = PrepareResult(
                events=gathered.events,
                users=rows["sequences"],
                items=len(items),
                sequences=rows["sequences"],
                dropped_users=dropped,
                mean_sequence_length=round(float(lengths.mean()), 4),
                median_sequence_length=float(np.median(lengths)),
                train_rows=rows["train"],
                valid_rows=rows["valid"],
                test_rows=rows["test"],
                split=cfg.split,
            )
            write_json(tmp / "reference.json", stats)
            write_parquet(tmp / "reference_sample.parquet", sample)
            write_parquet(tmp / "item_popularity.parquet", popularity)
            write_json(tmp / "summary.json", asdict(result))
    elapsed = time.perf_counter() - started
    log.info(
        "prepared %d users, %d items from %d events in %.2f s (%.0f events/s)",
        result.users,
        result.items,
        result.events,
        elapsed,
        result.events / max(elapsed, 1e-9),
    )
    return result
