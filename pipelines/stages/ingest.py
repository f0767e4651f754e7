"""Stage ``ingest``: the run's immutable raw batch, read from a source.

    python -m pipelines.stages.ingest --params params.yaml --source data/source/synthetic \\
        --out data/raw/events

Writes ``<out>/<logical date>/`` (``pipelines.data.ingest``); a batch that exists with the same
content is a no-op, with other content an error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.data.ingest import ingest


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow ingest", "Write the run's immutable raw batch from a source.")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="file or folder to read (default: ingest.path in the params file)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder holding one batch folder per date"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = params.ingest
    ingest(cfg, params.run, args.source if args.source is not None else Path(cfg.path), args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pipelines.stages.ingest --params params.yaml --out DIR``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
