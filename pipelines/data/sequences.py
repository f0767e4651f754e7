"""User item sequences and their splits, vectorised over a flat (values, offsets) layout.

A set of sequences is held as one flat array of values plus ``offsets`` (length users + 1),
the same layout as an Arrow list column, so that every operation here is a numpy expression
over all users at once instead of a Python loop per user.

Ordering (the tie rule): a user's events are ordered by timestamp, then by funnel step
(``view`` < ``add_to_cart`` < ``purchase``), then by ``event_id``. Equal timestamps are common
in logs with second resolution; this rule makes the order deterministic and puts a purchase
after the view it follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

EVENT_CODES: dict[str, int] = {"view": 0, "add_to_cart": 1, "purchase": 2}
N_EVENT_TYPES = len(EVENT_CODES)


def step_tokens(items: np.ndarray, events: np.ndarray, n_items: int) -> np.ndarray:
    """Step tokens ``item + (n_items + 1) * event`` of a model with event types (0 stays 0).

    A history of step tokens is still one ``int64`` array, and a plain item index reads as a
    view (event code 0).
    """
    items = np.asarray(items, dtype=np.int64)
    return items + (n_items + 1) * np.asarray(events, dtype=np.int64) * (items > 0)


def left_pad(sequences: Sequence[Sequence[int]] | Sequence[np.ndarray], width: int) -> np.ndarray:
    """Left-pad (with 0) or cut (keeping the newest steps) sequences to ``width`` -> ``[B, W]``."""
    out = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = np.asarray(seq, dtype=np.int64)[-width:] if width else np.zeros(0, np.int64)
        if len(tail):
            out[row, width - len(tail) :] = tail
    return out


@dataclass(frozen=True)
class Ragged:
    """Per-user sequences: ``values[offsets[u]:offsets[u + 1]]`` is user ``u``'s sequence."""

    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Length of each user's sequence."""
        return np.diff(self.offsets)

    def positions(self) -> np.ndarray:
        """Position of each flat element inside its own sequence (0-based)."""
        lengths = self.lengths
        return np.arange(self.offsets[-1]) - np.repeat(self.offsets[:-1], lengths)

    def rows(self) -> np.ndarray:
        """Row (user) index of each flat element."""
        return np.repeat(np.arange(len(self.offsets) - 1), self.lengths)


def offsets_from_keys(keys: np.ndarray) -> np.ndarray:
    """Offsets of the runs of equal consecutive ``keys`` (keys must already be grouped)."""
    if len(keys) == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.r_[starts, len(keys)].astype(np.int64)


def select(ragged: Ragged, keep: np.ndarray) -> np.ndarray:
    """Offsets after keeping only the flat elements where ``keep`` is true."""
    users = len(ragged.offsets) - 1
    counts = np.bincount(ragged.rows()[keep], minlength=users)
    return np.r_[0, np.cumsum(counts)].astype(np.int64)


def list_array(values: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """An Arrow list column from flat values and offsets."""
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32), pa.int32()), pa.array(values, value_type)
    )


def leave_one_out(ragged: Ragged) -> dict[str, np.ndarray]:
    """Leave-one-out masks and targets: last step test, second-to-last validation.

    Returns:
        ``train_keep`` (flat mask: all but the last two steps), ``valid_history_keep`` (the same
        steps), ``valid_target`` (flat index of each user's second-to-last step),
        ``test_history_keep`` (all but the last step), ``test_target`` (flat index of the last
        step). Every user has at least three steps.
    """
    pos = ragged.positions()
    length = np.repeat(ragged.lengths, ragged.lengths)
    return {
        "train_keep": pos < length - 2,
        "valid_history_keep": pos < length - 2,
        "valid_target": ragged.offsets[1:] - 2,
        "test_history_keep": pos < length - 1,
        "test_target": ragged.offsets[1:] - 1,
    }


def first_in_period(ragged: Ragged, in_period: np.ndarray) -> np.ndarray:
    """Flat index of each user's first step with ``in_period`` true, or -1 where there is none."""
    result = np.full(len(ragged.offsets) - 1, -1, dtype=np.int64)
    flat = np.flatnonzero(in_period)
    users, first = np.unique(ragged.rows()[flat], return_index=True)
    result[users] = flat[first]
    return result
