"""Full-ranking metrics of next-item scores: HR@K, NDCG@K and MRR@K.

Every user has exactly one target, so HR@K equals Recall@K. The padding item (index 0) never
ranks. With ``mask_history`` the items of the user's history are excluded from the ranking (set
to ``-inf``), the usual protocol for catalogues without repeat consumption; a target that is
itself in the history then counts as a miss. A target whose score is ``-inf`` is always a miss.
Without it every item is ranked, history included, as RecBole does for sequential models.

Two rules for items with equal scores (``ties``):

- ``"index"``: the rank of a target is the number of items scored above it, plus the number of
  items with the same score and a smaller item index (ties go to the more popular item, since
  item indices are ordered by popularity);
- ``"topk"``: the metrics at ``K`` read the target's position in ``torch.topk(scores, K)``, the
  list RecBole's evaluator ranks by (its ``topk: [K]``); equal scores come out in whatever order
  ``torch.topk`` returns them. Used where numbers are compared with RecBole's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, Unpack, runtime_checkable

import numpy as np
import torch

KS: tuple[int, ...] = (10, 20)
METRIC_NAMES: tuple[str, ...] = ("hr", "ndcg", "mrr")

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class SparseRanker(Protocol):
    """A scorer that also ranks targets without scoring every item: ``target_ranks`` returns
    exactly what :func:`target_ranks` gives on its masked float32 scores (the ``"index"`` rule),
    and :func:`ranking_moments` uses it instead of the dense scores."""

    def __call__(self, history: torch.Tensor) -> torch.Tensor: ...

    def target_ranks(
        self, history: torch.Tensor, targets: torch.Tensor, *, mask_history: bool
    ) -> torch.Tensor: ...


Ties = Literal["index", "topk"]
TIES: tuple[Ties, ...] = ("index", "topk")


def mask_scores(scores: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
    """Scores with the padding column, and the items of ``history`` if given, set to ``-inf``.

    Args:
        scores: ``[B, n_items + 1]`` scores (not modified).
        history: ``[B, L]`` item indices (or step tokens, ``pipelines.model.sasrec.step_tokens``),
            0 for padding, or None.
    """
    masked = scores.clone()
    masked[:, 0] = float("-inf")
    if history is not None:
        # a step token's item is the token modulo n_items + 1; a plain index is its own item
        masked.scatter_(1, history.long() % scores.shape[1], float("-inf"))
    return masked


# rows of the comparison buffer :func:`_count_rows` reuses: small enough to stay in cache
_COUNT_ROWS = 8
# float32 counts are exact integers below 2**24 columns
_FLOAT32_EXACT = 1 << 24


def _count_rows(
    scores: torch.Tensor,
    reference: torch.Tensor,
    compare: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """Per row, the number of columns where ``compare(scores, reference)`` holds, as float64.

    Summing a bool tensor along rows is slow on the CPU; comparing into a reused float buffer of
    a few rows and summing that is an order of magnitude faster and just as exact (every partial
    sum is a whole number the float holds exactly).
    """
    if scores.device.type != "cpu":
        return compare(scores, reference).sum(1).double()
    rows, columns = scores.shape
    dtype = torch.float32 if columns < _FLOAT32_EXACT else torch.float64
    buffer = torch.empty((min(rows, _COUNT_ROWS), columns), dtype=dtype)
    counts = torch.empty(rows, dtype=torch.float64)
    for start in range(0, rows, _COUNT_ROWS):
        stop = min(rows, start + _COUNT_ROWS)
        part = buffer[: stop - start]
        compare(scores[start:stop], reference[start:stop], out=part)
        counts[start:stop] = part.sum(1)
    return counts


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items (see the module doc for ties and misses).

    Args:
        scores: ``[B, n_items + 1]`` scores, padding already ``-inf``.
        targets: ``[B]`` target item indices (1..n_items).

    Returns:
        ``[B]`` float ranks; ``inf`` for a target scored ``-inf``.
    """
    return _ranks(scores, targets, None)


def masked_target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None
) -> torch.Tensor:
    """``target_ranks(mask_scores(scores, history), targets)``, without copying ``scores``.

    The padding column and the items of ``history`` (if given) do not rank: the counts over
    every column are corrected by what those few columns added, which gives the same ranks to
    the last bit as masking a copy.

    Args:
        scores: ``[B, n_items + 1]`` scores (not modified).
        targets: ``[B]`` target item indices (1..n_items).
        history: ``[B, L]`` item indices or step tokens (0 for padding), or None.
    """
    masked = torch.zeros((scores.shape[0], 1), dtype=torch.int64, device=scores.device)
    if history is not None:
        # a step token's item is the token modulo n_items + 1 (as in mask_scores)
        masked = torch.cat([masked, history.long() % scores.shape[1]], dim=1)
    return _ranks(scores, targets, masked)


