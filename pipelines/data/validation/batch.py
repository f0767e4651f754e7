"""Stage ``validate``: check an event batch with Great Expectations before anything trains on it.

``python -m pipelines.data.validation.batch PATH [--catalog CATALOG] [--out DIR] [--reports DIR]
[--quarantine DIR] [--metrics FILE] [--params params.yaml]``, the same as ``recflow validate``.

PATH is one of:

* a raw batch store (a folder of ``YYYY-MM-DD/`` batch folders): the batch of the run's
  logical date is validated;
* a batch folder holding ``events.parquet`` and ``catalog.parquet`` (and ``manifest.json``);
  a folder named ``YYYY-MM-DD`` is judged against its own date, any other against the logical
  date;
* an events Parquet file, judged against the logical date; its catalog is ``--catalog`` or
  else ``catalog.parquet`` beside it. Without a catalog the stage fails: membership in the
  catalog is part of the suite, and a half-checked batch must not pass.

``--catalog`` also overrides the catalog of a batch folder or store.

A valid batch exits 0 and writes ``--out`` (copies of the events and catalog plus
``batch.json`` naming the batch, its date and sha256s). A rejected batch exits 1 with a short
summary of each failed expectation; it is copied with its report into
``--quarantine/<batch>/``, ``--out`` is not written, and a stale ``--out`` from an earlier run is
removed if it carries the ``batch.json`` marker (a folder without it is never touched).
Reports (``result.json``, ``summary.txt`` and Data Docs under ``data_docs/``) are written in
both cases. An input that cannot be read exits 2. PATH is only ever read.

The unseen item and user shares compare the batch with the previous one: the latest
earlier-dated batch of the same store that is not in the quarantine folder.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import BatchRejected, InputError
from pipelines.core.io import atomic_dir, sha256_file, write_json, write_text
from pipelines.core.params import RunConfig, ValidateConfig
from pipelines.core.schema import CATALOG_FILE, CATALOG_SCHEMA, EVENT_SCHEMA, EVENTS_FILE
from pipelines.data.validation import suites as ex

log = logging.getLogger("recflow.validate")

MANIFEST_FILE = "manifest.json"
BATCH_FILE = "batch.json"
RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.txt"
DOCS_DIR = "data_docs"
DEFAULT_REPORTS = Path("reports/validation")

# GX meta fields that change on every run (random ids, load time); dropped from result.json.
_VOLATILE_META = ("validation_id", "checkpoint_id")


@dataclass(frozen=True)
class BatchInput:
    """The files of the batch to validate.

    Attributes:
        name: Batch name for reports and quarantine: its date, or the file stem.
        date: The date the batch is judged against (its window ends on this day).
        events: The events Parquet file.
        catalog: The catalog Parquet file.
        manifest: The ingest manifest, if the batch has one.
        store: The batch store the batch belongs to, if any (to find the previous batch).
    """

    name: str
    date: dt.date
    events: Path
    catalog: Path
    manifest: Path | None = None
    store: Path | None = None


@dataclass(frozen=True)
class ValidationOutcome:
    """What validating a batch found and where it wrote it."""

    success: bool
    batch: BatchInput
    statistics: dict[str, float]
    failures: list[ex.Failure]
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


def _parse_date(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return None


def _dated_batches(store: Path) -> dict[dt.date, Path]:
    batches = {}
    for child in store.iterdir():
        day = _parse_date(child.name) if child.is_dir() else None
        if day is not None and len(child.name) == 10:
            batches[day] = child
    return batches


def resolve_batch(path: Path, logical_date: dt.date, catalog: Path | None = None) -> BatchInput:
    """Find the batch files PATH refers to.

    Args:
        path: A batch store, a batch folder or an events Parquet file.
        logical_date: The run's logical date (selects the batch of a store).
        catalog: Catalog file overriding the batch's own.

    Returns:
        The batch's files.

    Raises:
        InputError: PATH does not exist, or is no batch, or the batch has no catalog.
    """
    if not path.exists():
        raise InputError(f"input not found: {path}")
    store = None
    manifest: Path | None = None
    if path.is_dir() and (path / EVENTS_FILE).exists():
        folder_date = _parse_date(path.name)
        name = path.name
        date = folder_date or logical_date
        store = path.parent if folder_date else None
        events, own_catalog, manifest = (
            path / EVENTS_FILE,
            path / CATALOG_FILE,
            path / MANIFEST_FILE,
        )
    elif path.is_dir():
        batches = _dated_batches(path)
        if not batches:
            raise InputError(
                f"{path} is not a batch: it holds no {EVENTS_FILE} and no YYYY-MM-DD batch folders"
            )
        folder = batches.get(logical_date)
        if folder is None:
            dates = sorted(batches)
            raise InputError(
                f"no batch for the logical date {logical_date} in {path} "
                f"(it holds {len(dates)} batches, {dates[0]} to {dates[-1]})"
            )
        if not (folder / EVENTS_FILE).exists():
            raise InputError(f"batch folder {folder} has no {EVENTS_FILE}")
        name, date, store = folder.name, logical_date, path
        events, own_catalog, manifest = (
            folder / EVENTS_FILE,
            folder / CATALOG_FILE,
            folder / MANIFEST_FILE,
        )
    else:
        name, date = path.stem, logical_date
        events, own_catalog = path, path.with_name(CATALOG_FILE)
    chosen = catalog or own_catalog
    if not chosen.exists():
        hint = "" if catalog else f" (no {CATALOG_FILE} beside the events; pass --catalog)"
        raise InputError(f"catalog not found: {chosen}{hint}")
    return BatchInput(
        name=name,
        date=date,
        events=events,
        catalog=chosen,
        manifest=manifest if manifest is not None and manifest.exists() else None,
        store=store,
    )


def find_previous_batch(store: Path, date: dt.date, quarantine: Path | None) -> Path | None:
    """The latest batch of ``store`` dated before ``date`` that was not quarantined.

    Args:
        store: The batch store.
        date: The date of the batch being validated.
        quarantine: The quarantine folder, whose ``<date>`` folders mark rejected batches.

    Returns:
        The previous batch folder, or ``None`` if there is none.
    """
    for day, folder in sorted(_dated_batches(store).items(), reverse=True):
        if day >= date or not (folder / EVENTS_FILE).exists():
            continue
        if quarantine is not None and (quarantine / folder.name).exists():
            continue
        return folder
    return None


def read_table(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file, turning every way it can be unreadable into a clear ``InputError``.

    Args:
        path: The file.
        what: What the file is, for the message ("events file", "catalog").
        columns: Columns to read (all if ``None``).

    Returns:
        The table.

    Raises:
        InputError: The file is missing, a folder, empty, or not valid Parquet.
    """
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes), not a Parquet file")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{what} {path} is not a readable Parquet file: {reason}") from exc


