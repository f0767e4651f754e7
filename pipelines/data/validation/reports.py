"""What the reports say: statistics, ``result.json``, ``summary.txt`` and the stage's metrics.

Everything here is a pure function of the batch and its validation results, so a rerun on the
same batch writes the same bytes.
"""

from __future__ import annotations

from typing import Any

from pipelines.data.validation.batch_metrics import BatchMetrics
from pipelines.data.validation.failures import Failure
from pipelines.data.validation.inputs import BatchInput
from pipelines.data.validation.suites import SuiteFrame

# GX meta fields that change on every run (random ids, load time); dropped from result.json.
_VOLATILE_META = ("validation_id", "checkpoint_id")


def expectation_counts(results: list[Any]) -> dict[str, float]:
    """Evaluated, successful and unsuccessful expectations over all suites, and the percentage."""
    evaluated = sum(r.statistics["evaluated_expectations"] for r in results)
    successful = sum(r.statistics["successful_expectations"] for r in results)
    return {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": round(100.0 * successful / evaluated, 4) if evaluated else 100.0,
    }


def result_document(results: list[Any], success: bool) -> dict[str, Any]:
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


def summary_text(
    batch: BatchInput,
    success: bool,
    statistics: dict[str, float],
    failures: list[Failure],
    metrics: BatchMetrics,
) -> str:
    """The summary: a head line with the verdict, one line per failure, then the notes."""
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


def metrics_document(
    batch: BatchInput,
    success: bool,
    statistics: dict[str, float],
    suites: list[SuiteFrame],
    results: list[Any],
    failures: list[Failure],
    metrics: BatchMetrics,
) -> dict[str, Any]:
    """The stage's metrics: verdict, expectation counts per suite, batch statistics, failures."""
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
