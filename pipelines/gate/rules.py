"""The decision rules of the regression gate, free of models and files.

Quality is compared per golden user (paired): the bootstrap resamples users and gives a
confidence interval of ``candidate - production`` for each metric. With an allowed drop
``m = max(max_absolute_drop, max_relative_drop * production)``:

- the whole interval above ``-m``: **pass** (the candidate is not worse than allowed);
- the whole interval below ``-m``: **fail** (it is worse, beyond the noise);
- otherwise **inconclusive**: the golden set cannot tell; ``on_inconclusive`` decides whether
  that blocks (the default) or lets the candidate through.

First-model rule: with no production model (the first run), there is nothing to compare with;
the candidate passes if every non-comparative check passes and each metric meets its
absolute minimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from pipelines.core.judgment import Check, Outcome, Status, worst
from pipelines.core.params import QualityGate

# resampled values held at once: samples x users floats
_BATCH_VALUES = 2_000_000


@dataclass(frozen=True)
class Interval:
    """Mean difference of paired per-user values and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float


def bootstrap_difference(
    candidate: np.ndarray, production: np.ndarray, samples: int, confidence: float, seed: int
) -> Interval:
    """Paired bootstrap CI of ``mean(candidate - production)`` over users (seeded).

    ``scipy.stats.bootstrap`` with ``paired=True`` resamples the users, each with both of its
    values, and gives the percentile interval of the mean difference. One user is its own
    every resample: the interval is that user's difference (scipy refuses a single value).

    Raises:
        ValueError: There are no users, or the two arrays differ in length.
    """
    cand = np.asarray(candidate, dtype=np.float64)
    prod = np.asarray(production, dtype=np.float64)
    if cand.shape != prod.shape:
        raise ValueError(f"{cand.size} candidate values but {prod.size} production values")
    if cand.size == 0:
        raise ValueError("no golden users to compare on")
    mean = float(np.mean(cand - prod))
    if cand.size == 1:
        return Interval(mean=mean, low=mean, high=mean)

    def mean_difference(c: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(c - p, axis=axis)

    result = stats.bootstrap(
        (cand, prod),
        mean_difference,
        n_resamples=samples,
        batch=max(1, _BATCH_VALUES // cand.size),
        vectorized=True,
        paired=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Interval(mean=mean, low=float(interval.low), high=float(interval.high))


def absolute_check(metric: str, value: float, gate: QualityGate) -> Check:
    """The candidate's metric against its absolute minimum."""
    name = f"quality_min_{metric}"
    minimum = gate.min_absolute.get(metric)  # type: ignore[call-overload]
    if minimum is None:
        return Check(metric=name, outcome="pass", value=round(value, 6), detail="no minimum set")
    outcome: Status = "pass" if value >= minimum else "fail"
    detail = f"{metric} {value:.4f} {'>=' if outcome == 'pass' else '<'} minimum {minimum:g}"
    return Check(metric=name, outcome=outcome, value=round(value, 6), limit=minimum, detail=detail)


def comparative_check(
    metric: str, candidate: np.ndarray, production: np.ndarray, gate: QualityGate, seed: int
) -> tuple[Check, Interval]:
    """Candidate against production on one metric, with the bootstrap interval."""
    interval = bootstrap_difference(
        candidate, production, gate.bootstrap_samples, gate.confidence, seed
    )
    base = float(np.mean(production))
    allowed = max(gate.max_absolute_drop, gate.max_relative_drop * base)
    ci = f"[{interval.low:+.4f}, {interval.high:+.4f}]"
    if interval.low >= -allowed:
        outcome: Status = "pass"
        detail = (
            f"{metric} difference {interval.mean:+.4f}, {gate.confidence:.0%} CI {ci} "
            f"above -{allowed:.4f}"
        )
    elif interval.high < -allowed:
        outcome = "fail"
        detail = f"{metric} worse than production: CI {ci} below the allowed drop -{allowed:.4f}"
    else:
        outcome = "inconclusive"
        detail = (
            f"{metric} difference {interval.mean:+.4f}, CI {ci} straddles the allowed drop "
            f"-{allowed:.4f}: the golden set cannot tell"
        )
    check = Check(
        metric=f"quality_vs_production_{metric}",
        outcome=outcome,
        value={
            "difference": round(interval.mean, 6),
            "ci": [round(interval.low, 6), round(interval.high, 6)],
        },
        limit={"allowed_drop": round(allowed, 6)},
        detail=detail,
    )
    return check, interval


def verdict(
    checks: Sequence[Check], on_inconclusive: Literal["block", "pass"]
) -> tuple[Outcome, bool]:
    """The overall outcome (the worst of the checks') and whether it blocks the candidate."""
    outcome = worst(check.outcome for check in checks)
    if outcome == "inconclusive":
        return outcome, on_inconclusive == "block"
    return outcome, outcome == "fail"
