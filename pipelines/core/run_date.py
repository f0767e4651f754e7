"""Set the run's logical date in ``params.yaml``, the way ``dvc exp run -S`` sets a value.

The Airflow DAG's first task calls this so that every stage of the run reads the DAG run's
date from ``run.logical_date``. Only that one line changes: comments, quoting and the rest of
the file stay as they are, the file is replaced atomically, and an equal date writes nothing.

    python -m pipelines.core.run_date --params params.yaml --set-logical-date 2026-11-22
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from pathlib import Path

import yaml

from pipelines.core.io import atomic_path
from pipelines.core.params import ConfigError, load_params

log = logging.getLogger("recflow.run_params")

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SECTION = re.compile(r"^run:\s*(#.*)?$")
_TOP_LEVEL = re.compile(r"^[^\s#]")
# indent, key, value (optionally quoted), then spacing and an optional trailing comment
_LOGICAL_DATE = re.compile(
    r"^(?P<head>[ \t]+logical_date:[ \t]*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s#]+)"
    r"(?P<tail>[ \t]*(#.*)?)$"
)


def parse_logical_date(text: str) -> dt.date:
    """Parse a logical date written as ``YYYY-MM-DD``.

    Args:
        text: The date as given on the command line or by Airflow.

    Returns:
        The date.

    Raises:
        ValueError: ``text`` is not a calendar date in ``YYYY-MM-DD`` form.
    """
    if not _ISO_DATE.fullmatch(text):
        raise ValueError(f"logical date must be YYYY-MM-DD, got {text!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"logical date {text!r} is not a calendar date: {exc}") from exc


def _logical_date_line(lines: list[str]) -> tuple[int, re.Match[str]]:
    """The ``logical_date:`` line directly under the top-level ``run:`` section, and its parts."""
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        raise ConfigError("params file has no block-style top-level 'run:' section")
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if _TOP_LEVEL.match(line):
            break
        match = _LOGICAL_DATE.match(line.rstrip("\r\n"))
        if match:
            return index, match
    raise ConfigError("params file has no 'logical_date: <date>' line under 'run:'")


def set_logical_date(params_path: Path, logical_date: dt.date) -> bool:
    """Rewrite ``run.logical_date`` in ``params_path``, leaving every other byte as it was.

    Args:
        params_path: The params file (``params.yaml``).
        logical_date: The run's logical date.

    Returns:
        True when the file changed, False when it already held this date.

    Raises:
        ConfigError: The file is missing or invalid, or has no ``run.logical_date`` line.
    """
    current = load_params(params_path).run.logical_date
    if current == logical_date:
        log.info("run.logical_date is already %s in %s", logical_date, params_path)
        return False

    # bytes, not text mode: text mode would turn CRLF line ends into LF
    text = params_path.read_bytes().decode("utf-8")
    lines = text.splitlines(keepends=True)
    index, match = _logical_date_line(lines)
    newline = lines[index][len(lines[index].rstrip("\r\n")) :]
    quote = match["value"][0] if match["value"][0] in "\"'" else ""
    lines[index] = (
        f"{match['head']}{quote}{logical_date.isoformat()}{quote}{match['tail']}{newline}"
    )
    edited = "".join(lines)

    # The line edit must mean what we think it means before the file is replaced.
    written = (yaml.safe_load(edited) or {}).get("run", {}).get("logical_date")
    if str(written) != logical_date.isoformat():
        raise ConfigError(
            f"could not set run.logical_date in {params_path}: the edit read back as {written!r}"
        )

    with atomic_path(params_path) as tmp:
        tmp.write_bytes(edited.encode("utf-8"))
        shutil.copymode(params_path, tmp)
    log.info("run.logical_date: %s -> %s in %s", current, logical_date, params_path)
    return True
