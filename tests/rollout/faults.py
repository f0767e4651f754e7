"""Faulty candidates for the rollout tests, made from a good served folder by editing its ONNX
graph (the fault lives here, never in the product): NaN scores, a graph that does not load
(recorded with its correct sha256), a graph about ten times slower, and one that fails on a
share of the requests; or by editing its item table (every index mapped to the wrong item).
Each keeps the manifest consistent with its artifact."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

SCORES = "scores"


def _copy(good: Path, dest: Path) -> Path:
    shutil.copytree(good, dest)
    return dest


def _reseal(folder: Path) -> None:
    """Write the artifact's new sha256 into the manifest (it passes the load-time check)."""
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["artifacts"]:
        if entry.get("file") == "model.onnx":
            entry["sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2))


def _rewire(folder: Path, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> None:
    """Rename the graph's ``scores`` producer output to ``raw_scores``; ``nodes`` make
    ``scores`` from it (so ``TopK`` and the ``scores`` output see the fault)."""
    model = onnx.load(folder / "model.onnx")
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == SCORES:
                node.output[i] = "raw_scores"
    producer = next(i for i, n in enumerate(graph.node) if "raw_scores" in n.output)
    for offset, node in enumerate(nodes, start=1):
        graph.node.insert(producer + offset, node)
    graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    _reseal(folder)


def nan_scores(good: Path, dest: Path, modulus: int = 0) -> Path:
    """NaN scores, for every request (``modulus`` 0) or for the requests whose sum of item
    indices is 1 modulo ``modulus`` (the warm-up at load, histories summing to 0 and 6, passes)."""
    folder = _copy(good, dest)
    nan = numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "fault_nan")
    if not modulus:
        _rewire(folder, [helper.make_node("Mul", ["raw_scores", "fault_nan"], [SCORES])], [nan])
        return folder
    inits = [
        nan,
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "fault_one"),
        numpy_helper.from_array(np.array(modulus, dtype=np.int64), "fault_mod"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "fault_res"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "fault_axis"),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["history", "fault_axis"], ["fault_sum"], keepdims=1),
        helper.make_node("Mod", ["fault_sum", "fault_mod"], ["fault_rem"]),
        helper.make_node("Equal", ["fault_rem", "fault_res"], ["fault_hit"]),
        helper.make_node("Where", ["fault_hit", "fault_nan", "fault_one"], ["fault_factor"]),
        helper.make_node("Mul", ["raw_scores", "fault_factor"], [SCORES]),
    ]
    _rewire(folder, nodes, inits)
    return folder


def nan_sometimes(good: Path, dest: Path) -> Path:
    """NaN scores for about a quarter of the requests."""
    return nan_scores(good, dest, modulus=4)


def does_not_load(good: Path, dest: Path) -> Path:
    """A model file that is not an ONNX graph, with its correct sha256 in the manifest (and in
    the registry): it passes every checksum and fails when the runtime opens it."""
    folder = _copy(good, dest)
    (folder / "model.onnx").write_bytes(b"\x08\x07this is not an ONNX graph" * 64)
    _reseal(folder)
    return folder


