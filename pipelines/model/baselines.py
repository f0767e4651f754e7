"""Baselines a sequential model has to beat, scored like the model (``pipelines.model.ranking``).

- most popular: every user gets the items ranked by their count in the training sequences;
- item-to-item transitions: the items that followed the user's last item in the training
  sequences, by how often; items that never followed it are ranked by popularity.

Both map a left-padded ``[B, L]`` history batch to ``[B, n_items + 1]`` scores, padding ``-inf``.
Both also rank the targets without those dense scores (``target_ranks``): a user's scores are
one vector shared by every user plus a few items of their own (the transitions of their last
item, and the masked history), so a target's rank is its place in the shared vector's order,
corrected for those few items. The ranks are exactly those of ``pipelines.model.ranking``'s
``"index"`` rule on the dense float32 scores (a test compares them), at a cost that grows with
the history and the transitions instead of with the catalogue.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch


def item_counts(
    sequences: Sequence[Sequence[int]] | Sequence[np.ndarray], n_items: int
) -> np.ndarray:
    """How often each item (0..n_items) occurs in ``sequences``; padding (0) counts 0."""
    flat = _flatten(sequences)
    counts = np.bincount(flat, minlength=n_items + 1).astype(np.int64)
    if len(counts) > n_items + 1:
        raise ValueError(f"item index {len(counts) - 1} is above n_items={n_items}")
    counts[0] = 0
    return counts


def _flatten(sequences: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> np.ndarray:
    if not len(sequences):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])


def _last_items(history: torch.Tensor) -> np.ndarray:
    # left padding: the last column is the newest step, 0 for an empty history
    return history[:, -1].cpu().numpy().astype(np.int64)


class _SharedOrder:
    """The order of items 1..n by a score vector shared by every user, under the ``"index"``
    tie rule: higher score first, then lower index.

    ``before(value, item)`` counts the items whose shared score puts them ahead of a (score,
    index) pair, by binary search: every item ahead of it is either scored higher, or scored the
    same with a lower index.
    """

    def __init__(self, scores: np.ndarray) -> None:
        items = np.arange(1, len(scores), dtype=np.int64)
        values = scores[1:]
        order = np.lexsort((items, -values))
        self.scores = scores
        descending = values[order]
        # the run of equal scores each sorted position is in; (run, index) increases along it
        run = np.r_[0, np.cumsum(descending[1:] != descending[:-1])]
        self._width = len(scores) + 1
        self._keys = run * self._width + items[order]
        self._run = run
        # ascending, for searchsorted
        self._negated = -descending

    def before(self, values: np.ndarray, items: np.ndarray) -> np.ndarray:
        """How many items the shared order puts ahead of each ``(values[i], items[i])``."""
        higher = np.searchsorted(self._negated, -values, side="left")
        upto = np.searchsorted(self._negated, -values, side="right")
        tied = upto > higher
        run = self._run[np.minimum(higher, len(self._run) - 1)] if len(self._run) else higher
        within = np.searchsorted(self._keys, run * self._width + items, side="left")
        return np.where(tied, within, higher).astype(np.int64)


def _ahead(
    values: np.ndarray, items: np.ndarray, target_values: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Whether each (value, item) ranks ahead of the (value, item) of its user's target."""
    return (values > target_values) | ((values == target_values) & (items < targets))


def _history_codes(history: np.ndarray, width: int) -> np.ndarray:
    """Sorted distinct ``user * width + item`` of the items in each row of ``history``."""
    rows = np.repeat(np.arange(len(history), dtype=np.int64), history.shape[1])
    steps = history.reshape(-1).astype(np.int64)
    real = steps > 0
    return np.unique(rows[real] * width + steps[real])