def _type_problems(table: pa.Table, expected: pa.Schema) -> dict[str, str]:
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


def _previous_events(
    batch: BatchInput, quarantine: Path | None
) -> tuple[pd.DataFrame | None, str | None, str | None]:
    if batch.store is None:
        return None, None, None
    folder = find_previous_batch(batch.store, batch.date, quarantine)
    if folder is None:
        return None, None, None
    path = folder / EVENTS_FILE
    try:
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"previous events file {path} is not readable: {exc}") from exc
        keep = [c for c in ("user_id", "item_id") if c in names]
        return read_table(path, "previous events file", keep).to_pandas(), folder.name, None
    except InputError as exc:
        log.warning("previous batch skipped: %s", exc)
        return None, None, f"previous batch {folder.name} unreadable, skipped: {exc}"


def check_batch(
    cfg: ValidateConfig,
    batch: BatchInput,
    window_days: int,
    quarantine: Path | None = None,
    docs_dir: Path | None = None,
) -> tuple[list[ex.SuiteFrame], list[Any], ex.BatchMetrics]:
    """Read a batch and run the three suites over it (nothing is written but Data Docs).

    Args:
        cfg: Validation thresholds.
        batch: The batch's files.
        window_days: Length of the batch window (``ingest.window_days``).
        quarantine: The quarantine folder (rejected batches are never "previous").
        docs_dir: Where to build Data Docs, or ``None``.

    Returns:
        The suites with their frames, their validation results and the batch metrics.
    """
    events = read_table(batch.events, "events file")
    catalog = read_table(batch.catalog, "catalog")
    if "item_id" in catalog.schema.names:
        catalog_ids = catalog.column("item_id")
    else:
        catalog_ids = pa.array([], pa.string())
    events_frame = ex.events_frame(events, catalog_ids)
    previous, previous_name, previous_note = _previous_events(batch, quarantine)
    metrics = ex.compute_batch_metrics(events_frame, cfg, previous, previous_name)
    if previous_note:
        metrics = replace(metrics, notes=(*metrics.notes, previous_note))
    event_problems = _type_problems(events, EVENT_SCHEMA)
    suites = [
        ex.SuiteFrame(
            ex.EVENTS_SUITE,
            ex.event_expectations(cfg, batch.date, window_days),
            events_frame,
            event_problems,
        ),
        ex.SuiteFrame(
            ex.CATALOG_SUITE,
            ex.catalog_expectations(cfg),
            ex.catalog_frame(catalog),
            _type_problems(catalog, CATALOG_SCHEMA),
        ),
    ]
    metric_expectations = ex.batch_metric_expectations(cfg, metrics)
    if metric_expectations:
        suites.append(ex.SuiteFrame(ex.BATCH_METRICS_SUITE, metric_expectations, metrics.frame()))
    run_time = dt.datetime.combine(batch.date, dt.time(), tzinfo=dt.UTC)
    results = ex.run_suites(suites, batch.name, run_time, cfg.example_values, docs_dir)
    return suites, results, metrics


