"""The decision rules of the regression gate, free of models and files.

Quality is compared per golden user (paired): the bootstrap resamples users and gives a
confidence interval of ``candidate - production`` for each metric. With an allowed drop
``m = max(max_absolute_drop, max_relative_drop * production)``:

- the whole interval above ``-m``: **pass** (the candidate is not worse than allowed);
- the whole interval below ``-m``: **fail** (it is worse, beyond the noise);
- otherwise **inconclusive**: the golden set cannot tell; ``on_inconclusive`` decides whether
  that blocks (the default) or lets the candidate through.

Bootstrap rule: with no production model (the first run), there is nothing to compare with;
the candidate passes if every non-comparative check passes and each metric meets its
absolute minimum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pipelines.core.params import QualityGate

Status = Literal["pass", "fail", "inconclusive", "skipped"]


@dataclass(frozen=True)
class Check:
    """One check of the gate and its outcome."""

    name: str
    status: Status
    value: Any = None
    threshold: Any = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return asdict(self)


@dataclass(frozen=True)
class Interval:
    """Mean difference of paired per-user values and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float


def bootstrap_difference(
    candidate: np.ndarray, production: np.ndarray, samples: int, confidence: float, seed: int
) -> Interval:
    """Paired bootstrap CI of ``mean(candidate - production)`` over users (seeded)."""
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(production, dtype=np.float64)
    if diff.size == 0:
        raise ValueError("no golden users to compare on")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    # in chunks: samples x users indices would be large for big golden sets
    chunk = max(1, 2_000_000 // diff.size)
    for start in range(0, samples, chunk):
        count = min(chunk, samples - start)
        rows = rng.integers(0, diff.size, size=(count, diff.size))
        means[start : start + count] = diff[rows].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(mean=float(diff.mean()), low=float(low), high=float(high))


def absolute_check(metric: str, value: float, gate: QualityGate) -> Check:
    """The candidate's metric against its absolute minimum."""
    minimum = gate.min_absolute.get(metric)  # type: ignore[call-overload]
    if minimum is None:
        return Check(f"quality_min_{metric}", "pass", round(value, 6), None, "no minimum set")
    status: Status = "pass" if value >= minimum else "fail"
    detail = f"{metric} {value:.4f} {'>=' if status == 'pass' else '<'} minimum {minimum:g}"
    return Check(f"quality_min_{metric}", status, round(value, 6), minimum, detail)


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
        status: Status = "pass"
        detail = (
            f"{metric} difference {interval.mean:+.4f}, {gate.confidence:.0%} CI {ci} "
            f"above -{allowed:.4f}"
        )
    elif interval.high < -allowed:
        status = "fail"
        detail = f"{metric} worse than production: CI {ci} below the allowed drop -{allowed:.4f}"
    else:
        status = "inconclusive"
        detail = (
            f"{metric} difference {interval.mean:+.4f}, CI {ci} straddles the allowed drop "
            f"-{allowed:.4f}: the golden set cannot tell"
        )
    check = Check(
        f"quality_vs_production_{metric}",
        status,
        {
            "difference": round(interval.mean, 6),
            "ci": [round(interval.low, 6), round(interval.high, 6)],
        },
        {"allowed_drop": round(allowed, 6)},
        detail,
    )
    return check, interval


def verdict(checks: list[Check], on_inconclusive: Literal["block", "pass"]) -> tuple[str, bool]:
    """The overall verdict and whether it blocks the candidate."""
    statuses = {check.status for check in checks}
    if "fail" in statuses:
        return "fail", True
    if "inconclusive" in statuses:
        return "inconclusive", on_inconclusive == "block"
    return "pass", False