def _ahead_count(
    shared: _SharedOrder,
    users: np.ndarray,
    targets: np.ndarray,
    target_values: np.ndarray,
    own: tuple[np.ndarray, np.ndarray, np.ndarray],
    masked: np.ndarray | None,
) -> np.ndarray:
    """Per user: the items the shared order counts ahead of the target that are not ahead of it
    under the user's own scores (their own score ranks them behind, or they are masked), minus
    those their own scores put ahead of it."""
    width = len(shared.scores)
    own_users, own_items, own_scores = own
    own_codes = own_users * width + own_items
    own_masked = np.zeros(len(own_codes), dtype=bool)
    extra = np.zeros(0, dtype=np.int64)
    if masked is not None:
        # own_codes is sorted: find the masked pairs among them from the (short) masked side
        at = np.minimum(np.searchsorted(own_codes, masked), max(len(own_codes) - 1, 0))
        hit = own_codes[at] == masked if len(own_codes) else np.zeros(len(masked), dtype=bool)
        own_masked[at[hit]] = True
        extra = masked[~hit]
    # pairs with their own score: out of the shared count, into their own where not masked
    other = own_items != targets[own_users]
    goal_values, goal_items = target_values[own_users], targets[own_users]
    shared_ahead = _ahead(shared.scores[own_items], own_items, goal_values, goal_items)
    own_ahead = _ahead(own_scores, own_items, goal_values, goal_items) & ~own_masked
    delta = (shared_ahead.astype(np.int64) - own_ahead) * other
    count = len(users)
    result = np.bincount(own_users, weights=delta, minlength=count).astype(np.int64)
    # masked items without an own score: out of the shared count
    extra_users, extra_items = extra // width, extra % width
    gone = (extra_items != targets[extra_users]) & _ahead(
        shared.scores[extra_items], extra_items, target_values[extra_users], targets[extra_users]
    )
    return result + np.bincount(extra_users[gone], minlength=count)


def sparse_target_ranks(
    shared: _SharedOrder,
    history: np.ndarray,
    targets: np.ndarray,
    own: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    mask_history: bool,
) -> np.ndarray:
    """0-based ranks of ``targets`` when user ``u`` scores item ``i`` with the shared score,
    except for the pairs of ``own``, ``(users, items, scores)`` sorted by user then item, which
    replace it; the padding item never ranks. With ``mask_history`` the history's items are out
    of the ranking, and a target among them is a miss (``inf``)."""
    width = len(shared.scores)
    count = len(targets)
    own_users, own_items, own_scores = own
    own_codes = own_users * width + own_items
    users = np.arange(count, dtype=np.int64)
    target_codes = users * width + targets
    found = np.searchsorted(own_codes, target_codes)
    found = np.minimum(found, max(len(own_codes) - 1, 0))
    target_own = (own_codes[found] == target_codes) if len(own_codes) else np.zeros(count, bool)
    target_values = np.where(
        target_own, own_scores[found] if len(own_codes) else 0.0, shared.scores[targets]
    ).astype(shared.scores.dtype)
    ranks = shared.before(target_values, targets).astype(np.float64)

    masked = _history_codes(history, width) if mask_history else None
    ranks -= _ahead_count(shared, users, targets, target_values, own, masked)
    if masked is not None:
        ranks[np.isin(target_codes, masked)] = np.inf
    return ranks


