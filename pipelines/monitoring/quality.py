"""Online quality: how often the item a user turned to next was among the items served before.

For each request of a window, the user's *next event* is their first feedback event after the
request and within the attribution window: time in ``(t, t + window]``. A request is a *hit*
when that event's item is among the first ``k`` items served, a *miss* when it is not, and
*unknown* when the user did nothing (that we know of) within the window: unknown counts neither
way, and the share of such requests is reported beside the hit rate, since a hit rate over few
answered requests says little about the rest.

Feedback comes from later event batches (:func:`feedback_from_events`) or, for replayed
held-out sessions, from the prepare stage's folder (:func:`feedback_from_sessions`): each
session's true next item, whose time is unknown (null). A null-time event is the user's next
event after any of their requests; a timed event in the window comes first.

Users are joined by pseudonym: the request log holds the keyed hash of each user id
(:class:`pipelines.serving.server.pseudonyms.KeyedHash`), and feedback is pseudonymized with
the same key. The figures are per model version and arm, each hit rate with its Wilson score
interval (exact enough at the edges, 0 or all hits, where the normal interval is not).

The join is vectorized: the timed feedback is sorted by user and time once, and every request
finds its next event by one binary search.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("user", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("time", pa.timestamp("ms", tz="UTC")),  # null: next event, time unknown
    ]
)
_HINT = "(run the prepare stage first)"


@dataclass(frozen=True)
class QualityFigure:
    """The online hit rate of one model version and arm over a window.

    Attributes:
        version: The model version that answered (``""`` where none is logged).
        arm: The arm (``stable``, ``canary``, ...).
        requests: Requests answered.
        with_feedback: Of those, requests whose user's next event is known.
        hits: Of those, requests that served the next event's item among the first ``k``.
        hit_rate: ``hits / with_feedback`` (0 without feedback).
        low: The Wilson interval's lower end (0 without feedback).
        high: Its upper end (1 without feedback).
        no_feedback_share: Share of ``requests`` whose outcome is unknown.
        k: Served items a hit may be among.
        confidence: Of the interval.
    """

    version: str
    arm: str
    requests: int
    with_feedback: int
    hits: int
    hit_rate: float
    low: float
    high: float
    no_feedback_share: float
    k: int
    confidence: float

    def to_json(self) -> dict[str, Any]:
        """The figure as a JSON object (field names as keys)."""
        return {
            "version": self.version,
            "arm": self.arm,
            "requests": self.requests,
            "with_feedback": self.with_feedback,
            "hits": self.hits,
            "hit_rate": self.hit_rate,
            "low": self.low,
            "high": self.high,
            "no_feedback_share": self.no_feedback_share,
            "k": self.k,
            "confidence": self.confidence,
        }


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion (two-sided).

    Args:
        successes: Successes observed.
        n: Trials.
        confidence: E.g. 0.95.

    Returns:
        ``(low, high)`` within ``[0, 1]``; ``(0, 1)`` for no trials.

    Raises:
        ValueError: ``successes`` is outside ``0..n`` or ``confidence`` outside ``(0, 1)``.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, not {successes}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), not {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    # at 0 or n successes the formula's end is exactly 0 or 1; rounding must not move it off
    low = 0.0 if successes == 0 else max(0.0, (centre - spread) / scale)
    high = 1.0 if successes == n else min(1.0, (centre + spread) / scale)
    return low, high


def _codes(*columns: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """Integer codes of the values of ``columns`` in one shared dictionary (null: -1)."""
    chunks: list[pa.Array] = []
    for column in columns:
        column = column.cast(pa.string())
        chunks += column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    joined = pa.chunked_array(chunks, pa.string()) if chunks else pa.chunked_array([], pa.string())
    encoded = joined.combine_chunks().dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy().astype(np.int64)
    out, start = [], 0
    for column in columns:
        out.append(codes[start : start + len(column)])
        start += len(column)
    return out


def _next_events(
    request_user: np.ndarray,
    request_ms: np.ndarray,
    feedback_user: np.ndarray,
    feedback_ms: np.ndarray,
    feedback_timed: np.ndarray,
    window_ms: int,
) -> np.ndarray:
    """For each request, the row of the feedback that is its user's next event (-1: none).

    Timed feedback: the first with time in ``(t, t + window]``, found by one binary search
    over the feedback sorted by (user, time); null-time feedback (``feedback_timed`` false):
    the user's first such row, where no timed one is found.
    """
    chosen = np.full(len(request_user), -1, dtype=np.int64)
    timed = np.flatnonzero(feedback_timed & (feedback_user >= 0))
    if len(timed) and len(request_user):
        users, times = feedback_user[timed], feedback_ms[timed]
        base = min(int(times.min()), int(request_ms.min()))
        span = max(int(times.max()), int(request_ms.max())) - base + 1
        n_users = int(max(users.max(), request_user.max())) + 1
        if n_users * span < 2**62:
            # one sortable key: user first, then time
            key = users * span + (times - base)
            query = request_user * span + (request_ms - base)
        else:  # a span of centuries: time ranks instead of times
            ranks = np.unique(np.concatenate([times, request_ms]), return_inverse=True)[1]
            span = int(ranks.max()) + 1
            key = users * span + ranks[: len(times)]
            query = request_user * span + ranks[len(times) :]
        order = np.argsort(key, kind="stable")
        key, rows = key[order], timed[order]
        at = np.searchsorted(key, query, side="right")
        found = at < len(key)
        at = np.minimum(at, len(key) - 1)
        found &= feedback_user[rows[at]] == request_user
        found &= feedback_ms[rows[at]] <= request_ms + window_ms
        chosen[found] = rows[at[found]]
    untimed = np.flatnonzero(~feedback_timed & (feedback_user >= 0))
    if len(untimed):
        first_users, first = np.unique(feedback_user[untimed], return_index=True)
        by_user = np.full(int(max(first_users.max(), request_user.max(initial=0))) + 1, -1)
        by_user[first_users] = untimed[first]
        open_ = np.flatnonzero((chosen < 0) & (request_user >= 0))
        chosen[open_] = by_user[request_user[open_]]
    return chosen


def _hits(served: pa.ChunkedArray, chosen: np.ndarray, items: pa.Array, k: int) -> np.ndarray:
    """Whether each request's first ``k`` served items hold its next event's item.

    Args:
        served: The requests' served item lists.
        chosen: Each request's next event (a row of ``items``), -1 for none.
        items: The feedback's item ids.
        k: Served items a hit may be among.

    The served lists are read in place (their flat values and offsets, chunk by chunk): only
    the first ``k`` values of the lists of requests with a next event are compared.
    """
    hit = np.zeros(len(chosen), dtype=bool)
    start = 0
    for chunk in served.chunks:
        rows = np.flatnonzero(chosen[start : start + len(chunk)] >= 0)
        if len(rows):
            offsets = chunk.offsets.to_numpy()
            first = offsets[rows]
            lengths = np.minimum(offsets[rows + 1] - first, k)
            lengths[~chunk.is_valid().to_numpy(zero_copy_only=False)[rows]] = 0
            owner = np.repeat(np.arange(len(rows)), lengths)
            within = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            values = chunk.values.take(pa.array(first[owner] + within))
            targets = items.take(pa.array(chosen[start + rows][owner]))
            equal = pc.equal(values, targets).fill_null(False).to_numpy(zero_copy_only=False)
            hit[start + rows] = np.bincount(owner[equal], minlength=len(rows)) > 0
        start += len(chunk)
    return hit


def _times(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds of a timestamp column and where they are known."""
    as_ms = column.cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64())
    known = pc.is_valid(as_ms).to_numpy(zero_copy_only=False)
    return as_ms.fill_null(0).to_numpy().astype(np.int64), known


