"""Decision rules of the regression gate: bootstrap interval, thresholds, verdict."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.params import QualityGate
from pipelines.gate.rules import (
    Check,
    absolute_check,
    bootstrap_difference,
    comparative_check,
    verdict,
)

GATE = QualityGate(bootstrap_samples=500, max_absolute_drop=0.01, max_relative_drop=0.0)


def _hits(rate: float, users: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(users) < rate).astype(float)


def test_identical_models_pass_with_a_zero_interval() -> None:
    values = _hits(0.5, 2000, 0)
    check, interval = comparative_check("recall@10", values, values, GATE, seed=1)
    assert (interval.low, interval.high) == (0.0, 0.0)
    assert check.status == "pass"


def test_clearly_worse_candidate_fails() -> None:
    production = _hits(0.6, 3000, 0)
    candidate = _hits(0.3, 3000, 1)
    check, interval = comparative_check("recall@10", candidate, production, GATE, seed=1)
    assert interval.high < -0.01
    assert check.status == "fail"
    assert "worse than production" in check.detail


def test_a_small_noisy_difference_is_inconclusive_not_a_verdict() -> None:
    production = _hits(0.5, 300, 0)
    candidate = production.copy()
    # flip a few users: a mean drop near the allowed drop, with an interval wider than the gap
    flipped = np.flatnonzero(candidate == 1)[:4]
    candidate[flipped] = 0
    check, interval = comparative_check("recall@10", candidate, production, GATE, seed=1)
    assert interval.low < -0.01 < interval.high
    assert check.status == "inconclusive"
    assert "cannot tell" in check.detail


def test_relative_drop_scales_with_production() -> None:
    gate = QualityGate(bootstrap_samples=200, max_absolute_drop=0.0, max_relative_drop=0.1)
    production = np.full(100, 0.5)
    check, _ = comparative_check("ndcg@10", production - 0.04, production, gate, seed=0)
    assert check.status == "pass"  # 0.04 < 10 % of 0.5
    check, _ = comparative_check("ndcg@10", production - 0.06, production, gate, seed=0)
    assert check.status == "fail"


def test_bootstrap_is_seeded_and_needs_users() -> None:
    a, b = _hits(0.5, 500, 0), _hits(0.5, 500, 1)
    assert bootstrap_difference(a, b, 200, 0.95, 3) == bootstrap_difference(a, b, 200, 0.95, 3)
    with pytest.raises(ValueError, match="no golden users"):
        bootstrap_difference(np.array([]), np.array([]), 10, 0.95, 0)


def test_absolute_minimum() -> None:
    assert absolute_check("ndcg@10", 0.2, GATE).status == "pass"
    low = absolute_check("ndcg@10", 0.01, GATE)
    assert low.status == "fail" and "< minimum 0.05" in low.detail


@pytest.mark.parametrize(
    ("statuses", "policy", "expected"),
    [
        (["pass", "skipped"], "block", ("pass", False)),
        (["pass", "fail", "inconclusive"], "pass", ("fail", True)),
        (["pass", "inconclusive"], "block", ("inconclusive", True)),
        (["pass", "inconclusive"], "pass", ("inconclusive", False)),
    ],
)
def test_verdict(statuses: list[str], policy: str, expected: tuple[str, bool]) -> None:
    checks = [Check(f"c{i}", status) for i, status in enumerate(statuses)]  # type: ignore[arg-type]
    assert verdict(checks, policy) == expected  # type: ignore[arg-type]