class MostPopular:
    """Scores every item by its count in the training sequences."""

    def __init__(self, sequences: Sequence[Sequence[int]] | Sequence[np.ndarray], n_items: int):
        self.counts = item_counts(sequences, n_items)
        scores = torch.from_numpy(self.counts).double()
        scores[0] = float("-inf")
        self._scores = scores
        self._order: _SharedOrder | None = None

    def __call__(self, history: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items + 1]``, the same row for every user."""
        return self._scores.unsqueeze(0).expand(history.shape[0], -1).clone()

    def target_ranks(
        self, history: torch.Tensor, targets: torch.Tensor, *, mask_history: bool
    ) -> torch.Tensor:
        """The ``"index"`` ranks of ``targets`` under the float32 scores, without scoring every
        item (see the module doc)."""
        if self._order is None:
            self._order = _SharedOrder(self._scores.float().numpy())
        none = np.zeros(0, dtype=np.int64)
        ranks = sparse_target_ranks(
            self._order,
            history.cpu().numpy(),
            targets.cpu().numpy().astype(np.int64),
            (none, none, np.zeros(0, dtype=np.float32)),
            mask_history=mask_history,
        )
        return torch.from_numpy(ranks)


class ItemTransition:
    """Scores items by how often they followed the user's last item, backed off to popularity.

    The transition counts are held sparsely (one sorted row per source item) so that large
    catalogues fit. A popularity term below 1 is added to every score: it orders the items with
    equal transition counts without ever outranking a single observed transition.
    """

    OWN_PAIRS = 4_000_000
    """Transitions ranked at once by :meth:`target_ranks` (bounds its memory)."""

    def __init__(self, sequences: Sequence[Sequence[int]] | Sequence[np.ndarray], n_items: int):
        self.n_items = n_items
        counts = item_counts(sequences, n_items)
        self.backoff = counts / (counts.max() + 1.0) if counts.max() > 0 else counts * 0.0
        sources, targets = [], []
        for seq in sequences:
            arr = np.asarray(seq, dtype=np.int64)
            sources.append(arr[:-1])
            targets.append(arr[1:])
        src = np.concatenate(sources) if sources else np.zeros(0, np.int64)
        dst = np.concatenate(targets) if targets else np.zeros(0, np.int64)
        pairs, pair_counts = np.unique(src * (n_items + 1) + dst, return_counts=True)
        self._src = pairs // (n_items + 1)
        self._dst = pairs % (n_items + 1)
        self._counts = pair_counts.astype(np.float64)
        # pairs are sorted by source: row s is _dst[indptr[s]:indptr[s + 1]]
        self._indptr = np.searchsorted(self._src, np.arange(n_items + 2))
        self._order: _SharedOrder | None = None

    def transitions(self, item: int) -> dict[int, int]:
        """Counts of the items that followed ``item`` in training."""
        lo, hi = self._indptr[item], self._indptr[item + 1]
        return {int(d): int(c) for d, c in zip(self._dst[lo:hi], self._counts[lo:hi], strict=True)}

    def _rows(self, history: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(users, flat)``: each user's transitions as positions in the sparse rows, by user
        then target item."""
        last = _last_items(history)
        starts, ends = self._indptr[last], self._indptr[last + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(last)), lengths)
        flat = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(
            lengths.sum()
        )
        return rows, flat

    def __call__(self, history: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items + 1]`` from each history's last item."""
        rows, flat = self._rows(history)
        scores = np.tile(self.backoff, (history.shape[0], 1))
        scores[rows, self._dst[flat]] += self._counts[flat]
        result = torch.from_numpy(scores)
        result[:, 0] = float("-inf")
        return result

    def target_ranks(
        self, history: torch.Tensor, targets: torch.Tensor, *, mask_history: bool
    ) -> torch.Tensor:
        """The ``"index"`` ranks of ``targets`` under the float32 scores, without scoring every
        item (see the module doc)."""
        if self._order is None:
            shared = self.backoff.astype(np.float32)
            shared[0] = -np.inf
            self._order = _SharedOrder(shared)
        history_array = history.cpu().numpy()
        target_array = targets.cpu().numpy().astype(np.int64)
        last = history_array[:, -1].astype(np.int64)
        lengths = self._indptr[last + 1] - self._indptr[last]
        # users in groups of at most about OWN_PAIRS transitions: a popular last item can have
        # most of the catalogue after it, and a batch of those would be as big as dense scores
        group = np.cumsum(lengths) // self.OWN_PAIRS
        bounds = np.r_[0, np.flatnonzero(np.diff(group)) + 1, len(last)]
        ranks = np.empty(len(last), dtype=np.float64)
        for lo, hi in itertools.pairwise(bounds):
            if hi == lo:
                continue
            part = history[lo:hi]
            rows, flat = self._rows(part)
            items = self._dst[flat]
            # the same float64 sum as the dense scores, then the same cast
            own = (self.backoff[items] + self._counts[flat]).astype(np.float32)
            ranks[lo:hi] = sparse_target_ranks(
                self._order,
                history_array[lo:hi],
                target_array[lo:hi],
                (rows.astype(np.int64), items, own),
                mask_history=mask_history,
            )
        return torch.from_numpy(ranks)