def online_quality(
    requests: pa.Table,
    feedback: pa.Table,
    *,
    window_s: float,
    k: int,
    confidence: float,
) -> tuple[QualityFigure, ...]:
    """The hit rate of each model version and arm's requests against their users' next events.

    Args:
        requests: A table of requests (``time``, ``user``, ``model_version``, ``arm`` and
            ``items`` of :data:`pipelines.monitoring.requests.REQUEST_SCHEMA`).
        feedback: Later events (:data:`FEEDBACK_SCHEMA`: ``user``, ``item_id``, ``time``; a
            null time is the next event, time unknown).
        window_s: How long after a request its user's next event counts (attribution).
        k: A hit: the next event's item among the first ``k`` served items.
        confidence: Of the Wilson interval.

    Returns:
        One figure per (version, arm) present, ordered by version then arm; none without
        requests.

    Raises:
        InputError: A table lacks a column, or a request has no time.
    """
    for table, columns, what in (
        (requests, ("time", "user", "model_version", "arm", "items"), "the requests"),
        (feedback, tuple(FEEDBACK_SCHEMA.names), "the feedback"),
    ):
        missing = [name for name in columns if name not in table.column_names]
        if missing:
            raise InputError(f"{what} lack the columns {missing}")
    if k < 1 or window_s <= 0:
        raise ValueError(f"k must be at least 1 and window_s positive, not {k} and {window_s}")
    if requests.num_rows == 0:
        return ()
    if requests.column("time").null_count:
        raise InputError("the requests hold rows without a time")
    request_ms, _ = _times(requests.column("time"))
    feedback_ms, timed = _times(feedback.column("time"))
    request_user, feedback_user = _codes(requests.column("user"), feedback.column("user"))
    chosen = _next_events(
        request_user,
        request_ms,
        feedback_user,
        feedback_ms,
        timed,
        round(window_s * 1000),
    )
    hit = _hits(requests.column("items"), chosen, feedback.column("item_id").combine_chunks(), k)
    return _figures(requests, chosen >= 0, hit, k, confidence)


