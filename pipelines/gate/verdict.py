"""The gate's verdict on a candidate: ``verdict.json`` as a typed contract.

The evaluate stage writes a :class:`Verdict` to ``verdict.json`` with ``verdict.schema.json``
beside it. It holds only what the same inputs always give: the outcome, every check with its
outcome, and the quality of both models on the golden set. Measured timings (the latency
check's p50 and p99) go to the stage's metrics file instead, so a rerun writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import ConfigDict, Field

from pipelines.core.contracts import Contract, read_contract, write_contract
from pipelines.core.judgment import Check, Judgment, Outcome

VERDICT = "verdict.json"
VERDICT_VERSION: Final = 1

QualityMetric = Literal["ndcg@10", "recall@10"]
QUALITY_METRICS: tuple[QualityMetric, ...] = ("ndcg@10", "recall@10")


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


class Verdict(Contract, Judgment):
    """``verdict.json``: whether the candidate may replace production, and why.

    A judgment (:mod:`pipelines.core.judgment`) whose checks keep the keys of version 1.
    """

    model_config = ConfigDict(validate_by_name=True)

    schema_version: Literal[1]
    """Version of this layout; a reader refuses another one."""
    outcome: Outcome
    """``fail`` if any check failed, else ``inconclusive`` if any was, else ``pass``."""
    blocked: bool
    """True when the candidate must not be promoted."""
    # "bootstrap" in version 1, which the registry keeps; bootstrap now means the resampling only
    first_model: bool = Field(alias="bootstrap")
    """True when there was no production model (the first-model rule): every check but the
    comparison had to pass."""
    on_inconclusive: Literal["block", "pass"]
    """The policy applied to an inconclusive comparison."""
    golden_users: int
    """How many test users both models were judged on."""
    candidate: CandidateResult
    production: ProductionResult | None
    """Null under the first-model rule."""
    checks: tuple[Check, ...]
    """Every check, in the order they ran (skipped ones too)."""


def write_verdict(folder: Path, verdict: Verdict) -> None:
    """Write ``verdict.json`` and ``verdict.schema.json`` into ``folder``."""
    write_contract(folder / VERDICT, verdict)


def read_verdict(folder: Path) -> Verdict:
    """The verdict in ``folder``.

    Raises:
        InputError: It is missing, unreadable, or does not match :class:`Verdict`.
    """
    return read_contract(folder / VERDICT, Verdict, "gate verdict", stage="evaluate")
