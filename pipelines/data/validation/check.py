"""Check a batch: read it, build the frames and suites, and run them with Great Expectations.

Nothing is written but the Data Docs, when a folder for them is given.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.core.params import ValidateConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA
from pipelines.data.batch_window import midnight_utc
from pipelines.data.validation.batch_metrics import BatchMetrics, compute_batch_metrics
from pipelines.data.validation.frames import catalog_frame, events_frame
from pipelines.data.validation.inputs import BatchInput, previous_events, read_batch
from pipelines.data.validation.runner import run_suites
from pipelines.data.validation.suites import (
    BATCH_METRICS_SUITE,
    CATALOG_SUITE,
    EVENTS_SUITE,
    SuiteFrame,
    batch_metric_expectations,
    catalog_expectations,
    event_expectations,
)


def type_problems(table: pa.Table, expected: pa.Schema) -> dict[str, str]:
    """Columns of ``expected`` that ``table`` lacks or holds with another type, and why.

    GX cannot evaluate expectations over such a column; the reason given here is what the
    report says instead of GX's own exception.
    """
    problems = {}
    for column in expected:
        if column.name not in table.schema.names:
            problems[column.name] = f"column {column.name!r} is missing"
            continue
        actual = table.schema.field(column.name).type
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


def check_batch(
    cfg: ValidateConfig,
    batch: BatchInput,
    window_days: int,
    quarantine: Path | None = None,
    docs_dir: Path | None = None,
) -> tuple[list[SuiteFrame], list[Any], BatchMetrics]:
    """Read a batch and run the three suites over it (nothing is written but Data Docs).

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
    events, catalog = read_batch(batch)
    if "item_id" in catalog.schema.names:
        catalog_ids = catalog.column("item_id")
    else:
        catalog_ids = pa.array([], pa.string())
    events_for_suite = events_frame(events, catalog_ids)
    previous, previous_name, previous_note = previous_events(batch, quarantine)
    metrics = compute_batch_metrics(events_for_suite, cfg, previous, previous_name)
    if previous_note:
        metrics = replace(metrics, notes=(*metrics.notes, previous_note))
    event_problems = type_problems(events, EVENT_SCHEMA)
    suites = [
        SuiteFrame(
            EVENTS_SUITE,
            event_expectations(cfg, batch.date, window_days),
            events_for_suite,
            event_problems,
        ),
        SuiteFrame(
            CATALOG_SUITE,
            catalog_expectations(cfg),
            catalog_frame(catalog),
            type_problems(catalog, CATALOG_SCHEMA),
        ),
    ]
    metric_expectations = batch_metric_expectations(cfg, metrics)
    if metric_expectations:
        suites.append(SuiteFrame(BATCH_METRICS_SUITE, metric_expectations, metrics.frame()))
    run_time = midnight_utc(batch.date)
    results = run_suites(suites, batch.name, run_time, cfg.example_values, docs_dir)
    return suites, results, metrics
