"""Stage ``optimize``: serving artifacts of the trained model, each checked against it.

    python -m pipelines.stages.optimize --params params.yaml --model models/candidate/model.pt \\
        --prepared data/prepared --out models/candidate/optimized --metrics metrics/optimize.json

ONNX graphs, ONNX Runtime fp32 and INT8 on the CPU, TensorRT or torch.compile on GPUs, parity
with PyTorch, the shipped artifact's manifest; latency into ``--metrics``
(``pipelines.serving.artifacts``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.serving.artifacts import optimize


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow optimize", "Build and check the serving artifacts.")
    parser.add_argument("--model", type=Path, default=Path("models/candidate/model.pt"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path("models/candidate/optimized"))
    parser.add_argument("--metrics", type=Path, default=None, help="parity and latency JSON")
    args = parser.parse_args(argv)
    cfg = load_params(args.params).optimize
    optimize(cfg, args.model, args.prepared, args.out, metrics=args.metrics)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow optimize`` / ``python -m pipelines.stages.optimize``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
