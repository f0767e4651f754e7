"""Stage ``prepare``: user sequences, splits and the reference statistics monitoring needs.

    python -m pipelines.stages.prepare --params params.yaml --validated data/validated \\
        --out data/prepared --metrics metrics/prepare.json

See ``pipelines.data.preparation`` for what the folder holds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.io import write_json
from pipelines.core.params import load_params
from pipelines.data.preparation import prepare


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow prepare", "Build user sequences, splits and reference stats.")
    parser.add_argument("--validated", type=Path, default=Path("data/validated"))
    parser.add_argument("--out", type=Path, default=Path("data/prepared"))
    parser.add_argument("--metrics", type=Path, default=None, help="write counts as DVC metrics")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    result = prepare(params.prepare, params.run, args.validated, args.out)
    if args.metrics is not None:
        write_json(args.metrics, asdict(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the stage (``recflow prepare`` / ``python -m pipelines.stages.prepare``)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
