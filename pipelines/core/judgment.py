"""Judgments: checks folded into one outcome, where fail beats inconclusive beats pass.

Every judgment in recflow has this one shape, as in Argo Rollouts' analysis: the regression
gate on a candidate (``pipelines.gate``), a rollout step (``pipelines.rollout.analysis``) and
the drift monitor. A :class:`Check` holds one metric's value to a limit (and, where it is
compared with one, to a baseline's value) and says the result in words; the judgment's outcome
is :func:`worst` of its checks' outcomes. Domain words ride on top: a :class:`Vocabulary` names
the three outcomes in a domain's own terms (the monitor's ``drift`` is a failing outcome), the
type underneath stays this one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass as plain_dataclass
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

Outcome = Literal["pass", "fail", "inconclusive"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "inconclusive")

# a check's outcome, or ``skipped``: the check does not apply (no production model to compare
# with) and does not count in the fold
Status = Literal["pass", "fail", "inconclusive", "skipped"]

# what a check measured or allowed: a number, a count, a name, a shape, or a few named numbers
CheckValue = (
    bool
    | int
    | float
    | str
    | list[int]
    | list[float]
    | dict[str, float | list[float] | None]
    | None
)


def worst(outcomes: Iterable[Status]) -> Outcome:
    """The outcome of a judgment over ``outcomes``: fail beats inconclusive beats pass.

    The order does not matter and ``skipped`` never counts. With nothing that counts (no checks,
    or every one skipped) the judgment passes, since nothing was found wrong: a judgment that
    needs evidence holds a check for it (a rollout step's ``requests``).
    """
    found = set(outcomes)
    if "fail" in found:
        return "fail"
    if "inconclusive" in found:
        return "inconclusive"
    return "pass"


# the gate wrote its checks as ``name``, ``status`` and ``threshold`` in verdict.json version 1,
# which the registry keeps: the aliases read and write those keys; a check also reads by its
# field names (a rollout step's layout)
@dataclass(
    frozen=True,
    config=ConfigDict(
        extra="forbid", strict=True, use_attribute_docstrings=True, validate_by_name=True
    ),
)
class Check:
    """One metric's judgment."""

    metric: str = Field(validation_alias="name", serialization_alias="name")
    """What is checked, e.g. ``finite_scores``, ``quality_vs_production_recall@10`` (the gate),
    ``error_rate``, ``hit_rate`` (a rollout step)."""
    outcome: Status = Field(validation_alias="status", serialization_alias="status")
    """``pass``; ``fail``; ``inconclusive`` (the numbers cannot tell yet); ``skipped`` (the check
    does not apply, e.g. no production model to compare with; it does not count)."""
    value: CheckValue = None
    """What was found, in the check's own terms (a rate, a count, a size in MB, a score change
    and its confidence interval); null where the check records none."""
    baseline: CheckValue = Field(default=None, exclude_if=lambda value: value is None)
    """What the value was compared with (stable's rate, the popularity shelf's hit rate); left
    out of the document where there is none."""
    limit: CheckValue = Field(
        default=None, validation_alias="threshold", serialization_alias="threshold"
    )
    """What was allowed, in the same terms as ``value``; null where there is no limit."""
    detail: str = ""
    """The judgment in words, one sentence for a person."""

    def to_json(self) -> dict[str, Any]:
        """The check under its field names, every one present (a rollout step's layout)."""
        return {
            "metric": self.metric,
            "outcome": self.outcome,
            "value": self.value,
            "baseline": self.baseline,
            "limit": self.limit,
            "detail": self.detail,
        }


class _Judged(Protocol):
    @property
    def outcome(self) -> Outcome: ...

    @property
    def checks(self) -> tuple[Check, ...]: ...


class Judgment:
    """What every verdict over checks answers; a verdict with ``outcome`` (the :func:`worst` of
    its checks) and ``checks`` inherits it."""

    @property
    def stopping(self: _Judged) -> list[str]:
        """Metrics of the checks that failed or were inconclusive, in order."""
        return [c.metric for c in self.checks if c.outcome in ("fail", "inconclusive")]

    def reasons(self: _Judged) -> list[str]:
        """Details of the checks that decided the outcome (the failed or unsure ones)."""
        return [c.detail for c in self.checks if c.outcome == self.outcome and c.outcome != "pass"]


@plain_dataclass(frozen=True)
class Vocabulary:
    """A domain's words for the three outcomes; the judgment underneath stays the same.

    The drift monitor's, for example::

        DRIFT = Vocabulary(passed="no_drift", failed="drift", inconclusive="insufficient_data")
        DRIFT.word(worst(c.outcome for c in checks))  # "drift" when a check failed
        DRIFT.outcome("insufficient_data")  # "inconclusive"

    Raises:
        ValueError: Two outcomes were given the same word.
    """

    passed: str
    failed: str
    inconclusive: str

    def __post_init__(self) -> None:
        if len(set(self.words)) != len(OUTCOMES):
            raise ValueError(f"one word for two outcomes: {self.words}")

    @property
    def words(self) -> tuple[str, ...]:
        """The words in the order of :data:`OUTCOMES` (pass, fail, inconclusive)."""
        return (self.passed, self.failed, self.inconclusive)

    def word(self, outcome: Outcome) -> str:
        """The word for ``outcome``."""
        return dict(zip(OUTCOMES, self.words, strict=True))[outcome]

    def outcome(self, word: str) -> Outcome:
        """The outcome that ``word`` names.

        Raises:
            ValueError: It is none of this vocabulary's words.
        """
        for outcome, known in zip(OUTCOMES, self.words, strict=True):
            if word == known:
                return outcome
        raise ValueError(f"{word!r} is none of {', '.join(self.words)}")
