"""Stage ``validate``: check an event batch with Great Expectations before anything trains on it.

    python -m pipelines.stages.validate PATH [--catalog CATALOG] [--out DIR] [--reports DIR]
        [--quarantine DIR] [--metrics FILE] [--params params.yaml]

PATH is a batch store, a batch folder or an events Parquet file
(``pipelines.data.validation.batch``). Exit 0: valid, copied to ``--out``; exit 1: rejected,
quarantined, nothing downstream may run; exit 2: the input cannot be read.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.data.validation.batch import DEFAULT_REPORTS, validate_batch

log = logging.getLogger("recflow.validate")


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow validate", "Validate an event batch with Great Expectations.")
    parser.add_argument("path", type=Path, help="batch store, batch folder or events Parquet file")
    parser.add_argument("--catalog", type=Path, help="catalog Parquet file (default: the batch's)")
    parser.add_argument("--out", type=Path, help="folder for the accepted batch")
    parser.add_argument(
        "--reports",
        type=Path,
        default=DEFAULT_REPORTS,
        help=f"folder for result.json, summary.txt and Data Docs (default: {DEFAULT_REPORTS})",
    )
    parser.add_argument("--quarantine", type=Path, help="folder to copy a rejected batch into")
    parser.add_argument("--metrics", type=Path, help="JSON file for validation statistics")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    outcome = validate_batch(
        params.validate_,
        params.run,
        args.path,
        window_days=params.ingest.window_days,
        catalog=args.catalog,
        out=args.out,
        reports=args.reports,
        quarantine=args.quarantine,
        metrics=args.metrics,
    )
    outcome.raise_for_rejection()
    log.info("%s", outcome.summary)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the ``validate`` stage; exit 0 valid, 1 rejected, 2 bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
