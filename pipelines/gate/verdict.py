"""The gate's verdict on a candidate: ``verdict.json`` as a typed contract.

The evaluate stage writes a :class:`Verdict` to ``verdict.json`` with ``verdict.schema.json``
beside it. It holds only what the same inputs always give: the outcome, every check with its
status, and the quality of both models on the golden set. Measured timings (the latency
check's p50 and p99) go to the stage's metrics file instead, so a rerun writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pipelines.core.contracts import Contract, read_contract, write_contract

VERDICT = "verdict.json"
VERDICT_VERSION: Final = 1

CheckStatus = Literal["pass", "fail", "inconclusive", "skipped"]
Outcome = Literal["pass", "fail", "inconclusive"]
QualityMetric = Literal["ndcg@10", "recall@10"]
QUALITY_METRICS: tuple[QualityMetric, ...] = ("ndcg@10", "recall@10")

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


class Check(Contract):
    """One check of the gate and its outcome."""

    name: str
    """What is checked, e.g. ``infra_load``, ``finite_scores``, ``quality_min_ndcg@10``,
    ``quality_vs_production_recall@10``, ``latency_p99_ms``."""
    status: CheckStatus
    """``pass``; ``fail`` (blocks); ``inconclusive`` (the golden set cannot tell; blocks unless
    ``on_inconclusive`` is ``pass``); ``skipped`` (does not apply, e.g. no production model)."""
    value: CheckValue = None
    """What was found, in the check's own terms (a count, a size in MB, a score change, the
    paired difference and its confidence interval); null where the check records none."""
    threshold: CheckValue = None
    """What was allowed, in the same terms as ``value``; null where there is no threshold."""
    detail: str = ""
    """One sentence for a person."""


class CandidateResult(Contract):
    """The candidate as the gate saw it."""

    path: str
    """The candidate's folder (``model.pt`` and ``optimized/``)."""
    artifact: str | None
    """The artifact that was judged (the shipped one); null when none could be loaded."""
    model_sha256: str | None
    """sha256 of the ``model.pt`` the artifact was built from, from its manifest."""
    quality: dict[QualityMetric, float]
    """Mean quality over the golden users; empty when the artifact could not answer."""


class ProductionResult(Contract):
    """The production model the candidate was compared with."""

    path: str
    quality: dict[QualityMetric, float]
    """Mean quality over the same golden users; empty when it could not be loaded."""


class Verdict(Contract):
    """``verdict.json``: whether the candidate may replace production, and why."""

    schema_version: Literal[1]
    """Version of this layout; a reader refuses another one."""
    outcome: Outcome
    """``fail`` if any check failed, else ``inconclusive`` if any was, else ``pass``."""
    blocked: bool
    """True when the candidate must not be promoted."""
    bootstrap: bool
    """True when there was no production model: every check but the comparison had to pass."""
    on_inconclusive: Literal["block", "pass"]
    """The policy applied to an inconclusive comparison."""
    golden_users: int
    """How many test users both models were judged on."""
    candidate: CandidateResult
    production: ProductionResult | None
    """Null under the bootstrap rule."""
    checks: tuple[Check, ...]
    """Every check, in the order they ran."""

    @property
    def stopping(self) -> list[str]:
        """Names of the checks that failed or were inconclusive."""
        return [c.name for c in self.checks if c.status in ("fail", "inconclusive")]


def write_verdict(folder: Path, verdict: Verdict) -> None:
    """Write ``verdict.json`` and ``verdict.schema.json`` into ``folder``."""
    write_contract(folder / VERDICT, verdict)


def read_verdict(folder: Path) -> Verdict:
    """The verdict in ``folder``.

    Raises:
        InputError: It is missing, unreadable, or does not match :class:`Verdict`.
    """
    return read_contract(folder / VERDICT, Verdict, "gate verdict", stage="evaluate")
