"""Behaviour of the SASRec model: invariances, masking of padding, the two losses."""

from __future__ import annotations

import pytest
import torch

from pipelines.data.sequences import left_pad
from pipelines.model.sasrec import (
    ModelSpec,
    SASRec,
    full_softmax_loss,
    next_item_pairs,
    sampled_softmax_loss,
    sampling_probs,
)

N_ITEMS = 30


def _model(**overrides: int) -> SASRec:
    torch.manual_seed(0)
    spec = ModelSpec(n_items=N_ITEMS, hidden=16, layers=2, heads=2, max_len=8, n_categories=4)
    spec = ModelSpec(**{**spec.to_dict(), **overrides})
    category = torch.arange(N_ITEMS + 1) % 5
    return SASRec(spec, category if spec.n_categories else None).eval()


def _batch(*histories: list[int], width: int) -> torch.Tensor:
    return torch.from_numpy(left_pad(histories, width))


def test_left_padding_does_not_change_scores() -> None:
    model = _model()
    history = [3, 7, 7, 12, 5]
    reference = model.score(_batch(history, width=len(history)))
    for width in (6, 8, 12):
        padded = model.score(_batch(history, width=width))
        torch.testing.assert_close(padded[:, 1:], reference[:, 1:], atol=1e-5, rtol=1e-5)


def test_scores_do_not_depend_on_other_sequences_in_the_batch() -> None:
    model = _model()
    histories = [[1, 2, 3], [9, 8, 7, 6, 5, 4, 3], [11]]
    together = model.score(_batch(*histories, width=8))
    for row, history in enumerate(histories):
        alone = model.score(_batch(history, width=len(history)))
        torch.testing.assert_close(together[row, 1:], alone[0, 1:], atol=1e-5, rtol=1e-5)


def test_history_longer_than_max_len_keeps_its_newest_steps() -> None:
    model = _model()
    long = list(range(1, 21))
    torch.testing.assert_close(
        model.score(_batch(long, width=20)), model.score(_batch(long[-8:], width=8))
    )


def test_padding_item_never_ranks() -> None:
    model = _model()
    # a model whose padding embedding scores highest would rank it first without the mask
    with torch.no_grad():
        model.item_emb.weight[0] = 100.0
    scores = model.score(_batch([4, 5, 6], [], [1], width=4))
    assert torch.isneginf(scores[:, 0]).all()
    assert not (scores.topk(N_ITEMS, dim=1).indices == 0).any()
    assert torch.isfinite(scores[:, 1:]).all()


def test_scores_without_category_feature() -> None:
    model = _model(n_categories=0)
    assert model.category_emb is None
    assert model.score(_batch([1, 2], width=3)).shape == (1, N_ITEMS + 1)


def test_category_lookup_of_the_wrong_size_is_rejected() -> None:
    spec = ModelSpec(n_items=N_ITEMS, n_categories=3)
    with pytest.raises(ValueError, match=r"item_category must have shape \(31,\)"):
        SASRec(spec, torch.zeros(5, dtype=torch.long))


def test_hidden_not_divisible_by_heads_is_rejected() -> None:
    with pytest.raises(ValueError, match="hidden=10 is not divisible by heads=3"):
        SASRec(ModelSpec(n_items=5, hidden=10, heads=3))


def _training_batch() -> torch.Tensor:
    return _batch([1, 2, 3, 4, 5], [6, 7, 8], [2, 4, 6, 8, 10, 12, 14, 16, 18], width=9)


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_sampled_softmax_loss_trains(sampler: str) -> None:
    model = _model().train()
    batch = _training_batch()
    counts = torch.bincount(batch.flatten(), minlength=N_ITEMS + 1)
    probs = sampling_probs(counts, sampler)  # type: ignore[arg-type]
    assert probs[0] == 0 and torch.isclose(probs.sum(), torch.tensor(1.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(30):
        inputs, targets = next_item_pairs(batch, model.spec)
        loss = sampled_softmax_loss(model, model(inputs), targets, probs, 16, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert model.item_emb.weight.grad is not None
    assert losses[-1] < losses[0] * 0.7


def test_full_softmax_loss_ignores_padding_targets() -> None:
    model = _model()
    batch = _training_batch()
    inputs, targets = next_item_pairs(batch, model.spec)
    hidden = model(inputs)
    keep = targets > 0
    expected = torch.nn.functional.cross_entropy(
        model.logits(hidden[keep]), targets[keep], reduction="mean"
    )
    torch.testing.assert_close(full_softmax_loss(model, hidden, targets), expected)
    # each sequence predicts all its steps but the first
    assert int(keep.sum()) == 4 + 2 + 8
    assert targets[0].tolist() == [0, 0, 0, 0, 2, 3, 4, 5]


def test_label_smoothing_spreads_mass_over_the_real_items_only() -> None:
    model = _model()
    batch = _training_batch()
    inputs, targets = next_item_pairs(batch, model.spec)
    hidden = model(inputs)
    keep = targets > 0
    logits = model.logits(hidden[keep])[:, 1:]  # the padding column (-inf) gets no mass
    expected = torch.nn.functional.cross_entropy(logits, targets[keep] - 1, label_smoothing=0.1)
    torch.testing.assert_close(full_softmax_loss(model, hidden, targets, 0.1), expected)
    plain = full_softmax_loss(model, hidden, targets)
    torch.testing.assert_close(full_softmax_loss(model, hidden, targets, 0.0), plain)
    assert torch.isfinite(full_softmax_loss(model, hidden, targets, 0.5))


def test_left_pad_cuts_and_pads() -> None:
    assert left_pad([[1, 2, 3], [], [4]], 2).tolist() == [[2, 3], [0, 0], [0, 4]]
