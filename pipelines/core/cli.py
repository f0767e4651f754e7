"""What every stage's thin command line shares: the ``--params`` option and clean exits."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipelines.core.errors import RecflowError
from pipelines.core.logs import setup_logging
from pipelines.core.params import ConfigError

log = logging.getLogger("recflow")


def stage_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file to read this stage's section from (default: params.yaml)",
    )
    return parser


def run_cli(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main`` body; expected failures print one clear message, no traceback."""
    setup_logging()
    try:
        return body(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RecflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