def slower(good: Path, dest: Path, rounds: int = 16, width: int = 512) -> Path:
    """The same answers after extra matrix work that depends on the input (so the runtime
    cannot fold it away): ``rounds`` products of ``width`` x ``width`` matrices per call, tens
    of milliseconds where the model itself takes well under one."""
    folder = _copy(good, dest)
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(
        (rng.standard_normal((width, width)) / width).astype(np.float32), "fault_w"
    )
    seed = numpy_helper.from_array(np.ones((width, width), dtype=np.float32), "fault_seed")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "fault_zero")
    nodes = [
        helper.make_node("Cast", ["history"], ["fault_h"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["fault_h"], ["fault_sum"], keepdims=0),
        helper.make_node("Mul", ["fault_sum", "fault_seed"], ["fault_x0"]),
    ]
    for i in range(rounds):
        nodes.append(helper.make_node("MatMul", [f"fault_x{i}", "fault_w"], [f"fault_x{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"fault_x{rounds}"], ["fault_total"], keepdims=0),
        helper.make_node("Mul", ["fault_total", "fault_zero"], ["fault_nothing"]),
        helper.make_node("Add", ["raw_scores", "fault_nothing"], [SCORES]),
    ]
    _rewire(folder, nodes, [weight, seed, zero])
    return folder


def fails_sometimes(good: Path, dest: Path, modulus: int = 20, residue: int = 7) -> Path:
    """A model call fails (an index out of range in the runtime) when any row's sum of item
    indices is ``residue`` modulo ``modulus``: about one request in ``modulus``."""
    folder = _copy(good, dest)
    inits = [
        numpy_helper.from_array(np.array(modulus, dtype=np.int64), "fault_mod"),
        numpy_helper.from_array(np.array(residue, dtype=np.int64), "fault_res"),
        numpy_helper.from_array(np.array([10**9], dtype=np.int64), "fault_bad"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "fault_ok"),
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), "fault_table"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "fault_zero"),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["history", "fault_axis"], ["fault_sum"], keepdims=0),
        helper.make_node("Mod", ["fault_sum", "fault_mod"], ["fault_rem"]),
        helper.make_node("Equal", ["fault_rem", "fault_res"], ["fault_hit"]),
        helper.make_node("ReduceMax", ["fault_hit_i"], ["fault_any"], keepdims=0),
        helper.make_node("Cast", ["fault_hit"], ["fault_hit_i"], to=TensorProto.INT64),
        helper.make_node("Where", ["fault_any_b", "fault_bad", "fault_ok"], ["fault_index"]),
        helper.make_node("Cast", ["fault_any"], ["fault_any_b"], to=TensorProto.BOOL),
        helper.make_node("Gather", ["fault_table", "fault_index"], ["fault_value"]),
        helper.make_node("ReduceSum", ["fault_value"], ["fault_one"], keepdims=0),
        helper.make_node("Mul", ["fault_one", "fault_zero"], ["fault_nothing"]),
        helper.make_node("Add", ["raw_scores", "fault_nothing"], [SCORES]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "fault_axis"))
    # topological order: the Cast nodes go before their consumers
    order = [0, 1, 2, 4, 3, 6, 5, 7, 8, 9, 10]
    _rewire(folder, [nodes[i] for i in order], inits)
    return folder


def popularity_only(good: Path, dest: Path) -> Path:
    """Well-formed answers that ignore the history: the most popular items, always (item
    indices are in order of popularity). It overlaps stable's answers on the popular items and
    loses on the hit rate of the sessions' next items."""
    folder = _copy(good, dest)
    model = onnx.load(folder / "model.onnx")
    width = next(
        o.type.tensor_type.shape.dim[1].dim_value for o in model.graph.output if o.name == SCORES
    )
    ranking = -np.arange(width, dtype=np.float32)
    ranking[0] = -1e9  # index 0 is padding
    inits = [
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "fault_zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "fault_axis"),
        numpy_helper.from_array(ranking, "fault_ranking"),
    ]
    # [batch, 1] zeros from the history (the model's own scores are not used), plus the ranking
    nodes = [
        helper.make_node("Cast", ["history"], ["fault_h"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["fault_h", "fault_axis"], ["fault_sum"], keepdims=1),
        helper.make_node("Mul", ["fault_sum", "fault_zero"], ["fault_nothing"]),
        helper.make_node("Add", ["fault_nothing", "fault_ranking"], [SCORES]),
    ]
    _rewire(folder, nodes, inits)
    return folder


def wrong_item_table(good: Path, dest: Path) -> Path:
    """The same model with an item table that maps every index to another (valid) catalog
    item: each row's index moves half the catalog on. The table still covers indices 1..N, so
    the version loads and answers well-formed lists of real items, all of them the wrong ones.
    """
    folder = _copy(good, dest)
    path = folder / "items.parquet"
    table = pq.read_table(path)
    index = table.column("item_idx").to_numpy().astype(np.int64)
    n = len(index)
    moved = (index - 1 + n // 2) % n + 1
    position = table.schema.get_field_index("item_idx")
    table = table.set_column(position, "item_idx", pa.array(moved.astype(np.int32), pa.int32()))
    pq.write_table(table, path)
    return folder
