"""The serving graph of a trained SASRec and its export to ONNX.

Serving needs the next-item scores after the newest step only. :class:`ScoringGraph` computes
exactly what :meth:`SASRec.score` computes, written with operators that every runtime supports,
and runs the last transformer block for the newest step alone (its other steps feed nothing).
It returns the full score row and the top-k items, so a server never sorts the catalog itself.

Parity with :meth:`SASRec.score` is not assumed: the optimize stage measures it on held-out
sequences and rejects a graph that drifts (``pipelines/parity.py``).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any, Final, cast

import torch
from torch import nn

from pipelines.model.sasrec import SASRec, _Block, split_tokens

INPUT: Final = "history"
OUTPUTS = ("scores", "top_items", "top_scores")


def _attend(
    block: _Block, queries: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """Multi-head attention of ``queries`` ``[B, Q, H]`` over ``keys`` ``[B, L, H]`` (eval mode)."""
    batch, n_queries, hidden = queries.shape
    length = keys.shape[1]
    heads = block.heads
    head_dim = hidden // heads
    weight, bias = block.qkv.weight, block.qkv.bias
    q = nn.functional.linear(queries, weight[:hidden], bias[:hidden])
    kv = nn.functional.linear(keys, weight[hidden:], bias[hidden:])
    q = q.view(batch, n_queries, heads, head_dim).transpose(1, 2)
    k, v = kv.view(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    logits = logits.masked_fill(~allowed, float("-inf"))
    attended = torch.softmax(logits, dim=-1) @ v
    return block.proj(attended.transpose(1, 2).reshape(batch, n_queries, hidden))


class ScoringGraph(nn.Module):
    """``history [B, max_len]`` -> ``scores [B, n_items + 1]``, ``top_items``, ``top_scores``.

    Args:
        model: The trained model (put in eval mode; dropout never applies here).
        top_k: Length of the returned lists; at most the number of items.
    """

    def __init__(self, model: SASRec, top_k: int) -> None:
        super().__init__()
        if not 1 <= top_k <= model.spec.n_items:
            raise ValueError(f"top_k must be in 1..{model.spec.n_items}, not {top_k}")
        self.model = model.eval()
        self.top_k = top_k
        padding = torch.zeros(model.spec.n_items + 1)
        padding[0] = float("-inf")
        self.register_buffer("padding", padding)
        # constants of the graph (runtimes lack boolean EyeLike / Trilu kernels)
        length = model.spec.max_len
        self.register_buffer("causal", torch.ones(length, length, dtype=torch.bool).tril())
        self.register_buffer("eye", torch.eye(length, dtype=torch.bool))

    causal: torch.Tensor
    eye: torch.Tensor
    padding: torch.Tensor

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        spec = model.spec
        items, events = split_tokens(history[:, -spec.max_len :], spec)
        valid = items > 0
        steps = valid.to(torch.int64)
        positions = torch.cumsum(steps, dim=1) * steps
        x = model.item_emb(items) * math.sqrt(spec.hidden) + model.pos_emb(positions)
        if model.category_emb is not None:
            x = x + model.category_emb(model.item_category[items])
        if model.event_emb is not None and events is not None:
            x = x + model.event_emb((events + 1) * steps)
        x = x * valid.unsqueeze(-1).to(x.dtype)
        allowed = (self.causal & (valid.unsqueeze(1) | self.eye)).unsqueeze(1)
        blocks = [cast(_Block, block) for block in model.blocks]
        for block in blocks[:-1]:
            normed = block.norm_attn(x)
            x = x + _attend(block, normed, normed, allowed)
            x = x + block.ff(block.norm_ff(x))
        # the newest step is the only query of the last block
        last = blocks[-1]
        normed = last.norm_attn(x)
        newest = x[:, -1:]
        newest = newest + _attend(last, normed[:, -1:], normed, allowed[:, :, -1:])
        newest = newest + last.ff(last.norm_ff(newest))
        hidden = model.norm(newest[:, 0])
        scores = hidden @ model.output_weight.T + self.padding
        if model.repeat_gate is not None:
            # the repeat term: the learned offset on every item among the history's steps
            seen = torch.zeros_like(scores).scatter(
                1, items, torch.ones_like(scores[:, :1]).expand_as(items)
            )
            scores = scores + model.repeat_gate(hidden) * seen
        top_scores, top_items = torch.topk(scores, self.top_k, dim=1)
        return scores, top_items, top_scores


def export_onnx(model: SASRec, top_k: int, *, opset: int = 17) -> bytes:
    """The serving graph of ``model`` as ONNX bytes, with a dynamic batch axis.

    The same model always gives the same bytes (the graph carries no names of files or times).
    """
    graph = ScoringGraph(model, top_k).eval()
    example = torch.zeros(2, model.spec.max_len, dtype=torch.int64)
    example[:, -3:] = torch.tensor([1, 2, 3])
    buffer = io.BytesIO()
    dynamic: dict[str, Any] = {name: {0: "batch"} for name in (INPUT, *OUTPUTS)}
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript;
        # it still exports this graph exactly, and parity is checked on every export
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            cast(Any, buffer),
            dynamo=False,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    return buffer.getvalue()
