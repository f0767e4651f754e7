"""The train stage's ``metrics.json`` as a typed contract (``metrics.schema.json`` beside it).

Ranking metrics are full-ranking metrics of the next item (``pipelines.model.ranking``): every
user has one target, so HR@K is also Recall@K. Keys keep their ``name@K`` spelling in JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import ConfigDict, Field

from pipelines.core.contracts import Contract, read_contract

METRICS = "metrics.json"
TRAINING_METRICS_VERSION: Final = 3


class RankingMetrics(Contract):
    """Mean full-ranking metrics over users at cut-offs 10 and 20."""

    model_config = ConfigDict(populate_by_name=True)

    hr_at_10: float = Field(alias="hr@10")
    """Share of users whose next item is among the top 10 (HR@10 = Recall@10)."""
    ndcg_at_10: float = Field(alias="ndcg@10")
    """Mean of ``1 / log2(rank + 2)`` for a next item ranked in the top 10 (0-based), else 0."""
    mrr_at_10: float = Field(alias="mrr@10")
    """Mean of ``1 / (rank + 1)`` for a next item ranked in the top 10, else 0."""
    hr_at_20: float = Field(alias="hr@20")
    ndcg_at_20: float = Field(alias="ndcg@20")
    mrr_at_20: float = Field(alias="mrr@20")


class Baselines(Contract):
    """The baselines on the same test users, scored like the model."""

    most_popular: RankingMetrics
    """Every user gets the items ranked by their count in the training sequences."""
    item_transition: RankingMetrics
    """The items that followed the user's last item in training, backed off to popularity."""


class ScoringProtocol(Contract):
    """How the ranking metrics were computed; numbers of different protocols do not compare."""

    mask_history: bool
    """True: the user's history items were excluded from the ranking."""
    ties: Literal["index", "topk"]
    """How equal scores were ordered (``pipelines.model.ranking``)."""


class UserSample(Contract):
    """The users behind a figure."""

    users: int
    """Users scored."""
    of: int
    """Users in the split."""
    seed: int | None
    """The seed that drew a sample of them; null when every user was scored."""


class TrainingMetrics(Contract):
    """``metrics.json`` of the train stage: the best model's quality beside the baselines."""

    schema_version: Literal[3]
    """Version of this layout; a reader refuses another one."""
    protocol: ScoringProtocol
    """The protocol of every number below."""
    best_epoch: int
    """The epoch whose weights were kept (best validation NDCG@10)."""
    epochs_run: int
    stopped_early: bool
    """True when training stopped for want of a validation gain (``train.patience``)."""
    best_valid: RankingMetrics | None
    """Validation metrics of the best epoch; null when no epoch was evaluated."""
    best_valid_users: UserSample | None
    """The validation users they are over (``train.valid_users``: a seeded sample of them)."""
    test: RankingMetrics
    """Test metrics of the best model."""
    test_users: UserSample
    """The test users they and the baselines are over: every one."""
    baselines: Baselines


def read_training_metrics(folder: Path) -> TrainingMetrics:
    """The train stage's metrics in ``folder``.

    Raises:
        InputError: They are missing, unreadable, or do not match :class:`TrainingMetrics`.
    """
    return read_contract(
        folder / METRICS, TrainingMetrics, "training metrics document", stage="train"
    )
