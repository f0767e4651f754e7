"""Logging set-up shared by every stage's command line, and the pace of progress lines."""

from __future__ import annotations

import logging
import os
import time


def setup_logging(level: str | None = None) -> None:
    """Log to stderr with timestamps; ``RECFLOW_LOG_LEVEL`` overrides the level."""
    logging.basicConfig(
        level=(level or os.environ.get("RECFLOW_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def quiet_http_client() -> None:
    """Keep httpx's line per request out of a command's log (it would bury the command's own)."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Tenths:
    """When a long piece of work logs its progress: each time it passes a tenth of ``total``,
    once it has run ``after_s`` seconds (a short run keeps the console short), and not at its
    end, which the work reports itself.

    ``started`` is the work's start on ``time.perf_counter``'s clock (now when None); the clock
    only paces log lines, never what the work writes.
    """

    def __init__(self, total: int, after_s: float = 10.0, started: float | None = None) -> None:
        self.total, self.after_s = total, after_s
        self.started = time.perf_counter() if started is None else started
        self._next = 1

    def due(self, done: int) -> float | None:
        """Seconds since the start when a progress line is due at ``done`` of the total, else
        None."""
        if done >= self.total or done * 10 < self._next * self.total:
            return None
        self._next = done * 10 // self.total + 1
        took = time.perf_counter() - self.started
        return took if took >= self.after_s else None
