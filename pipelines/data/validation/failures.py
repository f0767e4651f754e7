"""The failed expectations of a validation, each in one line of the summary.

Each failure names its suite, expectation and column, with the count of unexpected values and
a few examples; an expectation GX could not evaluate says why (a missing column, a wrong type).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.data.validation.frames import DERIVED_FROM
from pipelines.data.validation.suites import SuiteFrame, expectation_id

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult


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
        order = {expectation_id(item.name, i): i for i in range(len(item.expectations))}
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
