"""Check a batch: read it, build the frames and suites, and run them with Great Expectations.

Memory stays bounded whatever the batch size: the events are read one partition at a time
(``partitions``), and whatever needs the whole batch at once (uniqueness, distinct and
per-user counts, shares against the previous batch) is computed by DuckDB over the file
(``batch_wide``). Nothing is written but the Data Docs, when a folder for them is given.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

# GX reads this when it is imported; set it before the import so no usage statistics are sent.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations.expectations as gxe

from pipelines.core.io import read_parquet
from pipelines.core.params import ValidateConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA
from pipelines.data.batch_window import midnight_utc
from pipelines.data.validation import partitions
from pipelines.data.validation.batch_metrics import BatchMetrics, compute_batch_metrics
from pipelines.data.validation.batch_wide import connect, duplicates
from pipelines.data.validation.combine import ROW_COUNT, unique_metrics
from pipelines.data.validation.frames import catalog_frame, events_frame
from pipelines.data.validation.inputs import (
    BatchInput,
    events_shape,
    previous_events,
    read_catalog,
)
from pipelines.data.validation.runner import run_suites
from pipelines.data.validation.suites import (
    BATCH_METRICS_SUITE,
    CATALOG_SUITE,
    EVENTS_SUITE,
    SuiteFrame,
    batch_metric_expectations,
    catalog_expectations,
    event_expectations,
    expectation_id,
)

log = logging.getLogger("recflow.validate")


def type_problems(schema: pa.Schema, expected: pa.Schema) -> dict[str, str]:
    """Columns of ``expected`` that ``schema`` lacks or holds with another type, and why.

    GX cannot evaluate expectations over such a column; the reason given here is what the
    report says instead of GX's own exception.
    """
    problems = {}
    for column in expected:
        if column.name not in schema.names:
            problems[column.name] = f"column {column.name!r} is missing"
            continue
        actual = schema.field(column.name).type
        same_kind = actual == column.type or (
            pa.types.is_large_string(actual) and pa.types.is_string(column.type)
        )
        if pa.types.is_timestamp(column.type):
            same_kind = pa.types.is_timestamp(actual) and actual.tz is not None
        if not same_kind:
            problems[column.name] = (
                f"column {column.name!r} has type {actual}, expected {column.type}"
            )
    return problems


def _partitions(
    batch: BatchInput, rows: int, catalog_ids: pa.Array
) -> Callable[[], Iterator[pd.DataFrame]]:
    """The events suite's frames, one partition at a time, with sparse progress in the log."""
    size = partitions.PARTITION_ROWS
    count = -(-rows // size)
    every = max(count // 10, 1)

    def frames() -> Iterator[pd.DataFrame]:
        started = time.perf_counter()
        for number, (offset, table) in enumerate(
            partitions.event_partitions(batch.events, size), start=1
        ):
            yield events_frame(table, catalog_ids, offset)
            if number % every == 0 or number == count:
                log.info(
                    "events: partition %d of %d validated (%d rows, %.1f s)",
                    number,
                    count,
                    min(offset + table.num_rows, rows),
                    time.perf_counter() - started,
                )

    return frames


def _batch_wide(
    cfg: ValidateConfig, batch: BatchInput, schema: pa.Schema, rows: int, suite: list[Any]
) -> dict[str, dict[str, Any]]:
    """GX metrics over the whole batch for the events expectations a partition cannot judge."""
    metrics: dict[str, dict[str, Any]] = {}
    with connect() as con:
        for index, expectation in enumerate(suite):
            key = expectation_id(EVENTS_SUITE, index)
            if isinstance(expectation, gxe.ExpectTableRowCountToBeBetween):
                metrics[key] = {ROW_COUNT: rows}
            elif (
                isinstance(expectation, gxe.ExpectColumnValuesToBeUnique)
                and expectation.column in schema.names
            ):
                found = duplicates(con, batch.events, expectation.column, cfg.example_values)
                metrics[key] = unique_metrics(found)
    return metrics


def check_batch(
    cfg: ValidateConfig,
    batch: BatchInput,
    window_days: int,
    quarantine: Path | None = None,
    docs_dir: Path | None = None,
) -> tuple[list[SuiteFrame], list[Any], BatchMetrics]:
    """Read a batch and run the three suites over it (nothing is written but Data Docs).

    A batch of at most ``partitions.PARTITION_ROWS`` events is validated as one frame. A
    larger one is validated partition by partition (``partitions``) and the results are combined
    (``combine``); the row count and the uniqueness of event ids are judged on metrics
    computed over the whole file (``batch_wide``).

    Args:
        cfg: Validation thresholds.
        batch: The batch's files.
        window_days: Length of the batch window (``ingest.window_days``).
        quarantine: The quarantine folder (rejected batches are never "previous").
        docs_dir: Where to build Data Docs, or ``None``.

    Returns:
        The suites with their frames, their validation results and the batch metrics.

    Raises:
        InputError: The events or the catalog cannot be read.
    """
    rows, schema = events_shape(batch)
    catalog = read_catalog(batch)
    if "item_id" in catalog.schema.names:
        catalog_ids = catalog.column("item_id")
    else:
        catalog_ids = pa.array([], pa.string())
    previous, previous_name, previous_note = previous_events(batch, quarantine)
    metrics = compute_batch_metrics(batch.events, schema, rows, cfg, previous, previous_name)
    if previous_note:
        metrics = replace(metrics, notes=(*metrics.notes, previous_note))
    expectations = event_expectations(cfg, batch.date, window_days)
    if rows <= partitions.PARTITION_ROWS:
        events = SuiteFrame(
            EVENTS_SUITE,
            expectations,
            events_frame(read_parquet(batch.events, "events file"), catalog_ids),
            type_problems(schema, EVENT_SCHEMA),
        )
    else:
        size = partitions.PARTITION_ROWS
        log.info("events: %d rows, validated in partitions of %d rows", rows, size)
        events = SuiteFrame(
            EVENTS_SUITE,
            expectations,
            None,
            type_problems(schema, EVENT_SCHEMA),
            partitions=_partitions(batch, rows, catalog_ids),
            batch_wide=_batch_wide(cfg, batch, schema, rows, expectations),
        )
    suites = [
        events,
        SuiteFrame(
            CATALOG_SUITE,
            catalog_expectations(cfg),
            catalog_frame(catalog),
            type_problems(catalog.schema, CATALOG_SCHEMA),
        ),
    ]
    metric_expectations = batch_metric_expectations(cfg, metrics)
    if metric_expectations:
        suites.append(SuiteFrame(BATCH_METRICS_SUITE, metric_expectations, metrics.frame()))
    run_time = midnight_utc(batch.date)
    results = run_suites(suites, batch.name, run_time, cfg.example_values, docs_dir)
    return suites, results, metrics
