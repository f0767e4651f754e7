"""Full-ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.data.sequences import step_tokens
from pipelines.model.ranking import (
    batch_metric_sums,
    mask_scores,
    masked_target_ranks,
    metric_names,
    metric_sums,
    per_user_metrics,
    ranking_metrics,
    target_ranks,
    topk_ranks,
)

INF = float("inf")


def test_target_ranks_by_hand() -> None:
    scores = mask_scores(
        torch.tensor(
            [
                [9.0, 0.1, 0.5, 0.3, 0.9],  # target 3: items 2 and 4 above -> rank 2
                [9.0, 0.2, 0.2, 0.2, 0.1],  # target 3 tied with 1 and 2 -> rank 2 (ties by index)
                [9.0, 0.2, 0.2, 0.2, 0.1],  # target 1 first among the ties -> rank 0
                [9.0, 0.4, -INF, 0.3, 0.1],  # target 2 scored -inf -> a miss
            ]
        )
    )
    ranks = target_ranks(scores, torch.tensor([3, 3, 1, 2]))
    assert ranks.tolist() == [2.0, 2.0, 0.0, INF]


def test_padding_column_is_masked_even_if_it_scores_highest() -> None:
    scores = torch.tensor([[100.0, 0.1, 0.2]])
    assert target_ranks(mask_scores(scores), torch.tensor([2])).tolist() == [0.0]
    assert mask_scores(scores)[0, 0] == -INF
    assert scores[0, 0] == 100.0  # the input is not modified


def test_metric_sums_by_hand() -> None:
    ranks = torch.tensor([0.0, 2.0, 12.0, 25.0, INF], dtype=torch.float64)
    sums = metric_sums(ranks, ks=(10, 20))
    assert sums["hr@10"] == 2
    assert sums["hr@20"] == 3
    assert sums["ndcg@10"] == pytest.approx(1.0 + 1.0 / math.log2(4))
    assert sums["ndcg@20"] == pytest.approx(1.0 + 0.5 + 1.0 / math.log2(14))
    assert sums["mrr@10"] == pytest.approx(1.0 + 1.0 / 3)
    assert sums["mrr@20"] == pytest.approx(1.0 + 1.0 / 3 + 1.0 / 13)


def test_per_user_metrics_by_hand() -> None:
    ranks = torch.tensor([0.0, 2.0, 12.0, INF], dtype=torch.float64)
    values = per_user_metrics(ranks, ks=(10, 20))
    assert values["hr@10"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert values["hr@20"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert values["ndcg@10"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert values["ndcg@20"].tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(14), 0.0])
    assert values["mrr@20"].tolist() == pytest.approx([1.0, 1 / 3, 1 / 13, 0.0])
    assert all(value.dtype == torch.float64 for value in values.values())


def test_metric_names_order() -> None:
    assert metric_names((10, 20)) == [
        "hr@10",
        "ndcg@10",
        "mrr@10",
        "hr@20",
        "ndcg@20",
        "mrr@20",
    ]


def _fixed_scores(history: torch.Tensor) -> torch.Tensor:
    """Item i scores i: item 5 ranks first, then 4, 3, 2, 1."""
    return torch.arange(6, dtype=torch.float32).expand(history.shape[0], -1).clone()


def test_evaluate_by_hand_in_batches() -> None:
    histories = [np.array([1, 5]), np.array([4]), np.array([2, 3, 4])]
    targets = [5, 3, 1]  # ranks 0, 2, 4
    expected = {
        "hr@10": 1.0,
        "ndcg@10": (1.0 + 0.5 + 1 / math.log2(6)) / 3,
        "mrr@10": (1.0 + 1 / 3 + 1 / 5) / 3,
    }
    for batch_size in (1, 2, 512):
        got = ranking_metrics(_fixed_scores, histories, targets, batch_size=batch_size, ks=(10,))
        assert got == pytest.approx(expected)
    small = ranking_metrics(_fixed_scores, histories, targets, ks=(1, 3))
    assert small["hr@1"] == pytest.approx(1 / 3)
    assert small["hr@3"] == pytest.approx(2 / 3)
    assert small["ndcg@3"] == pytest.approx((1.0 + 0.5) / 3)


def test_mask_history_removes_seen_items() -> None:
    histories = [np.array([1, 5]), np.array([4]), np.array([2, 3, 4])]
    targets = [5, 3, 1]
    # user 1: target 5 is in the history -> a miss; user 2: 4 removed -> 3 ranks 1;
    # user 3: 4, 3, 2 removed -> 1 ranks after 5 only -> rank 1
    got = ranking_metrics(_fixed_scores, histories, targets, mask_history=True, ks=(10,))
    assert got["hr@10"] == pytest.approx(2 / 3)
    assert got["ndcg@10"] == pytest.approx((2 / math.log2(3)) / 3)
    assert got["mrr@10"] == pytest.approx((0.5 + 0.5) / 3)


def test_mask_history_reads_the_items_of_step_tokens() -> None:
    scores = torch.tensor([[0.0, 0.5, 0.4, 0.3, 0.2]])  # items 1..4
    # step tokens of items 1 (purchase) and 3 (add to cart) in a catalogue of 4 items
    tokens = torch.from_numpy(step_tokens(np.array([1, 3]), np.array([2, 1]), 4)).unsqueeze(0)
    assert tokens.tolist() == [[11, 8]]
    masked = mask_scores(scores, tokens)
    assert torch.isinf(masked[0, [0, 1, 3]]).all() and masked[0, 2] == 0.4 and masked[0, 4] == 0.2


def test_evaluate_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 histories but 1 targets"):
        ranking_metrics(_fixed_scores, [[1], [2]], [3])


def test_evaluate_without_users_gives_zeros() -> None:
    assert ranking_metrics(_fixed_scores, [], [], ks=(10,)) == {
        "hr@10": 0.0,
        "ndcg@10": 0.0,
        "mrr@10": 0.0,
    }


def test_topk_ranks_read_the_position_in_torch_topk() -> None:
    scores = mask_scores(
        torch.tensor(
            [
                [9.0, 0.1, 0.5, 0.3, 0.9],  # target 3 third in the list
                [9.0, 0.4, -INF, 0.3, 0.1],  # target 2 scored -inf -> a miss
                [9.0, 0.1, 0.5, 0.3, 0.9],  # target 1 last: outside a list of 3
            ]
        )
    )
    assert topk_ranks(scores, torch.tensor([3, 2, 1]), 3).tolist() == [2.0, INF, INF]
    # a list longer than the catalogue holds every item
    assert topk_ranks(scores, torch.tensor([3, 2, 1]), 50).tolist() == [2.0, INF, 3.0]


def test_topk_ties_follow_torch_topk_whatever_the_item_index() -> None:
    # many equal scores: the target's rank is where torch.topk happens to put it, the same
    # list RecBole's evaluator reads, not "ties by index"
    generator = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 4, (64, 200), generator=generator).float()
    scores = mask_scores(raw)
    targets = torch.randint(1, 200, (64,), generator=generator)
    top = torch.topk(scores, 10, dim=1).indices
    expected = [
        float(row.tolist().index(t)) if t in row.tolist() else INF
        for row, t in zip(top, targets.tolist(), strict=True)
    ]
    assert topk_ranks(scores, targets, 10).tolist() == expected
    # the index rule resolves these ties differently: the rules are not interchangeable
    assert target_ranks(scores, targets).tolist() != expected
    sums = batch_metric_sums(scores, targets, ks=(10,), ties="topk")
    assert sums == metric_sums(torch.tensor(expected, dtype=torch.float64), ks=(10,))


def test_topk_metrics_at_each_cut_off_come_from_their_own_list() -> None:
    histories = [np.array([1, 5]), np.array([4]), np.array([2, 3, 4])]
    targets = [5, 3, 1]  # no ties: both rules agree (ranks 0, 2, 4)
    for ks in ((10,), (1, 3)):
        by_index = ranking_metrics(_fixed_scores, histories, targets, ks=ks)
        assert ranking_metrics(_fixed_scores, histories, targets, ks=ks, ties="topk") == by_index
    masked = ranking_metrics(
        _fixed_scores, histories, targets, mask_history=True, ties="topk", ks=(10,)
    )
    assert masked == ranking_metrics(_fixed_scores, histories, targets, mask_history=True, ks=(10,))


def test_evaluate_rejects_an_unknown_tie_rule() -> None:
    with pytest.raises(ValueError, match="ties must be one of"):
        ranking_metrics(_fixed_scores, [[1]], [3], ties="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ties must be one of"):
        batch_metric_sums(torch.zeros(1, 3), torch.tensor([1]), ties="random")  # type: ignore[arg-type]


def test_target_ranks_count_ties_by_index_only_where_there_are_ties() -> None:
    # scores on a coarse grid: most rows have items tied with their target, some do not;
    # a few targets are -inf (masked): misses
    generator = torch.Generator().manual_seed(4)
    scores = torch.randint(0, 40, (300, 60), generator=generator).float()
    scores[:150] += torch.rand(150, 60, generator=generator)  # ties rare in these rows
    scores[:, 0] = float("-inf")
    targets = torch.randint(1, 60, (300,), generator=generator)
    scores[torch.arange(0, 300, 17), targets[::17]] = float("-inf")
    target_scores = scores.gather(1, targets.unsqueeze(1))
    items = torch.arange(60).unsqueeze(0)
    ahead = (scores > target_scores) | ((scores == target_scores) & (items < targets[:, None]))
    expected = ahead.sum(1).double()
    expected[torch.isneginf(target_scores.squeeze(1))] = math.inf
    ranks = target_ranks(scores, targets)
    assert torch.equal(ranks, expected)
    assert (ranks[150:] != (scores[150:] > target_scores[150:]).sum(1)).any()


@pytest.mark.parametrize("float64_counts", [False, True])
def test_masked_target_ranks_equal_the_ranks_of_a_masked_copy(
    float64_counts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # coarse scores (many ties), histories with repeated items and padding, targets inside
    # their own history, -inf and NaN scores: the ranks match masking a copy, bit for bit
    if float64_counts:
        monkeypatch.setattr("pipelines.model.ranking._FLOAT32_EXACT", 10)
    generator = torch.Generator().manual_seed(11)
    users, items = 37, 90
    scores = torch.randint(0, 25, (users, items), generator=generator).float()
    scores[:12] += torch.rand(12, items, generator=generator)
    scores[3, 5] = float("-inf")
    scores[4, 7] = float("nan")
    history = torch.randint(0, items, (users, 9), generator=generator)
    history[:, :3] = 0
    history[:, 4] = history[:, 5]
    targets = torch.randint(1, items, (users,), generator=generator)
    targets[::6] = history[::6, 7]
    targets[3] = 5
    before = scores.clone()
    for mask in (history, None):
        expected = target_ranks(mask_scores(scores, mask), targets)
        ranks = masked_target_ranks(scores, targets, mask)
        assert torch.equal(ranks, expected)
        assert torch.isinf(ranks[::6]).all() == (mask is not None)
    assert torch.equal(scores.nan_to_num(), before.nan_to_num())  # not modified


def test_masked_target_ranks_read_step_tokens_as_their_items() -> None:
    n_items = 6
    scores = torch.tensor([[-INF, 0.1, 0.9, 0.5, 0.7, 0.3, 0.2]])
    tokens = step_tokens(np.array([[0, 4, 2]]), np.array([[0, 1, 2]]), n_items)
    tokens_t = torch.from_numpy(tokens)
    # item 3 (0.5): items 2 and 4, the only ones above it, are masked
    assert masked_target_ranks(scores, torch.tensor([3]), tokens_t).tolist() == [0.0]
    assert masked_target_ranks(scores, torch.tensor([3])).tolist() == [2.0]
