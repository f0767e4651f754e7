"""The serving graph of a trained SASRec, written for ONNX Runtime's fused CPU kernels.

``torch.onnx`` traces attention into a dozen standard operators (split, transposes, masked
fill, softmax, two batched products) that ONNX Runtime runs one by one. This module writes the
same computation as :class:`pipelines.serving.graph.torch_export.ScoringGraph` directly in
ONNX, with ONNX
Runtime's contrib operators where they exist: ``Attention`` (projection, causal and padding
mask, softmax and product in one kernel) for the inner blocks, ``MultiHeadAttention`` for the
newest step's query in the last block, ``BiasGelu`` in the feed-forward layers; the item
embedding, its ``sqrt(hidden)`` scale and the category embedding are folded into one table.
The graph keeps the same input and outputs (``history`` ->
``scores``, ``top_items``, ``top_scores``) and a dynamic batch axis.

Padding is not computed. Every position-wise layer (embeddings, norms, projections,
feed-forward) runs on the real steps of the batch only, packed into ``[T, hidden]``; only
attention sees the padded ``[B, L]`` layout, which a gather rebuilds before each attention
kernel. In :meth:`SASRec.encode` a padded step attends to itself only, so its state after each
block is one constant vector, computed here when the graph is written and gathered into the
padded places. The scores of an empty history are therefore those of the PyTorch model, and no
real step ever attends to a padded one. Parity with :meth:`SASRec.score` is measured, never
assumed (``pipelines/parity.py``).

The ``com.microsoft`` operators run on ONNX Runtime only; engines of other runtimes
(TensorRT) are built from the portable export of
:func:`pipelines.serving.graph.torch_export.export_onnx`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from pipelines.model.sasrec import SASRec, _Block
from pipelines.serving.graph.torch_export import INPUT, OUTPUTS

CONTRIB = "com.microsoft"


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())


class _GraphBuilder:
    """Nodes and initializers of one graph, with generated, deterministic names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def int64(self, name: str, *values: int) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], *, domain: str = "", **attrs: Any) -> str:
        self._count += 1
        output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], domain=domain, **attrs))
        return output

    def matmul(self, x: str, layer: nn.Linear, name: str, rows: slice = slice(None)) -> str:
        """``x @ W.T`` of ``layer`` (its bias left to the caller)."""
        return self.op("MatMul", [x, self.const(f"{name}.weight_t", _array(layer.weight[rows]).T)])

    def linear(self, x: str, layer: nn.Linear, name: str, rows: slice = slice(None)) -> str:
        bias = self.const(f"{name}.bias", _array(layer.bias[rows]))
        return self.op("Add", [self.matmul(x, layer, name, rows), bias])

    def norm(self, x: str, layer: nn.LayerNorm, name: str) -> str:
        scale = self.const(f"{name}.weight", _array(layer.weight))
        bias = self.const(f"{name}.bias", _array(layer.bias))
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=layer.eps)

    def add_norm(self, x: str, skip: str, layer: nn.LayerNorm, name: str) -> tuple[str, str]:
        """``layer(x + skip)`` and ``x + skip``.

        ONNX Runtime's fused ``SkipLayerNormalization`` is slower than the two on [T, hidden].
        """
        total = self.op("Add", [x, skip])
        return self.norm(total, layer, name), total

    def feed_forward(self, x: str, block: _Block, name: str) -> str:
        first, last = block.ff[0], block.ff[3]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        bias = self.const(f"{name}.ff0.bias", _array(first.bias))
        hidden = self.op("BiasGelu", [self.matmul(x, first, f"{name}.ff0"), bias], domain=CONTRIB)
        return self.linear(hidden, last, f"{name}.ff3")


def _padded_states(model: SASRec) -> list[np.ndarray]:
    """State of a padded step after each block (in :meth:`SASRec.encode` it sees itself only)."""
    state = torch.zeros(1, 1, model.spec.hidden)
    itself = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    states = []
    with torch.no_grad():
        for block in model.blocks:
            state = block(state, itself)
            states.append(_array(state[0, 0]))
    return states


