"""The ``validate`` stage's work: check a batch with Great Expectations, then publish or reject it.

``validate_batch(cfg, run, PATH, ...)`` does what ``recflow validate`` does. PATH is a batch
store, a batch folder or an events Parquet file (see ``inputs``); it is only ever read.

A valid batch is written to ``--out`` (copies of the events and catalog plus ``batch.json``
naming the batch, its date and sha256s). A rejected batch gets a short summary of each failed
expectation (the stage exits 1 with it); it is copied with its report into
``--quarantine/<batch>/``, ``--out`` is not written, and a stale ``--out`` from an earlier run
is removed if it carries the ``batch.json`` marker (a folder without it is never touched).
Reports (``result.json``, ``summary.txt`` and Data Docs under ``data_docs/``) are written in
both cases. An input that cannot be read raises ``InputError`` (the stage exits 2).

Read in this order: ``inputs`` (which files), ``check`` (read them and run the suites:
``partitions``, ``frames``, ``batch_wide``, ``batch_metrics``, ``suites``, ``runner``,
``combine``, ``docs``), ``failures`` and ``reports`` (what the outcome says), then this module
(where it is written).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.core.errors import BatchRejected, InputError
from pipelines.core.io import atomic_dir, sha256_file, write_json, write_text
from pipelines.core.params import RunConfig, ValidateConfig
from pipelines.core.schema import CATALOG_FILE, EVENTS_FILE
from pipelines.data.batch_window import batch_window
from pipelines.data.validation.check import check_batch
from pipelines.data.validation.failures import Failure, describe_failures
from pipelines.data.validation.inputs import MANIFEST_FILE, BatchInput, resolve_batch
from pipelines.data.validation.reports import (
    expectation_counts,
    metrics_document,
    result_document,
    summary_text,
)

log = logging.getLogger("recflow.validate")

BATCH_FILE = "batch.json"
RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.txt"
DOCS_DIR = "data_docs"
DEFAULT_REPORTS = Path("reports/validation")


@dataclass(frozen=True)
class ValidationOutcome:
    """What validating a batch found and where it wrote it."""

    success: bool
    batch: BatchInput
    statistics: dict[str, float]
    failures: list[Failure]
    metrics: dict[str, Any]
    summary: str
    result: dict[str, Any]
    reports: Path | None = None
    data_docs: Path | None = None
    quarantined: Path | None = None
    out: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def raise_for_rejection(self) -> None:
        """Raise ``BatchRejected`` with the summary if the batch failed validation."""
        if not self.success:
            raise BatchRejected(self.summary)


def _check_outputs_apart(batch: BatchInput, path: Path, outputs: dict[str, Path | None]) -> None:
    """Refuse outputs that would replace or write into the input: raw data is never modified."""
    inputs = [p.resolve() for p in (path, batch.events, batch.catalog)]
    for option, output in outputs.items():
        if output is None:
            continue
        target = output.resolve()
        for source in inputs:
            if target == source or target in source.parents or source in target.parents:
                raise InputError(
                    f"{option} {output} overlaps the input {source}; choose another folder"
                )


def _is_ours(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file()


def _write_quarantine(
    target: Path, batch: BatchInput, result: dict[str, Any], summary: str
) -> None:
    with atomic_dir(target) as tmp:
        shutil.copyfile(batch.events, tmp / EVENTS_FILE)
        shutil.copyfile(batch.catalog, tmp / CATALOG_FILE)
        if batch.manifest is not None:
            shutil.copyfile(batch.manifest, tmp / MANIFEST_FILE)
        write_json(tmp / RESULT_FILE, result)
        write_text(tmp / SUMMARY_FILE, summary + "\n")


def _write_validated(
    out: Path, batch: BatchInput, statistics: dict[str, float], window_days: int
) -> None:
    with atomic_dir(out) as tmp:
        shutil.copyfile(batch.events, tmp / EVENTS_FILE)
        shutil.copyfile(batch.catalog, tmp / CATALOG_FILE)
        window = batch_window(batch.date, window_days)
        write_json(
            tmp / BATCH_FILE,
            {
                "batch": batch.name,
                "date": batch.date.isoformat(),
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "rows": pq.ParquetFile(batch.events).metadata.num_rows,
                "sha256": {
                    EVENTS_FILE: sha256_file(batch.events),
                    CATALOG_FILE: sha256_file(batch.catalog),
                },
                "expectations": statistics,
            },
        )


def validate_batch(
    cfg: ValidateConfig,
    run: RunConfig,
    path: Path,
    *,
    window_days: int,
    catalog: Path | None = None,
    out: Path | None = None,
    reports: Path | None = DEFAULT_REPORTS,
    quarantine: Path | None = None,
    metrics: Path | None = None,
) -> ValidationOutcome:
    """Validate the batch at ``path``; write reports, metrics and the accepted or rejected copy.

    A rejected batch does not raise: check ``outcome.success`` or call
    ``outcome.raise_for_rejection()`` (the command line does).

    Args:
        cfg: Validation thresholds.
        run: The run (its logical date selects and judges the batch).
        path: A batch store, a batch folder or an events Parquet file (only read).
        window_days: Length of the batch window (``ingest.window_days``).
        catalog: Catalog file overriding the batch's own.
        out: Folder for the accepted batch, or ``None``.
        reports: Folder for ``result.json``, ``summary.txt`` and Data Docs, or ``None``.
        quarantine: Folder under which a rejected batch is copied, or ``None``.
        metrics: JSON file for validation statistics, or ``None``.

    Returns:
        The outcome, with the summary and where things were written.

    Raises:
        InputError: The input is missing or unreadable, or an output overlaps it.
    """
    batch = resolve_batch(path, run.logical_date, catalog)
    _check_outputs_apart(
        batch,
        path,
        {"--out": out, "--reports": reports, "--quarantine": quarantine, "--metrics": metrics},
    )
    log.info("validating batch %s (%s) against %s", batch.name, batch.events, batch.date)
    started = time.perf_counter()
    if reports is None:
        outcome = _evaluate(cfg, batch, window_days, quarantine, docs_dir=None)
    else:
        with atomic_dir(reports) as tmp:
            outcome = _evaluate(cfg, batch, window_days, quarantine, docs_dir=tmp / DOCS_DIR)
            write_json(tmp / RESULT_FILE, outcome.result)
            write_text(tmp / SUMMARY_FILE, outcome.summary + "\n")
        outcome = replace(outcome, reports=reports, data_docs=reports / DOCS_DIR / "index.html")
    seconds = time.perf_counter() - started
    rows = outcome.metrics["rows"]
    log.info("validated %d rows in %.2f s (%.0f rows/s)", rows, seconds, rows / max(seconds, 1e-9))
    return _write_outputs(outcome, window_days, out, quarantine, metrics)


def _evaluate(
    cfg: ValidateConfig,
    batch: BatchInput,
    window_days: int,
    quarantine: Path | None,
    docs_dir: Path | None,
) -> ValidationOutcome:
    suites, results, batch_metrics = check_batch(cfg, batch, window_days, quarantine, docs_dir)
    success = all(r.success for r in results)
    statistics = expectation_counts(results)
    failures = describe_failures(suites, results, cfg.example_values)
    return ValidationOutcome(
        success=success,
        batch=batch,
        statistics=statistics,
        failures=failures,
        metrics=metrics_document(
            batch, success, statistics, suites, results, failures, batch_metrics
        ),
        summary=summary_text(batch, success, statistics, failures, batch_metrics),
        result=result_document(results, success),
        notes=batch_metrics.notes,
    )


def _write_outputs(
    outcome: ValidationOutcome,
    window_days: int,
    out: Path | None,
    quarantine: Path | None,
    metrics: Path | None,
) -> ValidationOutcome:
    batch = outcome.batch
    quarantined = None
    if outcome.success:
        if out is not None:
            _write_validated(out, batch, outcome.statistics, window_days)
            log.info("accepted batch %s written to %s", batch.name, out)
        stale = quarantine / batch.name if quarantine is not None else None
        if stale is not None and stale.is_dir() and _is_ours(stale, SUMMARY_FILE):
            shutil.rmtree(stale)
            log.info("removed the earlier quarantine copy %s: the batch now passes", stale)
    else:
        if quarantine is not None:
            quarantined = quarantine / batch.name
            _write_quarantine(quarantined, batch, outcome.result, outcome.summary)
            log.info("rejected batch %s quarantined in %s", batch.name, quarantined)
        if out is not None and out.exists():
            if _is_ours(out, BATCH_FILE):
                shutil.rmtree(out)
                log.warning("removed the stale validated batch %s", out)
            else:
                log.warning("left %s in place: it holds no %s, so it is not ours", out, BATCH_FILE)
    if metrics is not None:
        write_json(metrics, outcome.metrics)
    if outcome.data_docs is not None:
        log.info("data docs: %s", outcome.data_docs)
    return replace(outcome, quarantined=quarantined, out=out if outcome.success else None)
