"""SASRec: a causal transformer over a user's item sequence that scores the next item.

Item 0 is padding. Sequences are left-padded: ``[0, 0, a, b, c]`` is the history ``a, b, c``
with ``c`` the newest step. Positions are counted from the first real step and padded keys are
masked, so the amount of left padding never changes the scores of the real steps.

A model built with ``ModelSpec.event_types`` also embeds what the user did at each step
(view, add to cart, purchase). Its steps are *step tokens*, ``item + (n_items + 1) * event``
(:func:`step_tokens`), so a history stays one ``int64 [B, L]`` array; a plain item index is a
view. A model without event types reads plain item indices.

A model built with ``ModelSpec.repeat_term`` also scores *repeats*: an item already among the
history's steps gets a learned, context-dependent offset ``w . h + b`` (``h`` the final state),
added to its dot-product score. Data without repeats (films rated once) teaches a negative
offset, so seen items drop out of the ranking by what was learned, not by a rule; data with
repeat purchases teaches a positive one. The offset starts at zero: an untrained term leaves
plain SASRec. Only the steps the model reads count as history (the newest ``max_len``, in
training the window's steps up to the scored one).

Training uses every position of a window in one forward pass: the input is the window without
its last step and the targets are the window shifted by one. The loss is a full softmax over
the catalogue with the output layer tied to the item embedding (or, with
``ModelSpec.tie_embeddings`` false, an output item table of its own: the input table is then
free to hold what follows each item, the output table what each item is), or, for large
catalogues, a sampled softmax with a logQ correction of the sampling bias.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.data.sequences import N_EVENT_TYPES

Loss = Literal["full_softmax", "sampled_softmax"]
# event codes of the prepare stage: view 0, add_to_cart 1, purchase 2
Sampler = Literal["uniform", "popularity"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a :class:`SASRec` (stored beside its weights)."""

    n_items: int
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    n_categories: int = 0
    # embed the event type of each step (the steps are then step tokens, see step_tokens)
    event_types: bool = False
    # a learned score offset for items already in the history (see the module docstring)
    repeat_term: bool = False
    # score with the input item embedding (tied) or with an output item table of its own
    tie_embeddings: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain values."""
        return asdict(self)


class _Block(nn.Module):
    """Pre-LN transformer block: masked self-attention, then a feed-forward layer."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.norm_attn = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm_ff = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(
            nn.Linear(hidden, 4 * hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * hidden, hidden),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        qkv = self.qkv(self.norm_attn(x)).view(batch, length, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, length, hidden)))
        return x + self.drop(self.ff(self.norm_ff(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender with tied input/output item embeddings.

    Args:
        spec: Sizes of the model.
        item_category: Optional ``[n_items + 1]`` category index of each item (0 for padding and
            unknown); when given, a category embedding is added to each step's item embedding.
    """

    item_category: torch.Tensor

    def __init__(
        self, spec: ModelSpec, item_category: torch.Tensor | np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden
        self.item_emb = nn.Embedding(spec.n_items + 1, hidden, padding_idx=0)
        # index 0 is padding; real steps are numbered 1..max_len from the oldest one
        self.pos_emb = nn.Embedding(spec.max_len + 1, hidden, padding_idx=0)
        self.category_emb: nn.Embedding | None = None
        if spec.n_categories > 0:
            if item_category is None or tuple(item_category.shape) != (spec.n_items + 1,):
                raise ValueError(f"item_category must have shape ({spec.n_items + 1},)")
            self.category_emb = nn.Embedding(spec.n_categories + 1, hidden, padding_idx=0)
            categories = torch.as_tensor(item_category).long().clone()
            self.register_buffer("item_category", categories)
        # index 0 is padding; event code c is row c + 1
        self.event_emb: nn.Embedding | None = None
        if spec.event_types:
            self.event_emb = nn.Embedding(N_EVENT_TYPES + 1, hidden, padding_idx=0)
        self.drop = nn.Dropout(spec.dropout)
        self.blocks = nn.ModuleList(
            _Block(hidden, spec.heads, spec.dropout) for _ in range(spec.layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.apply(self._init_weights)
        self.out_emb: nn.Embedding | None = None
        if not spec.tie_embeddings:
            self.out_emb = nn.Embedding(spec.n_items + 1, hidden, padding_idx=0)
            self._init_weights(self.out_emb)
        self.repeat_gate: nn.Linear | None = None
        if spec.repeat_term:
            # zero at the start: an untrained term is plain SASRec
            self.repeat_gate = nn.Linear(hidden, 1)
            nn.init.zeros_(self.repeat_gate.weight)
            nn.init.zeros_(self.repeat_gate.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # small embeddings keep the tied output logits near zero at the start
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden state of every step of left-padded ``items`` ``[B, L]`` -> ``[B, L, hidden]``.

        Windows longer than ``max_len`` keep their newest ``max_len`` steps. With event types,
        ``items`` are step tokens.
        """
        items, events = split_tokens(items[:, -self.spec.max_len :], self.spec)
        valid = items > 0
        positions = torch.cumsum(valid, dim=1) * valid
        x = self.item_emb(items) * math.sqrt(self.spec.hidden) + self.pos_emb(positions)
        if self.category_emb is not None:
            x = x + self.category_emb(self.item_category[items])
        if self.event_emb is not None and events is not None:
            x = x + self.event_emb((events + 1) * valid)
        x = self.drop(x) * valid.unsqueeze(-1)
        length = items.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        # a padded query may see itself only: it then never produces NaN, and no real step
        # attends to a padded key, so the padding cannot leak into the real steps
        eye = torch.eye(length, dtype=torch.bool, device=items.device)
        allowed = (causal & (valid.unsqueeze(1) | eye)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item for hidden states ``[..., hidden]``; padding is ``-inf``.

        ``seen`` (``[..., n_items + 1]``, true where the item is in the state's history) adds
        the repeat offset of a model with ``repeat_term``; it is required there.
        """
        scores = hidden @ self.output_weight.T
        if self.repeat_gate is not None:
            if seen is None:
                raise ValueError("a model with repeat_term scores with its history (seen)")
            scores = scores + self.repeat_offset(hidden) * seen.to(scores.dtype)
        scores[..., 0] = float("-inf")
        return scores

    @property
    def output_weight(self) -> torch.Tensor:
        """``[n_items + 1, hidden]``: the item table the scores are dot products with."""
        return self.item_emb.weight if self.out_emb is None else self.out_emb.weight

    def repeat_offset(self, hidden: torch.Tensor) -> torch.Tensor:
        """The repeat term's offset ``[..., 1]`` for hidden states (a model with the term)."""
        if self.repeat_gate is None:
            raise ValueError("the model has no repeat term (ModelSpec.repeat_term)")
        return self.repeat_gate(hidden)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states of the steps of ``items`` (see :meth:`encode`)."""
        return self.encode(items)

    @torch.no_grad()
    def score(self, history: torch.Tensor) -> torch.Tensor:
        """Next-item scores after each left-padded history ``[B, L]`` -> ``[B, n_items + 1]``.

        The padding column is ``-inf``. An empty history (all padding) gets the scores of the
        padded state, the same for every such user.
        """
        hidden = self.encode(history)[:, -1]
        seen = None
        if self.repeat_gate is not None:
            seen = history_items(history[:, -self.spec.max_len :], self.spec)
        return self.logits(hidden.float(), seen)


def split_tokens(steps: torch.Tensor, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Item indices and event codes of ``steps``; the codes are None without event types."""
    if not spec.event_types:
        return steps, None
    width = spec.n_items + 1
    return steps % width, torch.div(steps, width, rounding_mode="floor")


def history_items(steps: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """``bool [B, n_items + 1]``: the items among each row's steps (padding's column included)."""
    items, _ = split_tokens(steps, spec)
    seen = torch.zeros(items.shape[0], spec.n_items + 1, dtype=torch.bool, device=items.device)
    return seen.scatter_(1, items, True)


def seen_before(
    inputs: torch.Tensor, spec: ModelSpec, candidates: torch.Tensor | None = None
) -> torch.Tensor:
    """Per step of the inputs ``[B, L]``: which candidates its history (steps 0..t) holds.

    Returns ``bool [B, L, C]`` for ``candidates`` ``[C]`` (item indices), or over the whole
    catalogue (``C = n_items + 1``) without them. The padding item counts as seen; its score is
    ``-inf`` whatever is added to it.
    """
    items, _ = split_tokens(inputs, spec)
    batch, length = items.shape
    steps = torch.arange(length, device=items.device)
    if candidates is None:
        # the first step at which each item occurs (length: never)
        first = torch.full(
            (batch, spec.n_items + 1), length, dtype=torch.int64, device=items.device
        )
        first.scatter_reduce_(1, items, steps.expand(batch, length), reduce="amin")
        return first.unsqueeze(1) <= steps.view(1, length, 1)
    hits = items.unsqueeze(2) == candidates.view(1, 1, -1)  # [B, L, C]
    return hits.cummax(dim=1).values if hits.numel() else hits


def next_item_pairs(window: torch.Tensor, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and target items of left-padded training windows ``[B, L + 1]``.

    The target of a step is the next step's item; it is 0 (ignored) where the step itself is
    padding, so the first item of a sequence is never predicted from an empty history.
    """
    inputs = window[:, :-1]
    targets, _ = split_tokens(window[:, 1:], spec)
    return inputs, targets * (inputs > 0)


def full_softmax_loss(
    model: SASRec,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    inputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over the whole catalogue at the steps with a target (``targets > 0``).

    ``label_smoothing`` moves that share of each target's mass evenly onto the real items (the
    padding item, scored ``-inf``, gets none). A model with ``repeat_term`` needs the window's
    ``inputs`` (``[B, L]``), whose steps up to each position are that position's history.
    """
    keep = targets > 0
    seen = None
    if model.repeat_gate is not None:
        if inputs is None:
            raise ValueError("a model with repeat_term needs the inputs of its loss")
        seen = seen_before(inputs, model.spec)[keep]
    logits = model.logits(hidden[keep], seen).float()
    if label_smoothing == 0.0:
        return F.cross_entropy(logits, targets[keep])
    log_probs = F.log_softmax(logits, dim=-1)[:, 1:]
    nll = -log_probs.gather(1, targets[keep].unsqueeze(1) - 1).squeeze(1)
    return ((1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(-1)).mean()


def sampled_softmax_loss(
    model: SASRec,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    sample_probs: torch.Tensor,
    num_negatives: int,
    generator: torch.Generator | None = None,
    inputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each target against ``num_negatives`` shared sampled items.

    The negatives are drawn with replacement from ``sample_probs`` (``[n_items + 1]``, 0 for
    padding). Every logit is corrected by ``-log(num_negatives * q(item))`` (logQ correction) so
    that the loss estimates the full softmax whatever the sampling distribution, and a sampled
    item equal to the step's target is masked out.
    """
    keep = targets > 0
    negatives = torch.multinomial(
        sample_probs, num_negatives, replacement=True, generator=generator
    ).to(hidden.device)
    hidden = hidden[keep]
    repeat_pos = repeat_neg = None
    if model.repeat_gate is not None:
        if inputs is None:
            raise ValueError("a model with repeat_term needs the inputs of its loss")
        offset = model.repeat_offset(hidden)  # [K, 1]
        items, _ = split_tokens(inputs, model.spec)
        # the target is seen when one of the steps up to its position holds it
        hits = (items.unsqueeze(1) == targets.unsqueeze(2)) & torch.ones(
            items.shape[1], items.shape[1], dtype=torch.bool, device=items.device
        ).tril()
        repeat_pos = offset.squeeze(1) * hits.any(2)[keep].to(offset.dtype)
        repeat_neg = offset * seen_before(inputs, model.spec, negatives)[keep].to(offset.dtype)
    targets = targets[keep]
    log_q = torch.log(sample_probs.to(hidden.device) * num_negatives)
    weight = model.output_weight
    positive = (hidden * weight[targets]).sum(-1) - log_q[targets]
    negative = hidden @ weight[negatives].T - log_q[negatives]
    if repeat_pos is not None and repeat_neg is not None:
        positive = positive + repeat_pos
        negative = negative + repeat_neg
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([positive.unsqueeze(1), negative], dim=1).float()
    return F.cross_entropy(
        logits, torch.zeros(len(targets), dtype=torch.long, device=hidden.device)
    )


def sampling_probs(counts: torch.Tensor, sampler: Sampler) -> torch.Tensor:
    """Negative-sampling distribution over items from their training counts (padding gets 0)."""
    if sampler == "uniform":
        probs = torch.ones_like(counts, dtype=torch.float64)
    else:
        # +1: an item never seen in training can still be drawn as a negative
        probs = counts.double() + 1.0
    probs[0] = 0.0
    return (probs / probs.sum()).float()
