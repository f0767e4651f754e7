"""The Great Expectations suites a batch must pass, built from ``ValidateConfig``.

Three suites, each over its own lean pandas frame:

* ``events``: the event table itself (schema, types, nulls, value ranges, the batch window,
  unique ids, id hygiene, catalog membership through the derived column
  ``item_id_not_in_catalog``, which holds the item id where it is missing from the catalog).
* ``catalog``: the item catalog (schema, unique non-null ids, prices).
* ``batch_metrics``: one row of recommendation statistics computed by DuckDB over the whole
  file (shares of unseen items and users against the previous batch, share of users with few
  events, the timestamp zone), so that these checks appear in Data Docs beside the others.

A batch larger than one partition is validated partition by partition; the row count and the
uniqueness of event ids are then judged on metrics of the whole file (``check``, ``combine``).

Suites depend only on the config and the run, never on the data, except that batch metrics
which cannot be computed (no previous batch, a missing column) are left out with a note.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# GX reads this when it is imported; set it before the import so no usage statistics are sent.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations.expectations as gxe

from pipelines.core.params import ValidateConfig
from pipelines.core.schema import CATALOG_COLUMNS, EVENT_COLUMNS, EVENT_TYPES
from pipelines.data.batch_window import batch_window, midnight_utc
from pipelines.data.validation.batch_metrics import BatchMetrics
from pipelines.data.validation.frames import NOT_IN_CATALOG

EVENTS_SUITE = "events"
CATALOG_SUITE = "catalog"
BATCH_METRICS_SUITE = "batch_metrics"

ID_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "session_id")
STRING_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, "event_type", "category")

# The regex source is kept as escapes so reports print it readably.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"

# GX type names for pandas dtypes: ``str`` for string columns, ``Timestamp`` for timezone-aware
# datetimes (a naive datetime64 column reports ``datetime64`` and fails), numpy names otherwise.
STRING_TYPE = "str"
TIMESTAMP_TYPE = "Timestamp"
PRICE_TYPE = "float64"

# Expectation ids are fixed so that result.json is the same bytes on rerun.
_ID_NAMESPACE = uuid.UUID("6f1d9c52-8d7e-4c43-9a55-0b7d1c2a4e11")


def expectation_id(suite_name: str, index: int) -> str:
    """The fixed id of the expectation at ``index`` of the suite ``suite_name``."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{suite_name}/{index}"))


@dataclass(frozen=True)
class SuiteFrame:
    """A suite, its expectations and the frame it validates, whole or in partitions."""

    name: str
    expectations: list[gxe.Expectation]
    # the whole frame, or ``None`` when ``partitions`` gives it piece by piece
    frame: pd.DataFrame | None
    # input column -> why expectations over it could not be evaluated
    unavailable: dict[str, str] = field(default_factory=dict)
    # the frame's partitions in file order, each indexed by its rows' numbers in the file
    partitions: Callable[[], Iterator[pd.DataFrame]] | None = None
    # expectation id -> GX metrics computed over the whole batch, for the expectations that
    # a partition cannot judge (see ``combine``)
    batch_wide: dict[str, dict[str, Any]] = field(default_factory=dict)


def event_expectations(
    cfg: ValidateConfig, logical_date: dt.date, window_days: int
) -> list[gxe.Expectation]:
    """The expectations over an event batch, in the order they are reported.

    Args:
        cfg: Validation thresholds.
        logical_date: The run's logical date; no event may be later than this day.
        window_days: Length of the batch window in days.

    Returns:
        Expectations for the ``events`` suite.
    """
    window = batch_window(logical_date, window_days)
    columns = list(EVENT_COLUMNS)
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=[*columns, NOT_IN_CATALOG], exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows, max_value=cfg.max_rows),
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeOfType(column=c, type_=STRING_TYPE) for c in STRING_COLUMNS
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeOfType(column="timestamp", type_=TIMESTAMP_TYPE),
        gxe.ExpectColumnValuesToBeOfType(column="price", type_=PRICE_TYPE),
    ]
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    expectations += [
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(
            column="price", min_value=cfg.price_min, max_value=cfg.price_max
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp",
            min_value=midnight_utc(cfg.min_timestamp),
            notes=f"no event before {cfg.min_timestamp.isoformat()}",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp",
            max_value=window.end,
            strict_max=True,
            notes=f"no event after the logical date {logical_date.isoformat()}",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp",
            min_value=window.start,
            max_value=window.end,
            strict_max=True,
            notes=f"inside the {window_days}-day batch window ending {logical_date.isoformat()}",
        ),
    ]
    for column in ID_COLUMNS:
        expectations += [
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=column, min_value=1, max_value=cfg.max_id_length
            ),
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=CONTROL_CHARACTERS, notes="no control characters in ids"
            ),
        ]
    expectations.append(
        gxe.ExpectColumnValuesToBeNull(
            column=NOT_IN_CATALOG,
            mostly=cfg.min_share_items_in_catalog,
            notes="holds each event's item_id that is not in the catalog",
        )
    )
    return expectations


def catalog_expectations(cfg: ValidateConfig) -> list[gxe.Expectation]:
    """The expectations over the item catalog.

    Args:
        cfg: Validation thresholds (prices and id lengths).

    Returns:
        Expectations for the ``catalog`` suite.
    """
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(CATALOG_COLUMNS), exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeOfType(column="item_id", type_=STRING_TYPE),
        gxe.ExpectColumnValuesToBeOfType(column="price", type_=PRICE_TYPE),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="item_id", min_value=1, max_value=cfg.max_id_length
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="price", min_value=cfg.price_min, max_value=cfg.price_max
        ),
    ]
    return expectations


def batch_metric_expectations(cfg: ValidateConfig, metrics: BatchMetrics) -> list[gxe.Expectation]:
    """Expectations over the one-row batch metrics frame, for the metrics that were computed.

    Args:
        cfg: The maximum shares.
        metrics: The computed statistics.

    Returns:
        Expectations for the ``batch_metrics`` suite.
    """
    bounds = {
        "share_unseen_items": (cfg.max_share_unseen_items, "items not seen in the previous batch"),
        "share_unseen_users": (cfg.max_share_unseen_users, "users not seen in the previous batch"),
        "share_users_few_events": (
            cfg.max_share_users_few_events,
            f"users with fewer than {cfg.min_events_per_user} events",
        ),
    }
    checked = metrics.checked()
    expectations: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToBeBetween(
            column=name, min_value=0.0, max_value=maximum, notes=f"share of {what}"
        )
        for name, (maximum, what) in bounds.items()
        if name in checked
    ]
    if "timestamp_timezone" in checked:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="timestamp_timezone", value_set=["UTC"], notes="timestamps are in UTC"
            )
        )
    return expectations
