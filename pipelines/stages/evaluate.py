"""Stage ``evaluate``: the regression gate of the candidate against the production model.

    python -m pipelines.stages.evaluate --params params.yaml --candidate models/candidate \\
        --prepared data/prepared --out models/candidate/evaluation --metrics metrics/evaluate.json

Writes ``verdict.json`` (with ``verdict.schema.json``), ``report.md`` and ``report.html`` in
every case (``pipelines.gate.judge``); the measured latency goes to ``--metrics``. A blocked
candidate exits with code 3.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.gate.judge import judge_candidate
from pipelines.registry.production import fetch_pinned


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow evaluate", "Gate the candidate against the production model.")
    parser.add_argument("--candidate", type=Path, default=Path("models/candidate"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path("models/candidate/evaluation"))
    parser.add_argument(
        "--production-pin",
        type=Path,
        default=Path("models/production.json"),
        help="the pinned production version (default: models/production.json)",
    )
    parser.add_argument(
        "--production", type=Path, default=None, help="a production folder instead of the pin"
    )
    parser.add_argument("--metrics", type=Path, default=None, help="verdict metrics JSON")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    root = args.params.resolve().parent
    production = args.production
    if production is None:
        production = fetch_pinned(
            params, args.production_pin, root / params.registry.cache, root=root
        )
    judge_candidate(
        params.evaluate,
        args.candidate,
        args.prepared,
        args.out,
        production=production,
        metrics=args.metrics,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow evaluate`` / ``python -m pipelines.stages.evaluate``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
