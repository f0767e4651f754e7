"""What every stage's thin command line shares: the ``--params`` option and clean exits."""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipelines.core.errors import RecflowError
from pipelines.core.logs import setup_logging
from pipelines.core.params import ConfigError

log = logging.getLogger("recflow")

# what a shell reports for a command stopped by SIGPIPE (128 + 13): the reader of its output left
BROKEN_PIPE_EXIT = 141


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


def _stdout_reader_gone() -> bool:
    """True when standard output is a pipe or socket whose reading end has been closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def quiet_on_broken_pipe(run: Callable[[], int]) -> int:
    """``run()``, its output flushed; when the reader of standard output has gone away
    (``recflow registry show V | head -1``), exit with ``BROKEN_PIPE_EXIT`` and no traceback.

    A broken pipe anywhere else (a socket, a child process) is not hidden: it is raised again.
    """
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # the interpreter flushes stdout once more at exit and would report that failure too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_EXIT


def run_cli(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main`` body; expected failures print one clear message, no traceback,
    and a closed reader of standard output ends it quietly (see :func:`quiet_on_broken_pipe`)."""
    setup_logging()
    return quiet_on_broken_pipe(lambda: _run_body(body, argv))


def _run_body(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
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
