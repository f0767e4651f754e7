"""Most-popular and item-to-item transition baselines against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.data.sequences import left_pad
from pipelines.model.baselines import ItemTransition, MostPopular, item_counts
from pipelines.model.ranking import mask_scores, ranking_metrics, target_ranks

# 5 items; transitions: 1->2 twice, 1->3 once, 2->3 once, 3->1 once, 4->5 once
TRAIN = [
    np.array([1, 2, 3]),
    np.array([1, 2]),
    np.array([3, 1, 3]),
    np.array([4, 5]),
    np.array([2]),
]
N_ITEMS = 5


def _history(*histories: list[int]) -> torch.Tensor:
    return torch.from_numpy(left_pad(histories, 3))


def test_item_counts() -> None:
    assert item_counts(TRAIN, N_ITEMS).tolist() == [0, 3, 3, 3, 1, 1]
    with pytest.raises(ValueError, match="item index 7 is above n_items=5"):
        item_counts([np.array([7])], N_ITEMS)


def test_most_popular_scores_every_user_alike() -> None:
    scores = MostPopular(TRAIN, N_ITEMS)(_history([1], [4, 5]))
    assert scores.shape == (2, N_ITEMS + 1)
    assert scores[:, 0].isneginf().all()
    assert scores[0, 1:].tolist() == [3, 3, 3, 1, 1]
    assert torch.equal(scores[0], scores[1])


def test_transition_counts() -> None:
    model = ItemTransition(TRAIN, N_ITEMS)
    assert model.transitions(1) == {2: 2, 3: 1}
    assert model.transitions(2) == {3: 1}
    assert model.transitions(5) == {}


def test_transition_scores_back_off_to_popularity() -> None:
    model = ItemTransition(TRAIN, N_ITEMS)
    scores = model(_history([3, 1], [4, 2], [4, 5], []))
    backoff = np.array([3, 3, 3, 1, 1]) / 4.0
    assert scores[:, 0].isneginf().all()
    # last item 1: 2 followed twice, 3 once
    assert scores[0, 1:].numpy() == pytest.approx(backoff + np.array([0, 2, 1, 0, 0]))
    # last item 2: 3 followed once
    assert scores[1, 1:].numpy() == pytest.approx(backoff + np.array([0, 0, 1, 0, 0]))
    # last item 5 was never followed, and an empty history: popularity only
    assert scores[2, 1:].numpy() == pytest.approx(backoff)
    assert scores[3, 1:].numpy() == pytest.approx(backoff)


def test_baseline_metrics_by_hand() -> None:
    histories = [np.array([1]), np.array([2]), np.array([5])]
    targets = [3, 3, 4]
    # most popular ranks 1, 2, 3 (ties by index), 4, 5: target 3 -> rank 2, target 4 -> rank 3
    popular = ranking_metrics(MostPopular(TRAIN, N_ITEMS), histories, targets, ks=(1, 3))
    assert popular["hr@1"] == 0.0
    assert popular["hr@3"] == pytest.approx(2 / 3)
    # transitions: after 1 -> 2, 3 (rank 1); after 2 -> 3 (rank 0); after 5 -> popularity (rank 3)
    transition = ranking_metrics(ItemTransition(TRAIN, N_ITEMS), histories, targets, ks=(1, 3))
    assert transition["hr@1"] == pytest.approx(1 / 3)
    assert transition["hr@3"] == pytest.approx(2 / 3)
    assert transition["mrr@3"] == pytest.approx((0.5 + 1.0) / 3)


def _dense_ranks(scorer, history: torch.Tensor, targets: torch.Tensor, mask: bool) -> torch.Tensor:
    scores = mask_scores(scorer(history).float(), history if mask else None)
    return target_ranks(scores, targets)


def _many_ties() -> list[np.ndarray]:
    # item 1 followed thousands of times by each of items 2..80, with close counts: float32 maps
    # many of the transition scores (count + popularity below 1) onto equal values
    rng = np.random.default_rng(3)
    chain: list[int] = []
    for item in range(2, 80):
        chain += [1, item] * int(3000 + rng.integers(0, 3))
    return [np.array(chain)] + [rng.integers(1, 151, 20) for _ in range(300)]


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("scorer_type", [MostPopular, ItemTransition])
@pytest.mark.parametrize("train", ["random", "many_ties"])
def test_sparse_ranks_equal_the_dense_ranks(
    scorer_type: type[MostPopular] | type[ItemTransition], mask: bool, train: str
) -> None:
    rng = np.random.default_rng(11)
    n_items = 150
    sequences = (
        [rng.integers(1, n_items + 1, rng.integers(1, 12)) for _ in range(400)]
        if train == "random"
        else _many_ties()
    )
    scorer = scorer_type(sequences, n_items)
    # histories end on item 1 a third of the time (its long transition row), some are empty
    histories = [
        np.r_[rng.integers(1, n_items + 1, rng.integers(0, 8)), [1] * int(rng.random() < 0.3)]
        for _ in range(600)
    ]
    history = torch.from_numpy(left_pad(histories, 9).astype(np.int64))
    targets = torch.from_numpy(rng.integers(1, n_items + 1, len(histories)))
    dense = _dense_ranks(scorer, history, targets, mask)
    sparse = scorer.target_ranks(history, targets, mask_history=mask)
    assert torch.equal(sparse, dense)
    if mask:
        assert sparse.isinf().any(), "no target fell in its history: the mask was not exercised"
    assert len(torch.unique(dense)) > 20


@pytest.mark.parametrize("mask", [False, True])
def test_ranking_metrics_of_a_baseline_are_the_dense_ones(mask: bool) -> None:
    scorer = ItemTransition(_many_ties(), 150)
    rng = np.random.default_rng(5)
    histories = [rng.integers(1, 80, rng.integers(1, 6)) for _ in range(300)]
    targets = rng.integers(1, 151, len(histories))
    sparse = ranking_metrics(scorer, histories, targets, batch_size=64, mask_history=mask)
    dense = ranking_metrics(
        lambda history: scorer(history), histories, targets, batch_size=64, mask_history=mask
    )
    assert sparse == dense
    assert sparse["hr@20"] > 0


@pytest.mark.parametrize("mask", [False, True])
def test_transition_ranks_in_small_groups_of_users_are_the_dense_ranks(mask: bool) -> None:
    scorer = ItemTransition(_many_ties(), 150)
    scorer.OWN_PAIRS = 50  # a few users per group; item 1's row alone is longer
    rng = np.random.default_rng(8)
    histories = [np.r_[rng.integers(1, 151, 3), rng.integers(1, 3)] for _ in range(200)]
    history = torch.from_numpy(left_pad(histories, 4).astype(np.int64))
    targets = torch.from_numpy(rng.integers(1, 151, len(histories)))
    sparse = scorer.target_ranks(history, targets, mask_history=mask)
    assert torch.equal(sparse, _dense_ranks(scorer, history, targets, mask))
