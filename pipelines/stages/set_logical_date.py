"""Task ``set_logical_date``: write the run's logical date into ``params.yaml``.

    python -m pipelines.stages.set_logical_date --params params.yaml --set-logical-date 2026-11-22

The Airflow DAG's first task, the way ``dvc exp run -S run.logical_date=...`` sets a value.
Not a DVC stage: it changes a parameter, it produces no output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.run_date import parse_logical_date, set_logical_date


def _date_arg(text: str) -> dt.date:
    try:
        return parse_logical_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow set_logical_date", "Set run.logical_date in the params file.")
    parser.add_argument(
        "--set-logical-date",
        type=_date_arg,
        required=True,
        metavar="YYYY-MM-DD",
        help="the run's logical date",
    )
    args = parser.parse_args(argv)
    set_logical_date(args.params, args.set_logical_date)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pipelines.stages.set_logical_date --set-logical-date DATE``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