def _ranks(
    scores: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor | None
) -> torch.Tensor:
    """Ranks of the targets with the columns ``masked`` (``[B, M]``, repeats allowed) taken as
    ``-inf``; None: no column is."""
    targets = targets.long()
    target_scores = scores.gather(1, targets.unsqueeze(1))
    above = _count_rows(scores, target_scores, torch.gt)
    equal = _count_rows(scores, target_scores, torch.eq)
    target_masked = torch.zeros_like(targets, dtype=torch.bool)
    if masked is not None:
        # each masked column counted once: sort the row's columns and keep the first of a run
        columns = masked.sort(1).values
        first = torch.ones_like(columns, dtype=torch.bool)
        first[:, 1:] = columns[:, 1:] != columns[:, :-1]
        values = scores.gather(1, columns)
        above -= ((values > target_scores) & first).sum(1).double()
        equal -= ((values == target_scores) & first).sum(1).double()
        target_masked = (columns == targets.unsqueeze(1)).any(1)
    ranks = above
    # equal scores are rare for a model: only the rows that have them (beside the target
    # itself) look at item indices
    tied = (equal > 1).nonzero().squeeze(1)
    if len(tied):
        items = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0)
        before = (scores[tied] == target_scores[tied]) & (items < targets[tied].unsqueeze(1))
        if masked is not None:
            before[torch.arange(len(tied), device=scores.device).unsqueeze(1), masked[tied]] = False
        ranks[tied] += before.sum(1).double()
    lost = torch.isneginf(target_scores.squeeze(1)) | target_masked
    return ranks.masked_fill(lost, math.inf)


