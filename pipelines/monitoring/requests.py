"""One table of requests: what the monitor compares, whether it comes from traffic or a batch.

Served traffic is read from the request log (``pipelines.serving.server.requestlog``), and the
two other sources are turned into the same table here, so that one featurization serves all:

- an incoming events batch (:func:`events_as_requests`): one request per user, the history
  being the user's steps before their last event, as a client would send it just before;
- the held-out sessions of the prepare stage's folder (:func:`sessions_as_requests`): the
  requests a replay sends, answered by a version's model when a ``predict`` is given; the
  reference of a version is built from them.

Item ids are catalog ids everywhere. ``history_*`` hold the items the version's item table
knows, oldest first; the others are dropped from the history and counted in
``unknown_items``, as the server does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet
from pipelines.data.sequences import EVENT_CODES
from pipelines.serving.items import ItemTable

# the columns of the request log, as its writer makes them (every field nullable)
REQUEST_SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("ms", tz="UTC")),
        pa.field("user", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("history_items", pa.list_(pa.string())),
        pa.field("history_categories", pa.list_(pa.string())),
        pa.field("history_prices", pa.list_(pa.float64())),
        pa.field("items", pa.list_(pa.string())),
        pa.field("item_categories", pa.list_(pa.string())),
        pa.field("latency_ms", pa.float64()),
        pa.field("fallback", pa.bool_()),
        pa.field("cache_hit", pa.bool_()),
        pa.field("unknown_items", pa.int32()),
    ]
)
REQUEST_COLUMNS: tuple[str, ...] = tuple(REQUEST_SCHEMA.names)

# the arm of the requests made from an events batch and from held-out sessions
BATCH_ARM = "batch"
REFERENCE_ARM = "reference"
# newest items of a held-out history a replay sends (rollout.sessions.load_sessions)
REPLAY_HISTORY = 100
# histories scored per call of ``predict``
_PREDICT_BATCH = 512

_EVENT_COLUMNS = ("user_id", "item_id", "category", "price", "timestamp", "event_type", "event_id")
_HINT = "(run the prepare stage first)"

Predict = Callable[[list[np.ndarray]], np.ndarray]
"""Answers histories of item indices (known items, oldest first) with ``[B, k]`` item indices,
best first, of the same item table: what the server returns for them."""


def empty_requests() -> pa.Table:
    """A table of requests without rows."""
    return REQUEST_SCHEMA.empty_table()


def conform(table: pa.Table, what: str = "the requests") -> pa.Table:
    """``table`` with exactly the columns of :data:`REQUEST_SCHEMA`, in its order and types.

    Raises:
        InputError: A column is missing or cannot be cast to its type (naming ``what``).
    """
    missing = [name for name in REQUEST_COLUMNS if name not in table.column_names]
    if missing:
        raise InputError(f"{what} lack the request columns {missing}")
    try:
        return table.select(list(REQUEST_COLUMNS)).cast(REQUEST_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{what} do not have the request log's column types: {exc}") from exc


def _lists(values: pa.Array, offsets: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _row_offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def events_as_requests(events: pa.Table, items: ItemTable | pa.Array, max_len: int) -> pa.Table:
    """One request per user of an events batch, as the user's client would send it last.

    The user's events are ordered as the prepare stage orders them (time, then view <
    add_to_cart < purchase, then event id), and consecutive events on one item are one step.
    The history is the steps before the user's last one, the newest ``max_len`` of them; the
    items the version's table knows stay in it (categories and prices from the events), the
    others are counted in ``unknown_items``. No items were answered (``items`` empty); ``time``
    is the user's last event, ``user`` the user id as given, ``arm`` :data:`BATCH_ARM`.

    Args:
        events: Canonical events (``pipelines.core.schema.EVENT_SCHEMA``).
        items: The version's item table, or the item ids it knows (a reference profile's).
        max_len: Newest steps of a history (the model's ``max_len``).

    Returns:
        The requests, one per user, ordered by user id.

    Raises:
        InputError: A column is missing, an event type unknown, or ``max_len`` below 1.
    """
    missing = [c for c in _EVENT_COLUMNS if c not in events.column_names]
    if missing:
        raise InputError(f"the events lack the columns {missing}")
    if max_len < 1:
        raise InputError(f"max_len must be at least 1, not {max_len}")
    if events.num_rows == 0:
        return empty_requests()
    table = events.select(list(_EVENT_COLUMNS)).combine_chunks()
    codes = pc.index_in(table.column("event_type"), value_set=pa.array(list(EVENT_CODES)))
    if codes.null_count:
        raise InputError(
            f"the events hold event types other than {sorted(EVENT_CODES)}: "
            f"{pc.unique(pc.filter(table.column('event_type'), pc.is_null(codes))).to_pylist()[:5]}"
        )
    table = table.append_column("event_code", codes)
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("user_id", "ascending"),
            ("timestamp", "ascending"),
            ("event_code", "ascending"),
            ("event_id", "ascending"),
        ],
    )
    table = table.take(order)
    user = table.column("user_id").combine_chunks()
    item = table.column("item_id").combine_chunks()
    n = table.num_rows
    # positions where a user starts, and where a step (a run of one item) starts
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = pc.not_equal(user[1:], user[:-1]).to_numpy(zero_copy_only=False)
    new_step = new_user.copy()
    new_step[1:] |= pc.not_equal(item[1:], item[:-1]).to_numpy(zero_copy_only=False)
    user_starts = np.flatnonzero(new_user)
    user_ends = np.r_[user_starts[1:], n]
    steps = np.flatnonzero(new_step)  # row of each step's first event
    step_user = np.cumsum(new_user)[steps] - 1
    steps_per_user = np.bincount(step_user, minlength=len(user_starts))
    last_step = np.cumsum(steps_per_user) - 1
    # steps counted back from each user's last one: 0 is the last, 1..max_len the history
    back = last_step[step_user] - np.arange(len(steps))
    in_history = (back >= 1) & (back <= max_len)
    rows = steps[in_history]
    row_user = step_user[in_history]
    history_ids = item.take(pa.array(rows))
    known_ids = items if isinstance(items, pa.Array) else pa.array(list(items.index), pa.string())
    known = pc.is_in(history_ids, value_set=known_ids)
    known_np = known.to_numpy(zero_copy_only=False)
    kept = pa.array(rows[known_np])
    n_users = len(user_starts)
    offsets = _row_offsets(np.bincount(row_user[known_np], minlength=n_users))
    unknown = np.bincount(row_user[~known_np], minlength=n_users).astype(np.int32)
    last_time = table.column("timestamp").combine_chunks().take(pa.array(user_ends - 1))
    return pa.table(
        {
            "time": last_time.cast(pa.timestamp("ms", tz="UTC"), safe=False),
            "user": user.take(pa.array(user_starts)).cast(pa.string()),
            "model_version": pa.array([""] * n_users, pa.string()),
            "arm": pa.array([BATCH_ARM] * n_users, pa.string()),
            "history_items": _lists(item.take(kept).cast(pa.string()), offsets),
            "history_categories": _lists(
                table.column("category").combine_chunks().take(kept).cast(pa.string()), offsets
            ),
            "history_prices": _lists(
                table.column("price").combine_chunks().take(kept).cast(pa.float64()), offsets
            ),
            "items": _lists(pa.array([], pa.string()), np.zeros(n_users + 1, np.int64)),
            "item_categories": _lists(pa.array([], pa.string()), np.zeros(n_users + 1, np.int64)),
            "latency_ms": pa.nulls(n_users, pa.float64()),
            "fallback": pa.array(np.zeros(n_users, dtype=bool)),
            "cache_hit": pa.array(np.zeros(n_users, dtype=bool)),
            "unknown_items": pa.array(unknown, pa.int32()),
        },
        schema=REQUEST_SCHEMA,
    )


def _split_histories(prepared: Path, split: str) -> tuple[pa.Array, pa.ListArray, pa.Array]:
    """User ids, histories (catalog ids, oldest first) and next items of ``split``."""
    if split not in ("test", "valid"):
        raise InputError(f"split {split!r} is not a held-out split: test or valid")
    path = prepared / f"{split}.parquet"
    rows = read_parquet(
        path, f"the prepared {split} split", require=("user_idx", "history", "target"), hint=_HINT
    )
    item_map = read_parquet(
        prepared / "item_map.parquet",
        "the prepared item map",
        require=("item_idx", "item_id"),
        hint=_HINT,
    )
    user_map = read_parquet(
        prepared / "user_map.parquet",
        "the prepared user map",
        require=("user_idx", "user_id"),
        hint=_HINT,
    )

    def lookup(keys: pa.Array, index: pa.Array, values: pa.Array, name: str) -> pa.Array:
        position = pc.index_in(keys, value_set=index)
        if position.null_count:
            bad = pc.filter(keys, pc.is_null(position))[0].as_py()
            raise InputError(f"{path} names {name} index {bad}, which the {name} map lacks {_HINT}")
        return values.take(position)

    item_index = item_map.column("item_idx").combine_chunks().cast(pa.int64())
    item_ids = item_map.column("item_id").combine_chunks().cast(pa.string())
    history = rows.column("history").combine_chunks()
    flat = history.values.cast(pa.int64())
    ids = lookup(flat, item_index, item_ids, "item")
    offsets = history.offsets.to_numpy().astype(np.int64)
    ids = ids.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    histories = _lists(ids, offsets - offsets[0])
    users = lookup(
        rows.column("user_idx").combine_chunks().cast(pa.int64()),
        user_map.column("user_idx").combine_chunks().cast(pa.int64()),
        user_map.column("user_id").combine_chunks().cast(pa.string()),
        "user",
    )
    targets = lookup(
        rows.column("target").combine_chunks().cast(pa.int64()), item_index, item_ids, "item"
    )
    return users, histories, targets


def sessions_as_requests(
    prepared: Path,
    split: str,
    items: ItemTable,
    predict: Predict | None,
    *,
    rows: np.ndarray | None = None,
    k: int = 10,
    max_history: int = REPLAY_HISTORY,
    version: str = "",
    time: dt.datetime | None = None,
) -> pa.Table:
    """The requests a replay of ``split`` sends, answered by ``predict`` where one is given.

    Each held-out session becomes the request a replay sends: the user id and the newest
    ``max_history`` items of the history. The items ``items`` knows stay in the history (with
    the table's categories and prices, as the server logs them), the others are counted in
    ``unknown_items``. ``predict`` answers the known histories with the top ``k`` items; without
    it ``items`` is empty, as for an events batch.

    Args:
        prepared: The prepare stage's folder.
        split: ``test`` or ``valid``.
        items: The version's item table.
        predict: The version's answers, or None.
        rows: Which sessions (positions in the split, in this order); None for all.
        k: Items answered per request.
        max_history: Newest items of a history sent with a request.
        version: The ``model_version`` recorded on each row.
        time: The ``time`` of each row (None: null, a held-out session has no request time).

    Returns:
        The requests (``arm`` :data:`REFERENCE_ARM`), one per session.

    Raises:
        InputError: A prepared file is missing or inconsistent, or ``predict`` answers out of
            the item table.
    """
    if max_history < 1:
        raise InputError(f"max_history must be at least 1, not {max_history}")
    users, histories, _ = _split_histories(prepared, split)
    if rows is not None:
        take = pa.array(np.asarray(rows, dtype=np.int64))
        users, histories = users.take(take), histories.take(take)
    n = len(histories)
    offsets = histories.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    flat = histories.values
    # the newest max_history items of each history
    position = np.arange(int(offsets[-1]) - int(offsets[0]), dtype=np.int64) + int(offsets[0])
    row_of = np.repeat(np.arange(n), lengths)
    sent = position >= (offsets[1:][row_of] - max_history)
    ids = flat.take(pa.array(position))
    index = pc.index_in(ids, value_set=pa.array(items.ids[1:].tolist(), pa.string()))
    known = sent & index.is_valid().to_numpy(zero_copy_only=False)
    known_idx = index.to_numpy(zero_copy_only=False)[known].astype(np.int64) + 1
    row_known = row_of[known]
    known_offsets = _row_offsets(np.bincount(row_known, minlength=n))
    unknown = np.bincount(row_of[sent & ~known], minlength=n).astype(np.int32)
    item_ids = pa.array(items.ids, pa.string())
    categories = pa.array(items.categories, pa.string())
    prices = pa.array(items.prices, pa.float64())
    gather = pa.array(known_idx)
    if predict is not None:
        answers = _answers(predict, known_idx, known_offsets, items.n_items, k)
        answer_offsets = np.arange(n + 1, dtype=np.int64) * answers.shape[1]
        answered = pa.array(answers.reshape(-1))
    else:
        answer_offsets = np.zeros(n + 1, dtype=np.int64)
        answered = pa.array([], pa.int64())
    when = pa.nulls(n, pa.timestamp("ms", tz="UTC"))
    if time is not None:
        millis = int(time.timestamp() * 1000)
        when = pa.array(np.full(n, millis, dtype=np.int64)).cast(pa.timestamp("ms", tz="UTC"))
    return pa.table(
        {
            "time": when,
            "user": users,
            "model_version": pa.array([version] * n, pa.string()),
            "arm": pa.array([REFERENCE_ARM] * n, pa.string()),
            "history_items": _lists(item_ids.take(gather), known_offsets),
            "history_categories": _lists(categories.take(gather), known_offsets),
            "history_prices": _lists(prices.take(gather), known_offsets),
            "items": _lists(item_ids.take(answered), answer_offsets),
            "item_categories": _lists(categories.take(answered), answer_offsets),
            "latency_ms": pa.nulls(n, pa.float64()),
            "fallback": pa.array(np.zeros(n, dtype=bool)),
            "cache_hit": pa.array(np.zeros(n, dtype=bool)),
            "unknown_items": pa.array(unknown, pa.int32()),
        },
        schema=REQUEST_SCHEMA,
    )


def _answers(
    predict: Predict, flat: np.ndarray, offsets: np.ndarray, n_items: int, k: int
) -> np.ndarray:
    """``predict``'s ``[B, k]`` answers to the histories ``flat[offsets[i]:offsets[i+1]]``.

    Raises:
        InputError: An answer has another width or an item index outside ``1..n_items``.
    """
    n = len(offsets) - 1
    width = min(k, n_items)
    parts = []
    for start in range(0, n, _PREDICT_BATCH):
        stop = min(start + _PREDICT_BATCH, n)
        histories = [flat[offsets[i] : offsets[i + 1]] for i in range(start, stop)]
        answer = np.asarray(predict(histories))
        if answer.shape != (stop - start, width):
            raise InputError(
                f"the model answered {stop - start} histories with shape {answer.shape}, "
                f"not {(stop - start, width)}"
            )
        parts.append(answer.astype(np.int64))
    answers = np.concatenate(parts) if parts else np.zeros((0, width), np.int64)
    if answers.size and (answers.min() < 1 or answers.max() > n_items):
        raise InputError(f"the model answered item indices outside 1..{n_items}")
    return answers
