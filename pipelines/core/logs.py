"""Logging set-up shared by every stage's command line."""

from __future__ import annotations

import logging
import os


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
