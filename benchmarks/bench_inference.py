"""Inference latency: torch eager beside every artifact the optimize stage builds.

``python -m benchmarks.bench_inference`` (after ``make run``) takes ``models/candidate/model.pt``
and the held-out histories of ``data/prepared``, builds the artifacts with the ``optimize``
params (parity-checked as in the stage), and times each backend on the same requests at batch
1, 32 and 256, one call per request, with the same thread count for torch and ONNX Runtime.
The backends take turns in rounds on the same requests (``pipelines.serving.latency``), so a
slow spell
of a shared machine falls on all of them alike.
Beside the shipped artifacts it times the portable ``torch.onnx`` export under ONNX Runtime
(``onnxruntime-portable``, the graph TensorRT builds from), to show what the fused graph of
``pipelines/ort_graph.py`` gains. Writes ``benchmarks/results/inference_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import machine_info
from pipelines.core.params import load_params
from pipelines.core.project import PROJECT_ROOT
from pipelines.model.saved import load_model
from pipelines.serving.artifacts import held_out_histories, optimize, time_artifacts
from pipelines.serving.backends.onnxruntime import ort_session
from pipelines.serving.graph.torch_export import export_onnx
from pipelines.serving.parity import check_parity, eager_scorer

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200, help="timed requests per batch size")
    parser.add_argument(
        "--rounds", type=int, default=10, help="turns of each backend per batch size"
    )
    parser.add_argument("--threads", type=int, default=None, help="default: optimize.threads")
    args = parser.parse_args(argv)
    model_path = PROJECT_ROOT / "models" / "candidate" / "model.pt"
    prepared = PROJECT_ROOT / "data" / "prepared"
    if not model_path.is_file() or not (prepared / "test.parquet").is_file():
        print("error: no trained model or prepared data: run `make run` first", file=sys.stderr)
        return 2
    cfg = load_params(PROJECT_ROOT / "params.yaml").optimize
    threads = args.threads or cfg.threads
    cfg = cfg.model_copy(
        update={
            "threads": threads,
            "latency": cfg.latency.model_copy(
                update={"iterations": args.iterations, "rounds": args.rounds, "warmup": 10}
            ),
        }
    )
    torch.set_num_threads(threads or torch.get_num_threads())
    model = load_model(model_path)
    portable = ort_session(export_onnx(model, cfg.top_k, opset=cfg.opset), threads)

    def portable_scores(history: np.ndarray) -> np.ndarray:
        return np.asarray(portable.run(["scores"], {"history": history})[0])

    with tempfile.TemporaryDirectory(prefix="recflow-bench-inference-") as tmp:
        out = Path(tmp) / "optimized"
        manifest = optimize(cfg, model_path, prepared, out)
        histories = held_out_histories(prepared, model.spec, cfg.parity.sequences)
        portable_parity = check_parity(
            "onnxruntime-portable",
            eager_scorer(model),
            portable_scores,
            histories,
            cfg.parity.thresholds["fp32"],
        )
        timings = time_artifacts(
            model,
            out,
            manifest,
            histories,
            cfg,
            extra={("onnxruntime-portable", "fp32"): portable_scores},
        )
    eager = {t.batch: t for t in timings if t.backend == "torch-eager"}
    speedup: dict[str, dict[str, float]] = {
        f"{t.backend}-{t.precision}": {} for t in timings if t.backend != "torch-eager"
    }
    for t in timings:
        if t.backend != "torch-eager":
            speedup[f"{t.backend}-{t.precision}"][f"batch_{t.batch}"] = round(
                eager[t.batch].p50_ms / t.p50_ms, 2
            )
    result = {
        "machine": machine_info(),
        "command": "python -m benchmarks.bench_inference"
        + (f" --iterations {args.iterations}" if args.iterations != 200 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 10 else ""),
        "model": {
            "source": "models/candidate/model.pt (trained on the default preset)",
            **model.spec.to_dict(),
        },
        "threads": threads,
        "requests": "held-out test histories of data/prepared, one call per request",
        "parity": {
            a.name: (a.parity.model_dump() if a.parity else {}) | {"status": a.status}
            for a in manifest.artifacts
        }
        | {"onnxruntime-portable": portable_parity.to_dict()},
        "results": [t.to_dict() for t in timings],
        "speedup_vs_eager_p50": speedup,
        "target": "ONNX Runtime CPU >= 3x torch eager at batch 1 and 256",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(speedup, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
