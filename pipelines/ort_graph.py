"""The serving graph of a trained SASRec, written for ONNX Runtime's fused CPU kernels.

``torch.onnx`` traces attention into a dozen standard operators (split, transposes, masked
fill, softmax, two batched products) that ONNX Runtime runs one by one. This module writes the
same computation as :class:`pipelines.export.ScoringGraph` directly in ONNX, with ONNX
Runtime's contrib operators where they exist: ``Attention`` (projection, causal and padding
mask, softmax and product in one kernel) for the inner blocks, ``MultiHeadAttention`` for the
newest step's query in the last block, ``BiasGelu`` in the feed-forward layers; the item
embedding, its ``sqrt(hidden)`` scale and the category embedding are folded into one table.
The graph keeps the same input and outputs (``history`` ->
``scores``, ``top_items``, ``top_scores``) and a dynamic batch axis.

The ``com.microsoft`` operators run on ONNX Runtime only; engines of other runtimes
(TensorRT) are built from the portable export of :func:`pipelines.export.export_onnx`.

Masking: a padded key is masked with ONNX Runtime's large negative filler instead of ``-inf``.
A padded query then attends to every (padded) key alike instead of to itself; all padded
positions of an empty history carry the same state, so its scores are the same, and no real
step ever attends to a padded one. Parity with :meth:`SASRec.score` is measured, never assumed
(``pipelines/parity.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from pipelines.export import INPUT, OUTPUTS
from pipelines.model import SASRec, _Block

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

    def linear(self, x: str, layer: nn.Linear, name: str, rows: slice = slice(None)) -> str:
        weight = self.const(f"{name}.weight_t", _array(layer.weight[rows]).T)
        bias = self.const(f"{name}.bias", _array(layer.bias[rows]))
        return self.op("Add", [self.op("MatMul", [x, weight]), bias])

    def norm(self, x: str, layer: nn.LayerNorm, name: str) -> str:
        scale = self.const(f"{name}.weight", _array(layer.weight))
        bias = self.const(f"{name}.bias", _array(layer.bias))
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=layer.eps)

    def feed_forward(self, x: str, block: _Block, name: str) -> str:
        first, last = block.ff[0], block.ff[3]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        weight = self.const(f"{name}.ff0.weight_t", _array(first.weight).T)
        bias = self.const(f"{name}.ff0.bias", _array(first.bias))
        hidden = self.op("BiasGelu", [self.op("MatMul", [x, weight]), bias], domain=CONTRIB)
        return self.linear(hidden, last, f"{name}.ff3")


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
    table = _array(model.item_emb.weight) * math.sqrt(hidden)
    if model.category_emb is not None:
        categories = model.item_category.cpu().numpy()
        table = table + _array(model.category_emb.weight)[categories]
    x = g.op(
        "Add",
        [
            g.op("Gather", [g.const("item_table", table), items]),
            g.op("Gather", [g.const("pos_emb", _array(model.pos_emb.weight)), positions]),
        ],
    )
    if model.event_emb is not None and events is not None:
        codes = g.op("Mul", [g.op("Add", [events, g.int64("one", 1)]), steps])
        x = g.op(
            "Add",
            [x, g.op("Gather", [g.const("event_emb", _array(model.event_emb.weight)), codes])],
        )
    real = g.op("Cast", [valid], to=TensorProto.FLOAT)
    x = g.op("Mul", [x, g.op("Unsqueeze", [real, g.int64("axis_channels", -1)])])
    mask = g.op("Cast", [valid], to=TensorProto.INT32)

    blocks = [block for block in model.blocks if isinstance(block, _Block)]
    for index, block in enumerate(blocks[:-1]):
        name = f"block{index}"
        normed = g.norm(x, block.norm_attn, f"{name}.norm_attn")
        attended = g.op(
            "Attention",
            [
                normed,
                g.const(f"{name}.qkv.weight_t", _array(block.qkv.weight).T),
                g.const(f"{name}.qkv.bias", _array(block.qkv.bias)),
                mask,
            ],
            domain=CONTRIB,
            num_heads=heads,
            unidirectional=1,
        )
        x = g.op("Add", [x, g.linear(attended, block.proj, f"{name}.proj")])
        x = g.op(
            "Add", [x, g.feed_forward(g.norm(x, block.norm_ff, f"{name}.norm_ff"), block, name)]
        )

    # the newest step is the only query of the last block
    last = blocks[-1]
    name = f"block{len(blocks) - 1}"
    normed = g.norm(x, last.norm_attn, f"{name}.norm_attn")
    keys = g.linear(normed, last.qkv, f"{name}.k", slice(hidden, 2 * hidden))
    values = g.linear(normed, last.qkv, f"{name}.v", slice(2 * hidden, 3 * hidden))
    newest_slice = [
        g.int64("newest_start", -1),
        g.int64("newest_end", length),
        g.int64("axis_time", 1),
    ]
    newest = g.op("Slice", [x, *newest_slice])
    query = g.linear(
        g.op("Slice", [normed, *newest_slice]), last.qkv, f"{name}.q", slice(0, hidden)
    )
    attended = g.op(
        "MultiHeadAttention", [query, keys, values, "", mask], domain=CONTRIB, num_heads=heads
    )
    newest = g.op("Add", [newest, g.linear(attended, last.proj, f"{name}.proj")])
    newest = g.op(
        "Add", [newest, g.feed_forward(g.norm(newest, last.norm_ff, f"{name}.norm_ff"), last, name)]
    )
    state = g.op("Squeeze", [g.norm(newest, model.norm, "norm"), g.int64("axis_squeeze", 1)])
    padding = np.zeros(width, dtype=np.float32)
    padding[0] = -np.inf
    item_emb_t = g.const("item_emb_t", _array(model.item_emb.weight).T)
    scores_name, items_name, top_name = OUTPUTS
    g.nodes.append(
        helper.make_node(
            "Add", [g.op("MatMul", [state, item_emb_t]), g.const("padding", padding)], [scores_name]
        )
    )
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
