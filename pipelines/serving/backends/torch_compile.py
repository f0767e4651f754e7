"""torch.compile with CUDA graphs in reduced precision: the GPU backend without TensorRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.model.saved import load_model
from pipelines.serving.backends.onnxruntime import Runner
from pipelines.serving.graph.torch_export import ScoringGraph
from pipelines.serving.manifest import Artifact


def open_runner(entry: Artifact, path: Path, top_k: int) -> Runner:
    """The serving graph compiled by torch.compile with CUDA graphs, in reduced precision."""
    import torch

    graph = ScoringGraph(load_model(path), top_k).cuda().eval()
    compiled = torch.compile(graph, mode="reduce-overhead", dynamic=False)
    dtype = torch.bfloat16 if entry.precision == "bf16" else torch.float16

    def run_compiled(names: list[str], history: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
            scores, items, top = compiled(torch.from_numpy(history).cuda())
        values = {"scores": scores.float(), "top_items": items, "top_scores": top.float()}
        return [values[name].cpu().numpy() for name in names]

    return run_compiled