def _figures(
    requests: pa.Table, known: np.ndarray, hit: np.ndarray, k: int, confidence: float
) -> tuple[QualityFigure, ...]:
    """The counts of each (version, arm) as figures, ordered by version, then arm."""
    counts = (
        pa.table(
            {
                "model_version": requests.column("model_version"),
                "arm": requests.column("arm"),
                "known": pa.array(known.astype(np.int64)),
                "hit": pa.array(hit.astype(np.int64)),
            }
        )
        .group_by(["model_version", "arm"], use_threads=False)
        .aggregate([("known", "count"), ("known", "sum"), ("hit", "sum")])
    )
    figures = []
    for group in counts.to_pylist():
        total, with_feedback, n_hits = group["known_count"], group["known_sum"], group["hit_sum"]
        low, high = wilson_interval(n_hits, with_feedback, confidence)
        figures.append(
            QualityFigure(
                version=group["model_version"] or "",
                arm=group["arm"] or "",
                requests=total,
                with_feedback=with_feedback,
                hits=n_hits,
                hit_rate=n_hits / with_feedback if with_feedback else 0.0,
                low=low,
                high=high,
                no_feedback_share=(total - with_feedback) / total,
                k=k,
                confidence=confidence,
            )
        )
    return tuple(sorted(figures, key=lambda f: (f.version, f.arm)))


