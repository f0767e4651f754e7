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
    seen_before,
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


def _repeat_model(bias: float = 0.0) -> SASRec:
    model = _model(repeat_term=True)
    with torch.no_grad():
        assert model.repeat_gate is not None
        model.repeat_gate.weight.normal_(0.0, 0.5)
        model.repeat_gate.bias.fill_(bias)
    return model


def test_an_untrained_repeat_term_is_plain_sasrec() -> None:
    plain, repeat = _model(), _model(repeat_term=True)
    repeat.load_state_dict(plain.state_dict(), strict=False)
    batch = _batch([4, 5, 6, 4], [], [9], width=6)
    torch.testing.assert_close(repeat.score(batch), plain.score(batch))


def test_the_repeat_term_moves_the_history_items_only() -> None:
    model = _repeat_model(bias=-7.0)
    history = [4, 5, 6, 4]
    batch = _batch(history, [], width=6)
    hidden = model.encode(batch)[:, -1]
    offset = model.repeat_offset(hidden)
    plain = model.logits(hidden, torch.zeros(2, N_ITEMS + 1, dtype=torch.bool))
    scores = model.score(batch)
    seen = torch.zeros(N_ITEMS + 1, dtype=torch.bool)
    seen[history] = True
    # each history item once, however often it occurs; the others and the empty history unmoved
    torch.testing.assert_close(scores[0, seen], plain[0, seen] + offset[0])
    torch.testing.assert_close(scores[0, 1:][~seen[1:]], plain[0, 1:][~seen[1:]])
    torch.testing.assert_close(scores[1], plain[1])
    # only the steps the model reads count: an item older than max_len is not history
    long = [3, *range(10, 10 + model.spec.max_len)]
    older = model.score(_batch(long, width=len(long)))
    newest = model.score(_batch(long[1:], width=model.spec.max_len))
    torch.testing.assert_close(older, newest)


def test_seen_before_follows_each_steps_own_history() -> None:
    spec = _model().spec
    inputs = _batch([3, 5, 3, 7], [2, 9], width=4)
    seen = seen_before(inputs, spec)
    assert seen.shape == (2, 4, N_ITEMS + 1)
    assert seen[0, 0, 3] and not seen[0, 0, 5] and seen[0, 1, 5] and not seen[0, 2, 7]
    assert seen[0, 3, 7] and not seen[1, 3, 3] and seen[1, 3, 9] and not seen[1, 1, 9]
    candidates = torch.tensor([3, 7, 9, 11])
    torch.testing.assert_close(seen_before(inputs, spec, candidates), seen[:, :, candidates])


def test_full_softmax_loss_scores_each_step_with_its_own_history() -> None:
    model = _repeat_model(bias=-2.0)
    batch = _batch([1, 2, 1, 3, 2], [6, 7, 6], width=5)
    inputs, targets = next_item_pairs(batch, model.spec)
    hidden = model(inputs)
    losses = []
    for row in range(2):
        for step in range(inputs.shape[1]):
            if targets[row, step] == 0:
                continue
            seen = torch.zeros(N_ITEMS + 1, dtype=torch.bool)
            seen[inputs[row, : step + 1]] = True
            logits = model.logits(hidden[row, step], seen)
            losses.append(torch.nn.functional.cross_entropy(logits[None], targets[row, step][None]))
    expected = torch.stack(losses).mean()
    torch.testing.assert_close(full_softmax_loss(model, hidden, targets, inputs=inputs), expected)
    with pytest.raises(ValueError, match="needs the inputs"):
        full_softmax_loss(model, hidden, targets)
    with pytest.raises(ValueError, match="scores with its history"):
        model.logits(hidden[:, -1])
    with pytest.raises(ValueError, match="has no repeat term"):
        _model().repeat_offset(hidden)


def test_sampled_softmax_loss_adds_the_repeat_offset_to_seen_candidates() -> None:
    model = _repeat_model(bias=3.0)
    batch = _batch([1, 2, 1, 3, 2], [6, 7, 6], width=5)
    inputs, targets = next_item_pairs(batch, model.spec)
    hidden = model(inputs)
    probs = sampling_probs(torch.ones(N_ITEMS + 1), "uniform")
    loss = sampled_softmax_loss(
        model, hidden, targets, probs, 8, torch.Generator().manual_seed(3), inputs=inputs
    )
    negatives = torch.multinomial(
        probs, 8, replacement=True, generator=torch.Generator().manual_seed(3)
    )
    log_q = torch.log(probs * 8)
    weight = model.item_emb.weight
    rows = []
    for row in range(2):
        for step in range(inputs.shape[1]):
            target = targets[row, step]
            if target == 0:
                continue
            history = set(inputs[row, : step + 1].tolist())
            state = hidden[row, step]
            offset = model.repeat_offset(state)[0]
            pos = state @ weight[target] - log_q[target] + offset * (int(target) in history)
            neg = state @ weight[negatives].T - log_q[negatives]
            neg = neg + offset * torch.tensor([int(n) in history for n in negatives.tolist()])
            neg = neg.masked_fill(negatives == target, float("-inf"))
            rows.append(torch.cat([pos[None], neg]))
    logits = torch.stack(rows)
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long))
    torch.testing.assert_close(loss, expected)


def test_the_repeat_term_learns_that_users_never_repeat() -> None:
    # every sequence is a run of distinct items: the next item is never one already seen
    torch.manual_seed(0)
    model = _model(repeat_term=True, n_categories=0).train()
    sequences = [torch.randperm(N_ITEMS)[:9] + 1 for _ in range(64)]
    batch = torch.stack(sequences)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        inputs, targets = next_item_pairs(batch, model.spec)
        loss = full_softmax_loss(model, model(inputs), targets, inputs=inputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        offset = model.repeat_offset(model.encode(batch[:, :-1])[:, -1])
    assert float(offset.max()) < -1.0


def test_an_untied_model_scores_with_its_own_output_table() -> None:
    tied, untied = _model(), _model(tie_embeddings=False)
    assert tied.out_emb is None and tied.output_weight is tied.item_emb.weight
    assert untied.out_emb is not None and untied.output_weight is untied.out_emb.weight
    batch = _batch([4, 5, 6], width=4)
    hidden = untied.encode(batch)[:, -1]
    torch.testing.assert_close(
        untied.score(batch)[:, 1:], (hidden @ untied.out_emb.weight.T)[:, 1:]
    )
    # both tables learn: the input one through the encoder, the output one through the scores
    untied.train()
    inputs, targets = next_item_pairs(_training_batch(), untied.spec)
    full_softmax_loss(untied, untied(inputs), targets).backward()
    assert untied.item_emb.weight.grad is not None and untied.out_emb.weight.grad is not None
    assert (
        untied.item_emb.weight.grad.abs().sum() > 0 and untied.out_emb.weight.grad.abs().sum() > 0
    )
