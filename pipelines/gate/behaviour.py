"""Behavioural tests of a served recommender: properties every answer must have.

Each function takes a loaded :class:`~pipelines.serving.runtime.Recommender` (what serving runs) and
returns a :class:`~pipelines.gate.verdict.Check`; none of them needs to know the backend.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.core.judgment import Check, Status
from pipelines.serving.runtime import Recommender


def finite_scores(recommender: Recommender, history: np.ndarray) -> Check:
    """Every real item's score is a finite number (no NaN, no infinity)."""
    scores = recommender.scores(history)[:, 1:]
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        detail = f"{bad} NaN or infinite item scores"
        return Check(metric="finite_scores", outcome="fail", value=bad, limit=0, detail=detail)
    detail = "all item scores are finite"
    return Check(metric="finite_scores", outcome="pass", value=0, limit=0, detail=detail)


def no_duplicates(recommender: Recommender, history: np.ndarray) -> Check:
    """No list holds the same item twice."""
    items, _ = recommender.recommend(history)
    rows = sum(len(np.unique(row)) != len(row) for row in items)
    outcome: Status = "fail" if rows else "pass"
    return Check(
        metric="no_duplicate_items",
        outcome=outcome,
        value=rows,
        limit=0,
        detail=f"{rows} lists with a repeated item",
    )


def catalog_only(recommender: Recommender, history: np.ndarray) -> Check:
    """Every recommended item is a catalog item (1..n_items), never padding."""
    items, _ = recommender.recommend(history)
    outside = int(((items < 1) | (items > recommender.n_items)).sum())
    outcome: Status = "fail" if outside else "pass"
    return Check(
        metric="catalog_items_only",
        outcome=outcome,
        value=outside,
        limit=0,
        detail=f"{outside} recommended items outside 1..{recommender.n_items}",
    )


def cold_start(recommender: Recommender) -> Check:
    """A user without history gets a full list of catalog items with finite scores."""
    items, scores = recommender.recommend(recommender.pad([[]]))
    ok = (
        items.shape == (1, recommender.top_k)
        and bool(((items >= 1) & (items <= recommender.n_items)).all())
        and bool(np.isfinite(scores).all())
        and len(np.unique(items)) == items.shape[1]
    )
    detail = f"{items.shape[1]} items for an empty history" if ok else f"got {items.tolist()}"
    return Check(
        metric="cold_start_user",
        outcome="pass" if ok else "fail",
        value=int(items.shape[1]),
        limit="> 0",
        detail=detail,
    )


def batch_invariance(recommender: Recommender, history: np.ndarray, tolerance: float) -> Check:
    """A user's answer does not depend on the other sequences in its batch.

    Each of the first users is scored alone, then inside the whole batch (with longer and
    shorter neighbours, so with different amounts of padding around it).
    """
    users = min(len(history), 16)
    together = recommender.scores(history)[:users, 1:]
    alone = np.concatenate([recommender.scores(history[i : i + 1]) for i in range(users)])[:, 1:]
    diff = float(np.abs(together - alone).max()) if users else 0.0
    same_top = all(
        np.array_equal(recommender.recommend(history[i : i + 1])[0][0], top)
        for i, top in enumerate(recommender.recommend(history)[0][:users])
    )
    ok = np.isfinite(diff) and diff <= tolerance and same_top
    detail = f"largest score change {diff:.2e} (allowed {tolerance:g}); same top-k: {same_top}"
    return Check(
        metric="batch_invariance",
        outcome="pass" if ok else "fail",
        value=float(f"{diff:.3g}"),
        limit=tolerance,
        detail=detail,
    )


def padding_invariance(
    recommender: Recommender,
    histories: list[np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
    tolerance: float,
) -> Check:
    """The answer for a short history does not depend on its padding.

    The artifact sees the history left-padded to ``max_len``; ``reference`` (the PyTorch model)
    scores the same history without any padding. Same top-k, scores within ``tolerance``.
    """
    short = [h for h in histories if 0 < len(h) < recommender.max_len][:16]
    if not short:
        return Check(
            metric="padding_invariance",
            outcome="skipped",
            limit=tolerance,
            detail="no short history",
        )
    worst = 0.0
    mismatched = 0
    for history in short:
        padded = recommender.scores(recommender.pad([history]))[0, 1:]
        bare = np.asarray(reference(np.asarray([history], dtype=np.int64)))[0, 1:]
        worst = max(worst, float(np.abs(padded - bare).max()))
        top = recommender.top_k
        mismatched += not np.array_equal(
            np.argsort(-padded, kind="stable")[:top], np.argsort(-bare, kind="stable")[:top]
        )
    # scores of reduced-precision artifacts differ from fp32 by their parity error, so a
    # score bound only applies to fp32
    score_ok = recommender.precision != "fp32" or worst <= tolerance * 10
    ok = np.isfinite(worst) and score_ok and mismatched <= len(short) // 10
    detail = (
        f"{len(short)} short histories: {mismatched} top-{recommender.top_k} lists changed, "
        f"largest score change {worst:.2e}"
    )
    value = float(f"{worst:.3g}")
    return Check(
        metric="padding_invariance",
        outcome="pass" if ok else "fail",
        value=value,
        limit=tolerance,
        detail=detail,
    )