def feedback_from_events(events: pa.Table, pseudonymize: Callable[[str], str]) -> pa.Table:
    """Canonical events as feedback: each event's pseudonymized user, item and time.

    Every event type counts: a view of a served item is what the served list was for.

    Args:
        events: Canonical events (``user_id``, ``item_id``, ``timestamp``; see
            :mod:`pipelines.core.schema`).
        pseudonymize: The request log's keyed hash of a user id.

    Returns:
        A :data:`FEEDBACK_SCHEMA` table, one row per event, in the events' order.

    Raises:
        InputError: A column is missing.
    """
    missing = [
        name for name in ("user_id", "item_id", "timestamp") if name not in events.column_names
    ]
    if missing:
        raise InputError(f"the feedback events lack the columns {missing}")
    users = events.column("user_id").cast(pa.string()).combine_chunks().dictionary_encode()
    # one hash per distinct user, then spread to the rows
    pseudonyms = pa.array([pseudonymize(str(u)) for u in users.dictionary.to_pylist()], pa.string())
    return pa.table(
        {
            "user": pseudonyms.take(users.indices),
            "item_id": events.column("item_id").cast(pa.string()),
            "time": events.column("timestamp").cast(pa.timestamp("ms", tz="UTC"), safe=False),
        },
        schema=FEEDBACK_SCHEMA,
    )


def _lookup(keys: pa.ChunkedArray, values: pa.ChunkedArray, path: Path) -> pa.Array:
    """``values`` indexed by the integer ``keys`` (a dense array; unmapped: null)."""
    index = keys.to_numpy().astype(np.int64)
    if len(index) and index.min() < 0:
        raise InputError(f"{path} holds negative indices")
    positions = np.full(int(index.max(initial=-1)) + 1, -1, dtype=np.int64)
    positions[index] = np.arange(len(index))
    taken = pa.array(positions, mask=positions < 0)
    return values.combine_chunks().take(taken)


def feedback_from_sessions(
    prepared: Path, split: str, pseudonymize: Callable[[str], str]
) -> pa.Table:
    """Held-out sessions as feedback: each user's true next item, time unknown (null).

    What a replay of ``split`` sends is each of these users' history (as
    ``pipelines.rollout.sessions`` reads it); the item that came next is their next event.

    Args:
        prepared: The prepare stage's folder.
        split: ``test`` or ``valid``.
        pseudonymize: The request log's keyed hash of a user id.

    Returns:
        A :data:`FEEDBACK_SCHEMA` table, one row per session, with null times.

    Raises:
        InputError: The split is not a held-out one, a file is missing or lacks a column, or a
            session names a user or item the maps lack.
    """
    if split not in ("test", "valid"):
        raise InputError(f"split {split!r} is not a held-out split: test or valid")
    items_file, users_file = prepared / "item_map.parquet", prepared / "user_map.parquet"
    split_file = prepared / f"{split}.parquet"
    items = read_parquet(
        items_file, "the prepared item_map.parquet", ["item_idx", "item_id"], hint=_HINT
    )
    users = read_parquet(
        users_file, "the prepared user_map.parquet", ["user_idx", "user_id"], hint=_HINT
    )
    rows = read_parquet(
        split_file, f"the prepared {split}.parquet", ["user_idx", "target"], hint=_HINT
    )
    item_of = _lookup(items.column("item_idx"), items.column("item_id"), items_file)
    user_of = _lookup(users.column("user_idx"), users.column("user_id"), users_file)
    targets = rows.column("target").to_numpy().astype(np.int64)
    user_idx = rows.column("user_idx").to_numpy().astype(np.int64)
    if (
        (targets < 0).any()
        or (targets >= len(item_of)).any()
        or (user_idx < 0).any()
        or (user_idx >= len(user_of)).any()
    ):
        raise InputError(f"{split_file} names indices outside the user or item map {_HINT}")
    item_ids = item_of.take(pa.array(targets))
    user_ids = user_of.take(pa.array(user_idx))
    if item_ids.null_count or user_ids.null_count:
        raise InputError(f"{split_file} names indices the user or item map lacks {_HINT}")
    names = user_ids.dictionary_encode()
    pseudonyms = pa.array([pseudonymize(str(u)) for u in names.dictionary.to_pylist()], pa.string())
    return pa.table(
        {
            "user": pseudonyms.take(names.indices),
            "item_id": item_ids.cast(pa.string()),
            "time": pa.nulls(len(rows), pa.timestamp("ms", tz="UTC")),
        },
        schema=FEEDBACK_SCHEMA,
    )
