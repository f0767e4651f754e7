"""The golden set: a fixed, seeded sample of test users, and each model's quality on it.

Quality is measured the way training measured the candidate (``pipelines.model.ranking``, under
the model's :class:`~pipelines.model.training.metrics.ScoringProtocol`): the target's rank among
the scores of every item, the history's items excluded when the protocol masks them, equal
scores ordered by the protocol's tie rule, and NDCG@10 and Recall@10 from that rank. The gate
keeps the value of every user, for the paired bootstrap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipelines.data.prepared import load_prepared
from pipelines.data.sequences import left_pad
from pipelines.gate.verdict import QUALITY_METRICS, QualityMetric
from pipelines.model.ranking import mask_scores, per_user_metrics, target_ranks, topk_ranks
from pipelines.model.training.metrics import ScoringProtocol
from pipelines.serving.runtime import Recommender

GOLDEN_SEED = 7
# users scored per request to the artifact
REQUEST_BATCH = 256
# the protocol of a model that records none: the training defaults before it was recorded
DEFAULT_PROTOCOL = ScoringProtocol(mask_history=False, ties="index")
# the gate's names for the ranking module's metrics (one target per user: HR@10 = Recall@10)
_RANKING_NAMES: dict[QualityMetric, str] = {"ndcg@10": "ndcg@10", "recall@10": "hr@10"}


def golden_set(
    prepared: Path, users: int, *, event_types: bool = False
) -> tuple[list[np.ndarray], np.ndarray]:
    """A fixed, seeded sample of test users: their histories and next items.

    With ``event_types`` the histories are step tokens (``pipelines.data.sequences``), for an
    artifact that reads them; the users are the same either way.
    """
    data = load_prepared(prepared, event_types=event_types)
    rng = np.random.default_rng(GOLDEN_SEED)
    count = min(users, len(data.test_target))
    rows = np.sort(rng.choice(len(data.test_target), size=count, replace=False))
    histories = data.model_inputs("test", event_types)
    return [histories[row] for row in rows], data.test_target[rows]


def per_user_quality(
    scores: np.ndarray,
    targets: np.ndarray,
    *,
    history: np.ndarray | None = None,
    protocol: ScoringProtocol = DEFAULT_PROTOCOL,
) -> dict[QualityMetric, np.ndarray]:
    """NDCG@10 and Recall@10 of each user from the scores of every item.

    Args:
        scores: ``[users, n_items + 1]`` scores; column 0 (padding) never ranks.
        targets: ``[users]`` each user's next item.
        history: ``[users, L]`` the padded histories the scores answer (item indices or step
            tokens); their items are excluded when ``protocol.mask_history``.
        protocol: Masking and tie rule.

    Returns:
        Per metric, one float64 value per user.
    """
    mask = torch.from_numpy(np.asarray(history)) if protocol.mask_history else None
    if protocol.mask_history and history is None:
        raise ValueError("a protocol that masks the history needs the histories")
    masked = mask_scores(torch.from_numpy(np.asarray(scores, dtype=np.float32)), mask)
    target_tensor = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    if protocol.ties == "topk":
        ranks = topk_ranks(masked, target_tensor, 10)
    else:
        ranks = target_ranks(masked, target_tensor)
    values = per_user_metrics(ranks, ks=(10,))
    return {metric: values[_RANKING_NAMES[metric]].numpy() for metric in QUALITY_METRICS}


def answer_quality(
    recommender: Recommender,
    histories: list[np.ndarray],
    targets: np.ndarray,
    protocol: ScoringProtocol = DEFAULT_PROTOCOL,
) -> dict[QualityMetric, np.ndarray]:
    """Per-user quality of the artifact's own scores for the golden ``histories``.

    The artifact reads the newest ``max_len`` steps; a masking protocol excludes every item of
    the whole history, as training's evaluation does.
    """
    padded = recommender.pad(histories)
    parts = [
        per_user_quality(
            recommender.scores(padded[i : i + REQUEST_BATCH]),
            targets[i : i + REQUEST_BATCH],
            history=_whole(histories[i : i + REQUEST_BATCH]) if protocol.mask_history else None,
            protocol=protocol,
        )
        for i in range(0, len(padded), REQUEST_BATCH)
    ]
    if not parts:
        return {metric: np.zeros(0) for metric in QUALITY_METRICS}
    return {metric: np.concatenate([part[metric] for part in parts]) for metric in QUALITY_METRICS}


def _whole(histories: list[np.ndarray]) -> np.ndarray:
    return left_pad(histories, max(1, max(len(h) for h in histories)))


def mean_quality(per_user: dict[QualityMetric, np.ndarray]) -> dict[QualityMetric, float]:
    """Mean of each metric over the users, rounded to 6 places (as the verdict records it)."""
    return {metric: round(float(values.mean()), 6) for metric, values in per_user.items()}