def topk_ranks(scores: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """0-based position of each target in ``torch.topk(scores, k)``; ``inf`` if absent.

    Args:
        scores: ``[B, n_items + 1]`` scores, padding already ``-inf``.
        targets: ``[B]`` target item indices (1..n_items).
        k: Length of the list, at most the number of columns.

    Returns:
        ``[B]`` float ranks below ``k``, or ``inf`` for a target outside the list or scored
        ``-inf``.
    """
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
    found = top == targets.long().unsqueeze(1)
    ranks = found.double().argmax(1).double()
    target_scores = scores.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    return ranks.masked_fill(~found.any(1) | torch.isneginf(target_scores), math.inf)


def batch_metric_values(
    scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = KS, ties: Ties = "index"
) -> dict[str, torch.Tensor]:
    """Each user's metrics at each ``k`` under the tie rule ``ties`` (see
    :func:`batch_metric_sums` for the arguments), as float64 ``[B]`` tensors."""
    if ties == "index":
        return per_user_metrics(target_ranks(scores, targets), ks)
    if ties == "topk":
        values: dict[str, torch.Tensor] = {}
        for k in ks:
            values.update(per_user_metrics(topk_ranks(scores, targets, k), (k,)))
        return values
    raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def batch_metric_sums(
    scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = KS, ties: Ties = "index"
) -> dict[str, float]:
    """Sums over a batch of users of the metrics at each ``k``, under the tie rule ``ties``.

    Args:
        scores: ``[B, n_items + 1]`` scores, padding (and masked items) already ``-inf``.
        targets: ``[B]`` target item indices.
        ks: Cut-offs.
        ties: ``"index"`` or ``"topk"`` (see the module doc).

    Raises:
        ValueError: ``ties`` is neither.
    """
    if ties == "index":
        return metric_sums(target_ranks(scores, targets), ks)
    if ties == "topk":
        sums: dict[str, float] = {}
        for k in ks:
            sums.update(metric_sums(topk_ranks(scores, targets, k), (k,)))
        return sums
    raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def per_user_metrics(ranks: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, torch.Tensor]:
    """HR@K, NDCG@K and MRR@K of each user for the given ``ranks`` (0-based), as float64.

    With one target per user, NDCG@K is ``1 / log2(rank + 2)`` for a rank below K, else 0.
    """
    values: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = ranks < k
        # ranks of misses may be inf: the where() keeps them out of the arithmetic
        safe = torch.where(hit, ranks, torch.zeros_like(ranks)).double()
        zero = torch.zeros_like(safe)
        values[f"hr@{k}"] = hit.double()
        values[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(safe + 2.0), zero)
        values[f"mrr@{k}"] = torch.where(hit, 1.0 / (safe + 1.0), zero)
    return values


def metric_sums(ranks: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """Sums over users of HR@K, NDCG@K and MRR@K for the given ``ranks`` (0-based)."""
    return {name: float(value.sum()) for name, value in per_user_metrics(ranks, ks).items()}


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """Metric keys in reporting order: ``hr@10, ndcg@10, mrr@10, hr@20, ...``."""
    return [f"{name}@{k}" for k in ks for name in METRIC_NAMES]


class RankingOptions(TypedDict, total=False):
    """The keyword arguments of :func:`ranking_sums` that the functions built on it pass on."""

    batch_size: int
    mask_history: bool
    ks: Sequence[int]
    device: torch.device | str
    ties: Ties


def ranking_metrics(
    score_fn: ScoreFn,
    histories: Sequence[Sequence[int]] | Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    **options: Unpack[RankingOptions],
) -> dict[str, float]:
    """Mean full-ranking metrics of ``score_fn`` over users, computed in batches (arguments as
    :func:`ranking_sums`).

    Returns:
        ``{"hr@10": ..., "ndcg@10": ..., ...}`` averaged over users (0.0 for no users).

    Raises:
        ValueError: Histories and targets differ in number, or ``ties`` is unknown.
    """
    return ranking_sums(score_fn, histories, targets, **options).moments()[0]


def ranking_moments(
    score_fn: ScoreFn,
    histories: Sequence[Sequence[int]] | Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    **options: Unpack[RankingOptions],
) -> tuple[dict[str, float], dict[str, float]]:
    """The means of :func:`ranking_metrics` and each one's standard error over the users.

    The standard error is the users' sample standard deviation over the square root of their
    number (0.0 for fewer than two users): what a mean over a random sample of users is off by.

    Raises:
        ValueError: Histories and targets differ in number, or ``ties`` is unknown.
    """
    return ranking_sums(score_fn, histories, targets, **options).moments()


@dataclass(frozen=True)
class MetricSums:
    """Sums over users of each metric and of its square, and the users: what adds up across
    shards of the users (``pack`` and ``unpack`` carry it through one reduction)."""

    totals: dict[str, float]
    squares: dict[str, float]
    count: int

    def pack(self) -> list[float]:
        return [*self.totals.values(), *self.squares.values(), float(self.count)]

    def unpack(self, values: Sequence[float]) -> MetricSums:
        """Sums of the same metrics holding ``values`` (as :meth:`pack` orders them)."""
        names = list(self.totals)
        return MetricSums(
            dict(zip(names, values[: len(names)], strict=True)),
            dict(zip(names, values[len(names) : 2 * len(names)], strict=True)),
            round(values[-1]),
        )

    def moments(self) -> tuple[dict[str, float], dict[str, float]]:
        """Means and standard errors (see :func:`ranking_moments`)."""
        count = self.count
        means = {name: total / max(count, 1) for name, total in self.totals.items()}
        errors = {}
        for name, mean in means.items():
            if count < 2:
                errors[name] = 0.0
                continue
            variance = max(self.squares[name] - count * mean * mean, 0.0) / (count - 1)
            errors[name] = math.sqrt(variance / count)
        return means, errors


def ranking_sums(
    score_fn: ScoreFn,
    histories: Sequence[Sequence[int]] | Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 512,
    mask_history: bool = False,
    ks: Sequence[int] = KS,
    device: torch.device | str = "cpu",
    ties: Ties = "index",
) -> MetricSums:
    """Sums over users of each metric and of its square, computed in batches.

    Args:
        score_fn: Maps a left-padded ``[B, L]`` history batch to ``[B, n_items + 1]`` scores.
            A :class:`SparseRanker` ranks the targets itself under the ``"index"`` rule.
        histories: Each user's history, oldest step first.
        targets: Each user's target item.
        batch_size: Users scored at once.
        mask_history: Exclude the items of each history from its ranking.
        ks: Cut-offs.
        device: Where the history batches are put.
        ties: How equal scores are ordered, ``"index"`` or ``"topk"`` (see the module doc).

    Raises:
        ValueError: Histories and targets differ in number, or ``ties`` is unknown.
    """
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    from pipelines.data.sequences import left_pad

    totals = dict.fromkeys(metric_names(ks), 0.0)
    squares = dict.fromkeys(metric_names(ks), 0.0)
    target_array = np.asarray(targets, dtype=np.int64)
    for start in range(0, len(histories), batch_size):
        chunk = histories[start : start + batch_size]
        width = max(1, max(len(h) for h in chunk))
        history = torch.from_numpy(left_pad(chunk, width)).to(device)
        batch_targets = torch.from_numpy(target_array[start : start + batch_size]).to(device)
        if ties == "index" and isinstance(score_fn, SparseRanker):
            ranks = score_fn.target_ranks(history, batch_targets, mask_history=mask_history)
            values_by_name = per_user_metrics(ranks, ks)
        elif ties == "index":
            scores = score_fn(history).float()
            ranks = masked_target_ranks(scores, batch_targets, history if mask_history else None)
            values_by_name = per_user_metrics(ranks, ks)
        else:
            scores = mask_scores(score_fn(history).float(), history if mask_history else None)
            values_by_name = batch_metric_values(scores, batch_targets, ks, ties)
        for name, values in values_by_name.items():
            totals[name] += float(values.sum())
            squares[name] += float((values * values).sum())
    return MetricSums(totals, squares, len(histories))
