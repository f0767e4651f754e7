"""One validation result of a suite from its results on each partition of the batch.

Each expectation is judged again by Great Expectations' own ``_validate`` over combined
metrics, so the combined result says what GX would say over the whole batch:

* a column-map expectation (types of object columns, nulls, ranges, value sets, lengths,
  regexes, catalog membership): its row, null and unexpected counts add up over the partitions
  and its unexpected values and row numbers are the first ones in file order;
* a whole-batch expectation (the row count, uniqueness) has its metrics computed over the
  whole file (``batch_wide``) and handed in as ``batch_metrics``; its partition results are
  not used;
* any other expectation (the column set, a column's dtype) sees the same schema in every
  partition: the first failing partition's result stands, else the first partition's;
* an expectation GX could not evaluate (a missing column) keeps its first partition's result.
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING, Any

# GX reads this when it is imported; set it before the import so no usage statistics are sent.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.expectation_configuration import parse_result_format
from great_expectations.validator.validation_statistics import calc_validation_statistics

from pipelines.data.validation.batch_wide import Duplicates

if TYPE_CHECKING:
    from great_expectations.core import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )

ROW_COUNT = "table.row_count"
NULL_COUNT = "column_values.nonnull.unexpected_count"
UNIQUE = "column_values.unique"


def unique_metrics(found: Duplicates) -> dict[str, Any]:
    """The metrics GX judges uniqueness by, from the duplicates found in the whole batch."""
    return {
        ROW_COUNT: found.rows,
        NULL_COUNT: found.nulls,
        f"{UNIQUE}.unexpected_count": found.duplicated,
        f"{UNIQUE}.unexpected_values": found.examples,
        f"{UNIQUE}.unexpected_index_list": found.positions,
    }


def _raised(result: ExpectationValidationResult) -> bool:
    info = result.exception_info or {}
    return bool(info.get("raised_exception")) or any(
        isinstance(v, dict) and v.get("raised_exception") for v in info.values()
    )


def _map_metrics(
    map_metric: str, parts: list[ExpectationValidationResult], limit: int
) -> dict[str, Any]:
    payloads = [dict(part.result or {}) for part in parts]
    values: list[Any] = []
    for payload in payloads:
        values += payload.get("partial_unexpected_list") or []
    metrics: dict[str, Any] = {
        ROW_COUNT: sum(p.get("element_count") or 0 for p in payloads),
        NULL_COUNT: sum(p.get("missing_count") or 0 for p in payloads),
        f"{map_metric}.unexpected_count": sum(p.get("unexpected_count") or 0 for p in payloads),
        f"{map_metric}.unexpected_values": values[:limit],
    }
    if any("partial_unexpected_index_list" in p for p in payloads):
        positions: list[Any] = []
        for payload in payloads:
            positions += payload.get("partial_unexpected_index_list") or []
        metrics[f"{map_metric}.unexpected_index_list"] = positions[:limit]
    return metrics


def _judge(
    model: ExpectationValidationResult, metrics: dict[str, Any], result_format: dict[str, Any]
) -> ExpectationValidationResult:
    """``model`` judged again by its expectation over ``metrics``."""
    assert model.expectation_config is not None
    expectation = model.expectation_config.to_domain_obj()
    # the dtype-level branch of the type check needs the column types; the map branch does not
    if isinstance(expectation, gxe.ExpectColumnValuesToBeOfType):
        outcome = ColumnMapExpectation._validate(
            expectation, metrics=metrics, runtime_configuration=result_format
        )
    else:
        outcome = expectation._validate(metrics=metrics, runtime_configuration=result_format)
    judged = copy.deepcopy(model)
    judged.success = bool(outcome["success"])
    judged.result = outcome.get("result", {})
    return judged


def combine_results(
    partials: list[ExpectationSuiteValidationResult],
    batch_metrics: dict[str, dict[str, Any]],
    result_format: dict[str, Any],
) -> ExpectationSuiteValidationResult:
    """The result of a suite over the whole batch, from its results over each partition.

    Args:
        partials: The suite's results over each partition, in file order (at least one); the
            first holds every expectation of the suite, the others may lack those in
            ``batch_metrics``.
        batch_metrics: Expectation id -> GX metrics computed over the whole batch, for the
            expectations that a partition cannot judge.
        result_format: The result format the partitions were validated with.

    Returns:
        One validation result, with the first partition's meta and order of results.
    """
    parsed = {"result_format": parse_result_format(result_format)}
    limit = parsed["result_format"]["partial_unexpected_count"]
    by_id = [
        {r.expectation_config.id: r for r in partial.results if r.expectation_config}
        for partial in partials
    ]
    results = []
    for first in partials[0].results:
        assert first.expectation_config is not None
        key = first.expectation_config.id
        # partitions after the first were validated without the whole-batch expectations
        parts = [results_of[key] for results_of in by_id if key in results_of]
        raised = next((part for part in parts if _raised(part)), None)
        if raised is not None:
            results.append(copy.deepcopy(raised))
        elif key in batch_metrics:
            results.append(_judge(first, batch_metrics[key], parsed))
        elif all("unexpected_count" in (part.result or {}) for part in parts):
            expectation = first.expectation_config.to_domain_obj()
            metric = getattr(expectation, "map_metric", None)
            results.append(_judge(first, _map_metrics(str(metric), parts, limit), parsed))
        else:
            failing = next((part for part in parts if not part.success), first)
            results.append(copy.deepcopy(failing))
    combined = copy.deepcopy(partials[0])
    statistics = calc_validation_statistics(results)
    combined.results = results
    combined.success = statistics.success
    combined.statistics = {
        "evaluated_expectations": statistics.evaluated_expectations,
        "successful_expectations": statistics.successful_expectations,
        "unsuccessful_expectations": statistics.unsuccessful_expectations,
        "success_percent": statistics.success_percent,
    }
    return combined
