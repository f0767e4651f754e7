"""What every section of ``params.yaml`` is built on: the strict base model and its field types.

Parsing is strict (see :mod:`pipelines.core.params`); the three explicit conversions live here
as field types: :data:`Date` (``YYYY-MM-DD`` text or a YAML date), :data:`Items` (a list fills
a tuple) and :data:`FilePath` (text fills a path).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

T = TypeVar("T")

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ConfigError(ValueError):
    """``params.yaml`` is missing, unreadable, or does not match the typed config."""


def _date(value: Any) -> Any:
    """A date from ``YYYY-MM-DD`` text or a date object (what YAML makes of an unquoted date)."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"expected a date without a time (YYYY-MM-DD), got {value.isoformat()}")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date ({exc})") from exc
    raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}")


def _tuple(value: Any) -> Any:
    """A list (all YAML and JSON have) becomes a tuple; its items are still checked strictly."""
    return tuple(value) if isinstance(value, list) else value


def _path(value: Any) -> Any:
    if isinstance(value, str):
        if not value:
            raise ValueError("a path must not be empty")
        return Path(value)
    return value


Date = Annotated[dt.date, BeforeValidator(_date)]
Items = Annotated[tuple[T, ...], BeforeValidator(_tuple)]
FilePath = Annotated[Path, BeforeValidator(_path)]


class StrictModel(BaseModel):
    """Base for config sections: frozen, unknown keys rejected, no silent coercion."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
