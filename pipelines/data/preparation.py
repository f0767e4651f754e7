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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import atomic_dir, read_parquet, write_json, write_parquet
from pipelines.core.params import PrepareConfig, RunConfig
from pipelines.core.schema import CATALOG_COLUMNS, CATALOG_FILE, EVENT_COLUMNS, EVENTS_FILE
from pipelines.data import reference
from pipelines.data.sequences import (
    EVENT_CODES,
    Ragged,
    first_in_period,
    leave_one_out,
    list_array,
    offsets_from_keys,
    select,
)

log = logging.getLogger("recflow.prepare")


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


def item_map(frame: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Items with interactions, indexed from 1 by descending count, then ``item_id``."""
    counts = frame.groupby("item_id", sort=False).size().rename("count").reset_index()
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


def _split_tables(
    cfg: PrepareConfig,
    run: RunConfig,
    user_idx: np.ndarray,
    ragged: Ragged,
    items: np.ndarray,
    ts: np.ndarray,
    codes: np.ndarray,
) -> dict[str, pa.Table]:
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
        train = pa.table(
            {
                "user_idx": user_idx,
                "item_idx": histories(parts["train_keep"], rows),
                "event_types": events(parts["train_keep"], rows),
            }
        )
        tables = {"train": train}
        for name in ("valid", "test"):
            keep = parts[f"{name}_history_keep"]
            tables[name] = pa.table(
                {
                    "user_idx": user_idx,
                    "history": histories(keep, rows),
                    "history_event_types": events(keep, rows),
                    "target": items[parts[f"{name}_target"]].astype(np.int32),
                }
            )
        return tables

    end = dt.datetime.combine(run.logical_date, dt.time(), dt.UTC) + dt.timedelta(days=1)
    test_start = int((end - dt.timedelta(days=cfg.time_split.test_days)).timestamp())
    valid_start = test_start - cfg.time_split.valid_days * 86_400
    positions = np.arange(len(items))
    rows_of = ragged.rows()
    tables = {}
    train_keep = ts < valid_start
    train_rows = np.flatnonzero(np.bincount(rows_of[train_keep], minlength=len(user_idx)) > 0)
    tables["train"] = pa.table(
        {
            "user_idx": user_idx[train_rows],
            "item_idx": histories(train_keep, train_rows),
            "event_types": events(train_keep, train_rows),
        }
    )
    for name, period in (
        ("valid", (ts >= valid_start) & (ts < test_start)),
        ("test", ts >= test_start),
    ):
        target = first_in_period(ragged, period)
        rows = np.flatnonzero(target >= 0)
        # history: every step of the user before the target step
        target_of_row = np.repeat(np.where(target >= 0, target, -1), ragged.lengths)
        keep = positions < target_of_row
        tables[name] = pa.table(
            {
                "user_idx": user_idx[rows],
                "history": histories(keep, rows),
                "history_event_types": events(keep, rows),
                "target": items[target[rows]].astype(np.int32),
            }
        )
    return tables


def prepare(cfg: PrepareConfig, run: RunConfig, validated: Path, out: Path) -> PrepareResult:
    """Build sequences, splits and reference statistics from the accepted batch.

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
    events = read_parquet(
        validated / EVENTS_FILE, "validated events", require=EVENT_COLUMNS, hint=hint
    ).to_pandas()
    catalog = read_parquet(
        validated / CATALOG_FILE, "validated catalog", require=CATALOG_COLUMNS, hint=hint
    ).to_pandas()
    frame = ordered_events(events, cfg)
    steps = dedupe_consecutive(frame) if cfg.dedupe_consecutive else frame

    lengths = steps.groupby("user_id", sort=False).size()
    kept_users = lengths.index[lengths >= cfg.min_sequence_length]
    dropped = int(len(lengths) - len(kept_users))
    steps = steps[steps["user_id"].isin(kept_users)].reset_index(drop=True)
    if steps.empty:
        raise InputError(
            f"no user has at least prepare.min_sequence_length={cfg.min_sequence_length} steps "
            f"({len(lengths)} users, {len(frame)} events)"
        )
    # keep the last max_sequence_length steps of each user
    position_from_end = steps.groupby("user_id", sort=False).cumcount(ascending=False)
    steps = steps[position_from_end < cfg.max_sequence_length].reset_index(drop=True)

    items = item_map(steps, catalog)
    item_index = pd.Series(items["item_idx"].to_numpy(), index=items["item_id"])
    users = pd.DataFrame({"user_id": sorted(steps["user_id"].unique())})
    users.insert(0, "user_idx", np.arange(1, len(users) + 1, dtype=np.int32))

    # steps are sorted by user_id, the same order as the user map
    offsets = offsets_from_keys(steps["user_id"].to_numpy())
    ragged = Ragged(offsets)
    item_values = item_index.reindex(steps["item_id"]).to_numpy().astype(np.int32)
    ts = steps["ts"].to_numpy().astype(np.int64)
    codes = steps["event_code"].to_numpy().astype(np.int8)
    user_idx = users["user_idx"].to_numpy()
    sequences = pa.table(
        {
            "user_idx": user_idx,
            "item_idx": list_array(item_values, offsets, pa.int32()),
            "timestamps": list_array(ts, offsets, pa.int64()),
            "event_types": list_array(codes, offsets, pa.int8()),
        }
    )
    splits = _split_tables(cfg, run, user_idx, ragged, item_values, ts, codes)

    seq_lengths = ragged.lengths
    result = PrepareResult(
        events=len(frame),
        users=len(users),
        items=len(items),
        sequences=len(users),
        dropped_users=dropped,
        mean_sequence_length=round(float(seq_lengths.mean()), 4),
        median_sequence_length=float(np.median(seq_lengths)),
        train_rows=splits["train"].num_rows,
        valid_rows=splits["valid"].num_rows,
        test_rows=splits["test"].num_rows,
        split=cfg.split,
    )
    stats = reference.reference_statistics(frame, catalog, cfg, run)
    sample = reference.reference_sample(frame, seed=run.seed)
    popularity = reference.item_popularity(frame, catalog)

    with atomic_dir(out) as tmp:
        write_parquet(tmp / "item_map.parquet", pa.Table.from_pandas(items, preserve_index=False))
        write_parquet(tmp / "user_map.parquet", pa.Table.from_pandas(users, preserve_index=False))
        write_parquet(tmp / "sequences.parquet", sequences)
        for name, table in splits.items():
            write_parquet(tmp / f"{name}.parquet", table)
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
