"""The run's logical date: parsing it, and editing it into a params file by hand.

A run (Airflow's, ``make run``'s) never edits ``params.yaml``: its first task writes the run's
date and form into the run overlay (:mod:`pipelines.core.params.run_form`). :func:`set_logical_date`
is for a scratch copy of the project that a tool owns (the drift demo's scenarios), the way
``dvc exp run -S`` sets a value. Only that value changes: comments, quoting, spacing, line
ends and the rest of the file stay byte for byte, the file is replaced atomically, and an
equal date writes nothing. A date the run overlay sets would hide the edit: that is refused.

ruamel.yaml's round-trip parser finds the value: its events carry the exact position of each
scalar in the text, so the edit replaces the date's own characters (and keeps its quotes) where
a dump of the whole document would re-indent and re-space lines it did not need to touch.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    ScalarEvent,
)
from ruamel.yaml.tokens import ScalarToken

from pipelines.core.io import atomic_path
from pipelines.core.params import ConfigError, load_params
from pipelines.core.params.run_form import overlay_path, read_overlay

log = logging.getLogger("recflow.run_params")

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


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


def skip_node(first: Event, events: Iterator[Event]) -> None:
    """Consume the rest of the node that starts with ``first``."""
    depth = 1 if isinstance(first, CollectionStartEvent) else 0
    while depth:
        event = next(events)
        if isinstance(event, CollectionStartEvent):
            depth += 1
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def mapping_value(events: Iterator[Event], key: str) -> Event | None:
    """In a mapping whose start event was just read, the first event of ``key``'s value."""
    for event in events:
        if isinstance(event, CollectionEndEvent):
            return None
        value = next(events)
        if isinstance(event, ScalarEvent) and event.value == key:
            return value
        skip_node(event, events)
        skip_node(value, events)
    return None


def _logical_date_span(text: str) -> tuple[int, int, str]:
    """Where the value of ``run.logical_date`` is written in ``text``: start, end and quote."""
    events = iter(YAML().parse(text))
    root = next((e for e in events if isinstance(e, CollectionStartEvent | ScalarEvent)), None)
    if not isinstance(root, MappingStartEvent):
        raise ConfigError("params file is not a mapping of sections")
    run = mapping_value(events, "run")
    if not isinstance(run, MappingStartEvent):
        raise ConfigError("params file has no 'run:' section holding keys")
    value = mapping_value(events, "logical_date")
    if value is None:
        raise ConfigError("params file has no 'logical_date' under 'run:'")
    if not isinstance(value, ScalarEvent):
        raise ConfigError("run.logical_date in the params file is not a single value")
    if value.style not in (None, '"', "'"):
        raise ConfigError("run.logical_date is a block scalar; write it as YYYY-MM-DD")
    # the event's span also covers a tag or an anchor before the value: the scalar token that
    # ends where the event ends is the value's own text
    end = value.end_mark.index
    token = next(
        t for t in YAML().scan(text) if isinstance(t, ScalarToken) and t.end_mark.index == end
    )
    return token.start_mark.index, end, value.style or ""


def set_logical_date(params_path: Path, logical_date: dt.date) -> bool:
    """Rewrite ``run.logical_date`` in ``params_path``, leaving every other byte as it was.

    Args:
        params_path: The params file (``params.yaml``).
        logical_date: The run's logical date.

    Returns:
        True when the file changed, False when it already held this date.

    Raises:
        ConfigError: The file is missing or invalid, has no ``run.logical_date`` value, or the
            run overlay beside it sets the date (the edit would have no effect).
    """
    overlay = overlay_path(params_path)
    if "run.logical_date" in read_overlay(overlay):
        raise ConfigError(
            f"run.logical_date is set by the run overlay {overlay}, which would hide an edit "
            f"of {params_path}: set the run's date with set_logical_date --set-logical-date"
        )
    current = load_params(params_path, overlay=False).run.logical_date
    if current == logical_date:
        log.info("run.logical_date is already %s in %s", logical_date, params_path)
        return False

    # bytes, not text mode: text mode would turn CRLF line ends into LF
    text = params_path.read_bytes().decode("utf-8")
    try:
        start, end, quote = _logical_date_span(text)
    except YAMLError as exc:
        raise ConfigError(f"cannot parse {params_path}: {exc}") from exc
    edited = f"{text[:start]}{quote}{logical_date.isoformat()}{quote}{text[end:]}"

    # The edit must mean what we think it means before the file is replaced.
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
