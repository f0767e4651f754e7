"""Stage ``generate``: the synthetic clickstream of the embedded default.

    python -m pipelines.stages.generate --params params.yaml --out data/source/synthetic

Simulates ``generate.days`` days of shop traffic ending on ``run.logical_date`` into
``events.parquet`` and ``catalog.parquet`` (``pipelines.data.synthetic``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.data.synthetic.generator import generate

log = logging.getLogger("recflow.generate")


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow generate", "Generate the synthetic clickstream.")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder to write events.parquet and catalog.parquet into",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    result = generate(params.generate, params.run, args.out)
    log.info(
        "%d events, %d users, %d items in %s", result.events, result.users, result.items, result.out
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pipelines.stages.generate --params params.yaml --out DIR``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
