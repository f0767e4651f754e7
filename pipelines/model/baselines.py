"""Baselines a sequential model has to beat, scored like the model (``pipelines.model.ranking``).

- most popular: every user gets the items ranked by their count in the training sequences;
- item-to-item transitions: the items that followed the user's last item in the training
  sequences, by how often; items that never followed it are ranked by popularity.

Both map a left-padded ``[B, L]`` history batch to ``[B, n_items + 1]`` scores, padding ``-inf``.
"""

from __future__ import annotations

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


class MostPopular:
    """Scores every item by its count in the training sequences."""

    def __init__(self, sequences: Sequence[Sequence[int]] | Sequence[np.ndarray], n_items: int):
        self.counts = item_counts(sequences, n_items)
        scores = torch.from_numpy(self.counts).double()
        scores[0] = float("-inf")
        self._scores = scores

    def __call__(self, history: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items + 1]``, the same row for every user."""
        return self._scores.unsqueeze(0).expand(history.shape[0], -1).clone()


class ItemTransition:
    """Scores items by how often they followed the user's last item, backed off to popularity.

    The transition counts are held sparsely (one sorted row per source item) so that large
    catalogues fit. A popularity term below 1 is added to every score: it orders the items with
    equal transition counts without ever outranking a single observed transition.
    """

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

    def transitions(self, item: int) -> dict[int, int]:
        """Counts of the items that followed ``item`` in training."""
        lo, hi = self._indptr[item], self._indptr[item + 1]
        return {int(d): int(c) for d, c in zip(self._dst[lo:hi], self._counts[lo:hi], strict=True)}

    def __call__(self, history: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items + 1]`` from each history's last item."""
        last = _last_items(history)
        scores = np.tile(self.backoff, (len(last), 1))
        starts, ends = self._indptr[last], self._indptr[last + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(last)), lengths)
        flat = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(
            lengths.sum()
        )
        scores[rows, self._dst[flat]] += self._counts[flat]
        result = torch.from_numpy(scores)
        result[:, 0] = float("-inf")
        return result
