"""The Great Expectations suites a batch must pass, built from ``ValidateConfig``.

Three suites, each over its own lean pandas frame:

* ``events``: the event table itself (schema, types, nulls, value ranges, the batch window,
  unique ids, id hygiene, catalog membership through the derived column
  ``item_id_not_in_catalog``, which holds the item id where it is missing from the catalog).
* ``catalog``: the item catalog (schema, unique non-null ids, prices).
* ``batch_metrics``: one row of recommendation statistics computed in pandas (shares of unseen
  items and users against the previous batch, share of users with few events, the timestamp
  zone), so that these checks appear in Data Docs beside the others.

Suites depend only on the config and the run, never on the data, except that batch metrics
which cannot be computed (no previous batch, a missing column) are left out with a note.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# GX reads this when it is imported; set it before the import so no usage statistics are sent.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
import great_expectations.expectations as gxe

from pipelines.core.params import ValidateConfig
from pipelines.core.schema import CATALOG_COLUMNS, EVENT_COLUMNS, EVENT_TYPES

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext

EVENTS_SUITE = "events"
CATALOG_SUITE = "catalog"
BATCH_METRICS_SUITE = "batch_metrics"

ID_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "session_id")
STRING_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, "event_type", "category")
NOT_IN_CATALOG = "item_id_not_in_catalog"
# derived column -> the input column it is computed from, for "column missing" reports
DERIVED_FROM: dict[str, str] = {NOT_IN_CATALOG: "item_id"}

# The regex source is kept as escapes so reports print it readably.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"

# GX type names for pandas dtypes: ``str`` for string columns, ``Timestamp`` for timezone-aware
# datetimes (a naive datetime64 column reports ``datetime64`` and fails), numpy names otherwise.
STRING_TYPE = "str"
TIMESTAMP_TYPE = "Timestamp"
PRICE_TYPE = "float64"

# Expectation ids are fixed so that result.json is the same bytes on rerun.
_ID_NAMESPACE = uuid.UUID("6f1d9c52-8d7e-4c43-9a55-0b7d1c2a4e11")


@dataclass(frozen=True)
class BatchWindow:
    """The half-open time window ``[start, end)`` a batch's events must fall into."""

    start: dt.datetime
    end: dt.datetime


