"""The regression gate without models: bootstrap interval, limits, verdict, golden-set
quality and the report, each against values worked out independently of the code under test."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from pipelines.core.contracts import schema_path
from pipelines.core.errors import InputError
from pipelines.core.judgment import Check
from pipelines.core.params import QualityGate
from pipelines.gate.golden import per_user_quality
from pipelines.gate.report import render_html, render_markdown
from pipelines.gate.rules import absolute_check, bootstrap_difference, comparative_check, verdict
from pipelines.gate.verdict import (
    VERDICT_VERSION,
    CandidateResult,
    Verdict,
    read_verdict,
    write_verdict,
)

GATE = QualityGate(bootstrap_samples=500, max_absolute_drop=0.01, max_relative_drop=0.0)


def _hits(rate: float, users: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(users) < rate).astype(float)


def test_identical_models_pass_with_a_zero_interval() -> None:
    values = _hits(0.5, 2000, 0)
    check, interval = comparative_check("recall@10", values, values, GATE, seed=1)
    assert (interval.low, interval.high) == (0.0, 0.0)
    assert check.outcome == "pass"


def test_clearly_worse_candidate_fails() -> None:
    production = _hits(0.6, 3000, 0)
    candidate = _hits(0.3, 3000, 1)
    check, interval = comparative_check("recall@10", candidate, production, GATE, seed=1)
    assert interval.high < -0.01
    assert check.outcome == "fail"
    assert "worse than production" in check.detail


def test_a_small_noisy_difference_is_inconclusive_not_a_verdict() -> None:
    production = _hits(0.5, 300, 0)
    candidate = production.copy()
    # flip a few users: a mean drop near the allowed drop, with an interval wider than the gap
    flipped = np.flatnonzero(candidate == 1)[:4]
    candidate[flipped] = 0
    check, interval = comparative_check("recall@10", candidate, production, GATE, seed=1)
    assert interval.low < -0.01 < interval.high
    assert check.outcome == "inconclusive"
    assert "cannot tell" in check.detail


def test_relative_drop_scales_with_production() -> None:
    gate = QualityGate(bootstrap_samples=200, max_absolute_drop=0.0, max_relative_drop=0.1)
    production = np.full(100, 0.5)
    check, _ = comparative_check("ndcg@10", production - 0.04, production, gate, seed=0)
    assert check.outcome == "pass"  # 0.04 < 10 % of 0.5
    check, _ = comparative_check("ndcg@10", production - 0.06, production, gate, seed=0)
    assert check.outcome == "fail"


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    # the mean of 3000 paired differences is close to normal: its 95 % interval is about
    # mean +- 1.96 standard errors, worked out here without resampling
    candidate, production = _hits(0.55, 3000, 0), _hits(0.5, 3000, 1)
    diff = candidate - production
    half = NormalDist().inv_cdf(0.975) * diff.std(ddof=1) / math.sqrt(diff.size)
    interval = bootstrap_difference(candidate, production, 4000, 0.95, seed=0)
    assert interval.mean == pytest.approx(diff.mean())
    assert interval.low == pytest.approx(diff.mean() - half, abs=0.1 * half)
    assert interval.high == pytest.approx(diff.mean() + half, abs=0.1 * half)


def test_bootstrap_is_paired() -> None:
    # very noisy users, the candidate exactly 0.01 better on each: resampling users with both
    # of their values gives no spread at all; resampling the two sides apart would be wide
    production = np.random.default_rng(0).random(500)
    interval = bootstrap_difference(production + 0.01, production, 500, 0.95, seed=0)
    assert interval.low == pytest.approx(0.01) and interval.high == pytest.approx(0.01)


def test_bootstrap_is_seeded_and_needs_users() -> None:
    a, b = _hits(0.5, 500, 0), _hits(0.5, 500, 1)
    assert bootstrap_difference(a, b, 200, 0.95, 3) == bootstrap_difference(a, b, 200, 0.95, 3)
    assert bootstrap_difference(a, b, 200, 0.95, 3) != bootstrap_difference(a, b, 200, 0.95, 4)
    with pytest.raises(ValueError, match="no golden users"):
        bootstrap_difference(np.array([]), np.array([]), 10, 0.95, 0)
    with pytest.raises(ValueError, match="3 candidate values but 2 production values"):
        bootstrap_difference(np.ones(3), np.ones(2), 10, 0.95, 0)
    # one user is every resample: the interval is its difference
    one = bootstrap_difference(np.array([0.25]), np.array([1.0]), 10, 0.95, 0)
    assert (one.mean, one.low, one.high) == (-0.75, -0.75, -0.75)


def test_absolute_minimum() -> None:
    assert absolute_check("ndcg@10", 0.2, GATE).outcome == "pass"
    low = absolute_check("ndcg@10", 0.01, GATE)
    assert low.outcome == "fail" and "< minimum 0.05" in low.detail


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
    checks = [Check(metric=f"c{i}", outcome=status) for i, status in enumerate(statuses)]  # type: ignore[arg-type]
    assert verdict(checks, policy) == expected  # type: ignore[arg-type]


def test_per_user_quality_by_hand() -> None:
    # 12 items; column 0 is padding. NDCG@10 of a 0-based rank r is 1 / log2(r + 2).
    scores = np.zeros((5, 13), dtype=np.float32)
    scores[0, 7] = 1.0  # target 7 alone on top: rank 0
    scores[1, [2, 9]] = 2.0  # two items above target 5: rank 2
    scores[1, 5] = 1.0
    scores[2, 1] = 2.0  # one item above target 5, and items 3 and 4 tie with it: rank 3
    scores[2, [3, 4, 5]] = 1.0
    scores[3, 1:11] = 2.0  # ten items above target 12: rank 10, outside the top 10
    scores[3, 12] = 1.0
    scores[4, 0] = 100.0  # padding scores highest but never ranks: target 6 at rank 0
    scores[4, 6] = 1.0
    quality = per_user_quality(scores, np.array([7, 5, 5, 12, 6]))
    assert quality["ndcg@10"].tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(5), 0.0, 1.0])
    assert quality["recall@10"].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    # ties go to the smaller item index: the same target behind the tie is ranked first
    tied = np.zeros((1, 13), dtype=np.float32)
    tied[0, [3, 8]] = 1.0
    assert per_user_quality(tied, np.array([3]))["ndcg@10"].tolist() == [1.0]
    assert per_user_quality(tied, np.array([8]))["ndcg@10"].tolist() == pytest.approx(
        [1 / math.log2(3)]
    )


def _verdict(detail: str) -> Verdict:
    return Verdict(
        schema_version=VERDICT_VERSION,
        outcome="fail",
        blocked=True,
        first_model=True,
        on_inconclusive="block",
        golden_users=3,
        candidate=CandidateResult(
            path="models/candidate",
            artifact="onnxruntime-fp32",
            model_sha256=None,
            quality={"ndcg@10": 0.25, "recall@10": 0.5},
        ),
        production=None,
        checks=(
            Check(metric="infra_load", outcome="fail", detail=detail),
            Check(metric="artifact_size_mb", outcome="pass", value=1.5, limit=200.0),
        ),
    )


def test_report_escapes_html_in_check_details() -> None:
    page = render_html(_verdict("file <script>alert('x')</script> & more"))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in page
    assert "<td>1.5</td><td>200.0</td>" in page and "0.2500" in page
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>\n")


def test_markdown_report_keeps_each_check_in_its_row() -> None:
    text = render_markdown(_verdict("a | b\nc <b>"))
    rows = [line for line in text.splitlines() if line.startswith("| infra_load ")]
    assert rows == ["| infra_load | FAIL | — | — | a \\| b c &lt;b&gt; |"]
    assert "Checks that stopped it: infra_load." in text
    assert "| ndcg@10 | 0.2500 | — |" in text


def test_verdict_round_trips_through_its_file_and_schema(tmp_path: Path) -> None:
    original = _verdict("detail")
    write_verdict(tmp_path, original)
    assert read_verdict(tmp_path) == original
    schema = json.loads(schema_path(tmp_path / "verdict.json").read_text())
    assert schema["title"] == "Verdict" and "outcome" in schema["required"]
    assert "The policy applied" in schema["properties"]["on_inconclusive"]["description"]
    raw = json.loads((tmp_path / "verdict.json").read_text())
    raw["golden_users"] = "3"
    (tmp_path / "verdict.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match="golden_users: Input should be a valid integer"):
        read_verdict(tmp_path)
    raw["golden_users"], raw["schema_version"] = 3, 7
    (tmp_path / "verdict.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match="schema version 7, but this code reads version 1"):
        read_verdict(tmp_path)