def build_onnxruntime_graph(model: SASRec, top_k: int, *, opset: int = 17) -> bytes:
    """The serving graph of ``model`` as ONNX bytes for ONNX Runtime, dynamic batch axis.

    The same model always gives the same bytes.

    Raises:
        ValueError: ``top_k`` is not in ``1..n_items``.
    """
    spec = model.spec
    if not 1 <= top_k <= spec.n_items:
        raise ValueError(f"top_k must be in 1..{spec.n_items}, not {top_k}")
    model = model.eval()
    hidden, length, heads = spec.hidden, spec.max_len, spec.heads
    width = spec.n_items + 1
    g = _GraphBuilder()

    items, events = INPUT, None
    if spec.event_types:  # step tokens: item + width * event
        divisor = g.int64("token_width", width)
        items = g.op("Mod", [INPUT, divisor])
        events = g.op("Div", [INPUT, divisor])
    valid = g.op("Greater", [items, g.int64("zero", 0)])
    steps = g.op("Cast", [valid], to=TensorProto.INT64)
    positions = g.op("Mul", [g.op("CumSum", [steps, g.int64("axis_steps", 1)]), steps])
    mask = g.op("Cast", [valid], to=TensorProto.INT32)

    # ``rank`` numbers the real steps 1..T in batch order and is 0 at a padded one: gathering
    # by it from [padded state; packed rows] unpacks [T, C] into [B, L, C]
    flat = g.int64("flat", -1)
    steps_flat = g.op("Reshape", [steps, flat])
    real_rows = g.op("Squeeze", [g.op("NonZero", [steps_flat]), g.int64("axis_rows", 0)])
    rank = g.op("Mul", [g.op("CumSum", [steps_flat, g.int64("axis_flat", 0)]), steps_flat])

    def pack(full: str, flat_shape: str = flat) -> str:
        return g.op("Gather", [g.op("Reshape", [full, flat_shape]), real_rows], axis=0)

    def gather(packed: str, padded: np.ndarray, name: str, ranks: str) -> str:
        """Rows of [padded; packed] by ``ranks`` (0: the padded state, t: the t-th real step)."""
        table = g.op("Concat", [g.const(name, padded[None, :]), packed], axis=0)
        return g.op("Gather", [table, ranks], axis=0)

    def unpack(packed: str, padded: np.ndarray, name: str) -> str:
        rows = gather(packed, padded, name, rank)
        return g.op("Reshape", [rows, g.int64(f"{name}.shape", -1, length, padded.shape[0])])

    table = _array(model.item_emb.weight) * math.sqrt(hidden)
    if model.category_emb is not None:
        categories = model.item_category.cpu().numpy()
        table = table + _array(model.category_emb.weight)[categories]
    residual = g.op(
        "Add",
        [
            g.op("Gather", [g.const("item_table", table), pack(items)]),
            g.op("Gather", [g.const("pos_emb", _array(model.pos_emb.weight)), pack(positions)]),
        ],
    )
    if model.event_emb is not None and events is not None:
        codes = g.op("Add", [pack(events), g.int64("one", 1)])
        residual = g.op(
            "Add",
            [
                residual,
                g.op("Gather", [g.const("event_emb", _array(model.event_emb.weight)), codes]),
            ],
        )

    blocks = [block for block in model.blocks if isinstance(block, _Block)]
    # the state of a padded step before each block
    padded_states = [np.zeros(hidden, dtype=np.float32), *_padded_states(model)]
    normed = g.norm(residual, blocks[0].norm_attn, "block0.norm_attn")
    delta: str | None = None  # the output of the block before, still to be added
    for index, block in enumerate(blocks):
        name = f"block{index}"
        if delta is not None:
            normed, residual = g.add_norm(delta, residual, block.norm_attn, f"{name}.norm_attn")
        padded_normed = _array(block.norm_attn(torch.from_numpy(padded_states[index])))
        if index == len(blocks) - 1:
            break
        attended = g.op(
            "Attention",
            [
                unpack(normed, padded_normed, f"{name}.padded_normed"),
                g.const(f"{name}.qkv.weight_t", _array(block.qkv.weight).T),
                g.const(f"{name}.qkv.bias", _array(block.qkv.bias)),
                mask,
            ],
            domain=CONTRIB,
            num_heads=heads,
            unidirectional=1,
        )
        rows_shape = g.int64(f"{name}.rows_shape", -1, hidden)
        projected = g.linear(pack(attended, rows_shape), block.proj, f"{name}.proj")
        normed, residual = g.add_norm(projected, residual, block.norm_ff, f"{name}.norm_ff")
        delta = g.feed_forward(normed, block, name)

    # the last block: keys and values of every real step, the newest step as the only query
    last, name = blocks[-1], f"block{len(blocks) - 1}"
    keys, values = (
        unpack(
            g.linear(normed, last.qkv, f"{name}.{part}", rows),
            _array(last.qkv(torch.from_numpy(padded_normed))[rows]),
            f"{name}.{part}.padded",
        )
        for part, rows in (("k", slice(hidden, 2 * hidden)), ("v", slice(2 * hidden, 3 * hidden)))
    )
    newest_rank = g.op(
        "Slice",
        [
            g.op("Reshape", [rank, g.int64("ranks_shape", -1, length)]),
            g.int64("newest_start", -1),
            g.int64("newest_end", length),
            g.int64("axis_time", 1),
        ],
    )

    def newest_of(packed: str, padded: np.ndarray, label: str) -> str:
        return gather(packed, padded, f"newest.{label}", newest_rank)  # [B, 1, hidden]

    newest = newest_of(residual, padded_states[len(blocks) - 1], "state")
    query = g.linear(
        newest_of(normed, padded_normed, "normed"), last.qkv, f"{name}.q", slice(0, hidden)
    )
    attended = g.op(
        "MultiHeadAttention", [query, keys, values, "", mask], domain=CONTRIB, num_heads=heads
    )
    projected = g.linear(attended, last.proj, f"{name}.proj")
    normed, newest = g.add_norm(projected, newest, last.norm_ff, f"{name}.norm_ff")
    state, _ = g.add_norm(g.feed_forward(normed, last, name), newest, model.norm, "norm")
    state = g.op("Squeeze", [state, g.int64("axis_squeeze", 1)])
    padding = np.zeros(width, dtype=np.float32)
    padding[0] = -np.inf
    item_emb_t = g.const("item_emb_t", _array(model.output_weight).T)
    scores_name, items_name, top_name = OUTPUTS
    dot = g.op("MatMul", [state, item_emb_t])
    if model.repeat_gate is not None:
        # the repeat term: the learned offset ``w . state + b`` on every item of the history
        offset = g.linear(state, model.repeat_gate, "repeat_gate")  # [B, 1]
        zeros = g.op("ConstantOfShape", [g.op("Shape", [dot])])
        ones = g.op("Expand", [g.const("one_f", np.ones(1, np.float32)), g.op("Shape", [items])])
        seen = g.op("ScatterElements", [zeros, items, ones], axis=1)
        dot = g.op("Add", [dot, g.op("Mul", [offset, seen])])
    g.nodes.append(helper.make_node("Add", [dot, g.const("padding", padding)], [scores_name]))
    g.nodes.append(
        helper.make_node(
            "TopK", [scores_name, g.int64("top_k", top_k)], [top_name, items_name], axis=1
        )
    )
    graph = helper.make_graph(
        g.nodes,
        "recflow_scoring",
        [helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["batch", length])],
        [
            helper.make_tensor_value_info(scores_name, TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info(items_name, TensorProto.INT64, ["batch", top_k]),
            helper.make_tensor_value_info(top_name, TensorProto.FLOAT, ["batch", top_k]),
        ],
        g.initializers,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB, 1)],
        producer_name="recflow",
    )
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