def batch_window(logical_date: dt.date, window_days: int) -> BatchWindow:
    """The window of the batch for ``logical_date``: its last ``window_days`` days, in UTC.

    Args:
        logical_date: The run's logical date; the window ends at the end of this day.
        window_days: How many days the window covers (``ingest.window_days``).

    Returns:
        ``[logical_date - window_days + 1 at 00:00 UTC, logical_date + 1 day at 00:00 UTC)``.
    """
    end = dt.datetime.combine(logical_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return BatchWindow(start=end - dt.timedelta(days=window_days), end=end)


def _midnight_utc(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


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
            min_value=_midnight_utc(cfg.min_timestamp),
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


@dataclass(frozen=True)
class BatchMetrics:
    """Recommendation statistics of a batch; ``None`` where they could not be computed."""

    rows: int
    users: int | None = None
    items: int | None = None
    share_unseen_items: float | None = None
    share_unseen_users: float | None = None
    share_users_few_events: float | None = None
    timestamp_timezone: str | None = None
    previous_batch: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def frame(self) -> pd.DataFrame:
        """The one-row frame the ``batch_metrics`` suite runs on (computed values only)."""
        values = {name: [value] for name, value in self.checked().items()}
        return pd.DataFrame(values if values else {"rows": [self.rows]})

    def checked(self) -> dict[str, float | str]:
        """The metrics the suite checks, those that could be computed."""
        names = (
            "share_unseen_items",
            "share_unseen_users",
            "share_users_few_events",
            "timestamp_timezone",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _share(mask: pd.Series | pd.Index) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def _share_unseen(current: pd.Index, previous: pd.Series) -> float | None:
    if not len(current):
        return 0.0
    unseen = _not_in(pa.array(current.to_numpy(dtype=object)), pa.array(previous.dropna().unique()))
    return None if unseen is None else pc.mean(pc.cast(unseen, pa.float64())).as_py()


def compute_batch_metrics(
    events: pd.DataFrame,
    cfg: ValidateConfig,
    previous: pd.DataFrame | None = None,
    previous_name: str | None = None,
) -> BatchMetrics:
    """Compute the recommendation statistics of a batch in pandas.

    Args:
        events: The batch's events (any columns; missing ones are noted, not raised).
        cfg: Thresholds; ``min_events_per_user`` defines "few events".
        previous: ``user_id`` and ``item_id`` of the previous batch, or ``None`` if there is none.
        previous_name: Name of the previous batch, for the report.

    Returns:
        The statistics, with a note for each one that was skipped.
    """
    notes: list[str] = []
    users = items = None
    share_unseen_items = share_unseen_users = share_few = None
    if events.empty:
        notes.append("batch has no rows: recommendation checks skipped")
        return BatchMetrics(rows=0, notes=tuple(notes), previous_batch=previous_name)
    if previous is None:
        notes.append("no previous batch: unseen item and user shares skipped")
    if "user_id" in events.columns:
        counts = events["user_id"].value_counts(dropna=True)
        users = len(counts)
        share_few = _share(counts < cfg.min_events_per_user)
        if previous is not None and "user_id" in previous.columns:
            unique_users = pd.Index(counts.index)
            share_unseen_users = _share_unseen(unique_users, previous["user_id"])
    else:
        notes.append("column 'user_id' missing: user checks skipped")
    if "item_id" in events.columns:
        unique_items = pd.Index(events["item_id"].dropna().unique())
        items = len(unique_items)
        if previous is not None and "item_id" in previous.columns:
            share_unseen_items = _share_unseen(unique_items, previous["item_id"])
    else:
        notes.append("column 'item_id' missing: item checks skipped")
    timezone = None
    if "timestamp" in events.columns and isinstance(events["timestamp"].dtype, pd.DatetimeTZDtype):
        timezone = str(events["timestamp"].dtype.tz)
    return BatchMetrics(
        rows=len(events),
        users=users,
        items=items,
        share_unseen_items=share_unseen_items,
        share_unseen_users=share_unseen_users,
        share_users_few_events=share_few,
        timestamp_timezone=timezone,
        previous_batch=previous_name,
        notes=tuple(notes),
    )


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


def _expectation_id(suite_name: str, index: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{suite_name}/{index}"))


def add_suite(
    context: AbstractDataContext, name: str, expectations: list[gxe.Expectation]
) -> gx.ExpectationSuite:
    """Add a suite holding ``expectations`` to ``context``, with ids fixed by position.

    GX gives each expectation a random id when the suite is stored; fixed ids make the
    validation result the same bytes on every rerun.
    """
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    for index, expectation in enumerate(suite.expectations):
        expectation.id = _expectation_id(name, index)
    suite.save()
    return suite


def events_frame(events: pa.Table, catalog_item_ids: pa.Array) -> pd.DataFrame:
    """The lean pandas frame the ``events`` suite runs on.

    Strings become Arrow-backed pandas strings (vectorised string checks, little memory), and
    the derived column ``item_id_not_in_catalog`` is added when the events have item ids.

    Args:
        events: The event table as read from Parquet.
        catalog_item_ids: The catalog's item ids (empty when it has none, so that every item
            counts as missing from it).

    Returns:
        The frame to validate.
    """
    if "item_id" in events.column_names:
        item_ids = events.column("item_id")
        missing = _not_in(item_ids, catalog_item_ids)
        if missing is not None:
            derived = pc.if_else(missing, item_ids.cast(pa.string()), pa.scalar(None, pa.string()))
            events = events.append_column(NOT_IN_CATALOG, derived)
    return events.to_pandas(types_mapper=_arrow_strings)


def _not_in(
    values: pa.Array | pa.ChunkedArray, reference: pa.Array | pa.ChunkedArray
) -> pa.ChunkedArray | pa.Array | None:
    """Where ``values`` are missing from ``reference`` (compared as strings), in Arrow.

    Arrow's ``is_in`` instead of pandas' ``isin``, which converts the reference set value by
    value. ``None`` if either side cannot be read as strings (its type check reports why).
    """
    try:
        as_text = values.cast(pa.string())
        known = pa.chunked_array(reference).cast(pa.string()).unique()
    except (pa.ArrowException, ValueError):
        return None
    if isinstance(known, pa.ChunkedArray):
        known = known.combine_chunks()
    return pc.invert(pc.is_in(as_text, value_set=known))


def catalog_frame(catalog: pa.Table) -> pd.DataFrame:
    """The pandas frame the ``catalog`` suite runs on."""
    return catalog.to_pandas(types_mapper=_arrow_strings)


def _arrow_strings(arrow_type: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow", na_value=np.nan)
    return None


DOCS_SITE = "local_site"


@dataclass(frozen=True)
class SuiteFrame:
    """A suite, its expectations and the frame it validates."""

    name: str
    expectations: list[gxe.Expectation]
    frame: pd.DataFrame
    # input column -> why expectations over it could not be evaluated
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """One failed expectation, in the words of the report."""

    suite: str
    expectation: str
    column: str | None
    detail: str
    unexpected_count: int | None = None
    examples: tuple[object, ...] = ()
    note: str | None = None

    def line(self) -> str:
        """One line of the summary."""
        where = f"({self.column})" if self.column else ""
        note = f" [{self.note}]" if self.note else ""
        return f"{self.suite}: {self.expectation}{where}{note}: {self.detail}"


def _context(docs_dir: Path | None) -> AbstractDataContext:
    """An in-memory data context, with a filesystem Data Docs site under ``docs_dir``.

    Nothing is read from or written to a GX project folder or the user's home.
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # GX logs its own set-up at INFO on every run; only its warnings matter here.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@contextlib.contextmanager
def _lean_pandas() -> Iterator[None]:
    """Settings under which GX's pandas checks stay vectorised on large frames.

    GX's string checks call ``astype(str)``: with pandas' ``future.infer_string`` that keeps
    Arrow strings (Arrow kernels) instead of building millions of Python strings. GX also hashes
    every frame under 1 GB for a batch fingerprint (about 2 s per million events) that nothing
    here uses; the stage records the sha256 of the input files instead.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    threshold = engine.HASH_THRESHOLD
    engine.HASH_THRESHOLD = 0
    try:
        with pd.option_context("future.infer_string", True):
            yield
    finally:
        engine.HASH_THRESHOLD = threshold


def run_suites(
    suites: list[SuiteFrame],
    run_name: str,
    run_time: dt.datetime,
    example_values: int,
    docs_dir: Path | None = None,
) -> list[ExpectationSuiteValidationResult]:
    """Validate each frame with its suite in one in-memory context; build Data Docs.

    Args:
        suites: The suites and their frames.
        run_name: Name of the run in results and Data Docs (the batch name).
        run_time: Time recorded for the run (the logical date, never the clock).
        example_values: How many unexpected values each result keeps.
        docs_dir: Folder to build the Data Docs site into, or ``None`` for none.

    Returns:
        One validation result per suite, in order.
    """
    context = _context(docs_dir)
    source = context.data_sources.add_pandas("recflow")
    run_id = gx.RunIdentifier(run_name=run_name, run_time=run_time)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": example_values}
    results = []
    # One validation definition per frame, run directly: a Checkpoint would hand the same
    # batch parameters (the same dataframe) to every validation definition it holds.
    for item in suites:
        batch = source.add_dataframe_asset(item.name).add_batch_definition_whole_dataframe(
            item.name
        )
        suite = add_suite(context, item.name, item.expectations)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=item.name, data=batch, suite=suite)
        )
        with _lean_pandas():
            results.append(
                definition.run(
                    batch_parameters={"dataframe": item.frame},
                    result_format=result_format,
                    run_id=run_id,
                )
            )
    if docs_dir is not None:
        context.build_data_docs(site_names=[DOCS_SITE])
        _add_offline_index(docs_dir, results)
        freeze_data_docs(docs_dir, run_time.strftime("%Y%m%dT%H%M%S.%fZ"))
    return results


_GX_STAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def freeze_data_docs(docs_dir: Path, stamp: str) -> None:
    """Make the Data Docs pages the same bytes for the same results.

    GX writes the clock (load time, cache-busting query strings) and random element ids into
    its pages; a rerun would change the report, and with it the stage's DVC record. Clock
    stamps become the run's own time and random ids become ids numbered per page in order of
    appearance, so links inside a page still match.
    """
    for page in sorted(docs_dir.rglob("*.html")):
        text = _GX_STAMP.sub(stamp, page.read_text(encoding="utf-8"))
        page.write_text(_number_uuids(text), encoding="utf-8")


def _number_uuids(text: str) -> str:
    numbering: dict[str, str] = {}

    def number(match: re.Match[str]) -> str:
        found = match.group(0)
        if found not in numbering:
            numbering[found] = f"00000000-0000-4000-8000-{len(numbering):012x}"
        return numbering[found]

    return _UUID.sub(number, text)


def _add_offline_index(docs_dir: Path, results: list[ExpectationSuiteValidationResult]) -> None:
    """Put plain links to the result pages at the top of the Data Docs index.

    GX fills the index's result table with JavaScript loaded from CDNs, so opened from disk
    without network access it would list nothing; the result pages themselves are static HTML.
    """
    index = docs_dir / "index.html"
    items = []
    for result in results:
        pages = sorted((docs_dir / "validations" / result.suite_name).glob("**/*.html"))
        if not pages:
            continue
        stats = result.statistics
        status = "passed" if result.success else "failed"
        href = html.escape(pages[0].relative_to(docs_dir).as_posix())
        items.append(
            f'<li><a href="{href}">{html.escape(result.suite_name)}</a>: {status}, '
            f"{stats['successful_expectations']} of {stats['evaluated_expectations']} "
            "expectations met</li>"
        )
    block = (
        '<section id="recflow-results" style="margin:1em 2em">'
        "<h2>Validation results</h2><ul>" + "".join(items) + "</ul></section>"
    )
    text = index.read_text(encoding="utf-8")
    index.write_text(text.replace("<body>", "<body>\n" + block, 1), encoding="utf-8")


def _show(value: object, limit: int = 40) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    text = repr(value)
    if isinstance(value, str) and len(value) > limit:
        text = f"{value[:limit]!r}… ({len(value)} chars)"
    return text


def _examples(result: dict[str, Any], limit: int) -> tuple[object, ...]:
    seen: list[object] = []
    for value in result.get("partial_unexpected_list") or []:
        if value not in seen:
            seen.append(value)
        if len(seen) == limit:
            break
    return tuple(seen)


def _detail(kind: str, result: dict[str, Any], examples: tuple[object, ...]) -> str:
    if kind in {"expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list"}:
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        parts = [
            f"{label} {', '.join(sorted(map(str, mismatched[key])))}"
            for key, label in (("missing", "missing"), ("unexpected", "unexpected"))
            if mismatched.get(key)
        ]
        return "; ".join(parts) or f"columns {result.get('observed_value')}"
    if "unexpected_count" in result:
        count = result["unexpected_count"]
        total = result.get("element_count")
        text = f"{count} unexpected" + (f" of {total} rows" if total is not None else "")
        if examples:
            text += ", e.g. " + ", ".join(_show(value) for value in examples)
        return text
    return f"observed {_show(result.get('observed_value'))}"


def describe_failures(
    suites: list[SuiteFrame],
    results: list[ExpectationSuiteValidationResult],
    example_values: int,
) -> list[Failure]:
    """The failed expectations of ``results``, each with its column, count and example values.

    Expectations that GX could not evaluate (a missing column, a column of the wrong type) are
    reported as not evaluated, with the reason taken from the frame where it is known.

    Args:
        suites: The suites the results belong to, in the same order.
        results: Their validation results.
        example_values: How many example values to keep per failure.

    Returns:
        The failures, in suite order.
    """
    failures = []
    for item, suite_result in zip(suites, results, strict=True):
        # GX reorders results; report them in the order of the suite
        order = {_expectation_id(item.name, i): i for i in range(len(item.expectations))}
        failed = [r for r in suite_result.results if not r.success]
        failed.sort(key=lambda r: order.get(getattr(r.expectation_config, "id", None) or "", 0))
        for result in failed:
            config = result.expectation_config
            kind = config.type if config is not None else "unknown"
            column = config.kwargs.get("column") if config is not None else None
            note = _note(config.notes if config is not None else None)
            info = result.exception_info or {}
            raised = bool(info.get("raised_exception")) or any(
                isinstance(v, dict) and v.get("raised_exception") for v in info.values()
            )
            if raised:
                source = DERIVED_FROM.get(column, column) if column else None
                reason = item.unavailable.get(source) if source else None
                if reason is None:
                    reason = _exception_message(info)
                failures.append(
                    Failure(item.name, kind, column, f"not evaluated: {reason}", note=note)
                )
                continue
            payload = dict(result.result or {})
            # the unexpected values of a not-null check are all nulls: nothing to show
            nulls = kind == "expect_column_values_to_not_be_null"
            examples = () if nulls else _examples(payload, example_values)
            failures.append(
                Failure(
                    item.name,
                    kind,
                    column,
                    _detail(kind, payload, examples),
                    payload.get("unexpected_count"),
                    examples,
                    note,
                )
            )
    return failures


def _note(notes: object) -> str | None:
    if isinstance(notes, list):
        return "; ".join(str(n) for n in notes) or None
    return str(notes) if notes else None


def _exception_message(info: dict[str, Any]) -> str:
    messages = [info.get("exception_message")] + [
        v.get("exception_message") for v in info.values() if isinstance(v, dict)
    ]
    text = next((m for m in messages if m), "unknown error")
    return str(text).strip().splitlines()[0][:200]