def _statistics(results: list[Any]) -> dict[str, float]:
    evaluated = sum(r.statistics["evaluated_expectations"] for r in results)
    successful = sum(r.statistics["successful_expectations"] for r in results)
    return {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": round(100.0 * successful / evaluated, 4) if evaluated else 100.0,
    }


def _result_json(results: list[Any], success: bool) -> dict[str, Any]:
    """The GX validation results as one JSON document, without per-run random fields."""
    documents = []
    for result in results:
        document = result.to_json_dict()
        meta = document.get("meta", {})
        for key in _VOLATILE_META:
            meta.pop(key, None)
        meta.get("batch_markers", {}).pop("ge_load_time", None)
        documents.append(document)
    return {"success": success, "validation_results": documents}


def _summary(
    batch: BatchInput,
    success: bool,
    statistics: dict[str, float],
    failures: list[ex.Failure],
    metrics: ex.BatchMetrics,
) -> str:
    head = (
        f"batch {batch.name} "
        + ("passed" if success else "rejected")
        + f": {statistics['successful_expectations']} of {statistics['evaluated_expectations']}"
        f" expectations passed ({batch.events})"
    )
    lines = [head]
    if metrics.rows == 0:
        lines.append(f"  events file {batch.events} has no rows")
    lines += [f"  - {failure.line()}" for failure in failures]
    lines += [f"  note: {note}" for note in metrics.notes]
    return "\n".join(lines)


def _metrics_json(
    batch: BatchInput,
    success: bool,
    statistics: dict[str, float],
    suites: list[ex.SuiteFrame],
    results: list[Any],
    failures: list[ex.Failure],
    metrics: ex.BatchMetrics,
) -> dict[str, Any]:
    return {
        "batch": batch.name,
        "date": batch.date.isoformat(),
        "success": success,
        **statistics,
        "suites": {s.name: dict(r.statistics) for s, r in zip(suites, results, strict=True)},
        "rows": metrics.rows,
        "users": metrics.users,
        "items": metrics.items,
        "share_unseen_items": metrics.share_unseen_items,
        "share_unseen_users": metrics.share_unseen_users,
        "share_users_few_events": metrics.share_users_few_events,
        "previous_batch": metrics.previous_batch,
        "failed_expectations": [f.line() for f in failures],
        "notes": list(metrics.notes),
    }


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
        window = ex.batch_window(batch.date, window_days)
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
    statistics = _statistics(results)
    failures = ex.describe_failures(suites, results, cfg.example_values)
    return ValidationOutcome(
        success=success,
        batch=batch,
        statistics=statistics,
        failures=failures,
        metrics=_metrics_json(batch, success, statistics, suites, results, failures, batch_metrics),
        summary=_summary(batch, success, statistics, failures, batch_metrics),
        result=_result_json(results, success),
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
