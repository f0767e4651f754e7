"""The analysis as small pure functions: each check's pass, fail and inconclusive, and a step's
verdict from its checks."""

from __future__ import annotations

from collections import Counter

import pytest

from pipelines.core.params import AnalysisConfig, HitRateLimit, LatencyLimit, RateCeiling
from pipelines.rollout import analysis
from pipelines.rollout.analysis import ArmWindow, ShadowWindow
from pipelines.rollout.metrics import Snapshot
from pipelines.rollout.replay import ArmTally, PairTally, ReplayReport

CFG = AnalysisConfig(min_requests=50, confidence=0.95)
ERRORS = RateCeiling(max=0.01, max_increase=0.005, max_relative_increase=0.5)


def _rate(bad: int, n: int, base_bad: int | None = 0, base_n: int | None = 1000) -> str:
    check = analysis.rate_check("error_rate", "error rate", bad, n, base_bad, base_n, ERRORS, CFG)
    return check.outcome


def test_a_rate_within_its_limit_passes_once_there_are_enough_answers() -> None:
    assert _rate(0, 200) == "pass"
    assert _rate(0, 20) == "inconclusive"  # too few answers to say


def test_a_rate_clearly_beyond_its_limit_fails_even_on_few_answers() -> None:
    assert _rate(10, 10) == "fail"
    assert _rate(15, 300) == "fail"  # 5 % against 0.5 %


def test_a_rate_just_beyond_its_limit_is_within_the_noise() -> None:
    assert _rate(2, 100) == "inconclusive"  # 2 %: beyond 0.5 %, but not confidently


def test_the_limit_follows_stable_relatively_and_never_passes_the_ceiling() -> None:
    # stable 0.8 %: allowed max(0.5 %, 0.4 %) more, but never above the 1 % ceiling
    check = analysis.rate_check("error_rate", "error rate", 0, 100, 8, 1000, ERRORS, CFG)
    assert check.limit == pytest.approx(0.01)
    relaxed = RateCeiling(max=1.0, max_increase=0.0, max_relative_increase=0.5)
    check = analysis.rate_check("fallback_rate", "fallbacks", 0, 100, 100, 1000, relaxed, CFG)
    assert check.limit == pytest.approx(0.15)
    alone = analysis.rate_check("error_rate", "error rate", 0, 100, None, None, ERRORS, CFG)
    assert alone.limit == 0.01 and alone.baseline is None
    assert analysis.rate_check("e", "e", 0, 0, 0, 10, ERRORS, CFG).outcome == "inconclusive"


def test_latency() -> None:
    limits = LatencyLimit(max=100.0, max_increase=10.0, max_relative_increase=2.0)
    ok = analysis.latency_check("latency_p99_ms", 12.0, 200, 5.0, limits, CFG)
    assert (ok.outcome, ok.limit) == ("pass", 15.0)  # max(10, 2 x 5) above stable
    slow = analysis.latency_check("latency_p99_ms", 60.0, 200, 5.0, limits, CFG)
    assert slow.outcome == "fail" and "60.0 ms against limit 15.0 ms" in slow.detail
    assert analysis.latency_check("l", 500.0, 10, 5.0, limits, CFG).outcome == "inconclusive"
    capped = analysis.latency_check("l", 101.0, 200, 80.0, limits, CFG)
    assert capped.limit == 100.0 and capped.outcome == "fail"
    assert analysis.latency_check("l", None, 0, None, limits, CFG).outcome == "inconclusive"


def test_the_hit_rate_is_compared_on_the_same_sessions() -> None:
    limits = HitRateLimit(max_drop=0.05, max_relative_drop=0.25)
    # the same answers on the same sessions: no difference at all
    same = analysis.hit_rate_check(150, 150, 150, 300, limits, CFG)
    assert same.outcome == "pass" and same.limit == pytest.approx(0.375)
    assert same.detail.startswith("hit rate 0.500 against stable 0.500 on the same 300 sessions")
    # stable hits 100 sessions the candidate misses, the candidate 10 that stable misses
    worse = analysis.hit_rate_check(60, 150, 50, 300, limits, CFG)
    assert worse.outcome == "fail" and worse.detail.endswith(": below")
    # a drop beyond the limit on a handful of sessions is not yet sure
    unsure = analysis.hit_rate_check(2, 6, 2, 10, limits, CFG)
    assert unsure.outcome == "inconclusive"
    few = analysis.hit_rate_check(10, 10, 10, 20, limits, CFG)
    assert few.outcome == "inconclusive" and "too few sessions" in few.detail
    popular = analysis.hit_rate_check(
        150, 100, 90, 300, limits, CFG, baseline_name="popularity fallback"
    )
    assert popular.outcome == "pass" and "against popularity fallback 0.333" in popular.detail
    assert analysis.hit_rate_check(0, 0, 0, 0, limits, CFG).outcome == "inconclusive"


def test_shadow_overlap_and_volume() -> None:
    shadow = ShadowWindow(scored=100, failed=0, skipped=0, overlap_sum=15.0,
                          latency_p99_ms=2.0, latency_count=100)  # fmt: skip
    low = analysis.overlap_check(shadow, CFG)
    assert low.outcome == "fail" and low.value == pytest.approx(0.15)
    few = ShadowWindow(10, 0, 0, 10.0, 1.0, 10)
    assert analysis.overlap_check(few, CFG).outcome == "inconclusive"
    assert analysis.volume_check({"stable": 80, "canary": 49}, CFG).outcome == "inconclusive"
    assert analysis.volume_check({"stable": 80, "canary": 50}, CFG).outcome == "pass"


def _arm(requests: int, errors: int = 0, p99: float = 3.0, hits: int | None = None) -> ArmWindow:
    hits = requests // 2 if hits is None else hits
    popular = requests // 4
    return ArmWindow(
        requests=requests,
        errors=errors,
        fallbacks=errors,
        latency_p99_ms=p99,
        latency_count=requests,
        replayed=requests,
        hits=hits,
        popularity_hits=popular,
        both_popular=min(hits, popular),
        # paired with stable on every session, stable hitting half of them
        paired=requests,
        paired_hits=hits,
        stable_hits=requests // 2,
        both_paired=min(hits, requests // 2),
    )


def _report(sent: int, errors: int = 0) -> ReplayReport:
    return ReplayReport(sent=sent, errors=Counter({"http 503": errors} if errors else {}))


def test_a_step_fails_if_one_check_fails_and_is_unsure_if_one_is_unsure() -> None:
    good = analysis.judge_canary("canary 5%", _arm(1000), _arm(100), _report(1100), CFG)
    assert good.outcome == "pass" and good.reasons() == []
    failing = analysis.judge_canary(
        "canary 5%", _arm(1000), _arm(100, errors=20), _report(1100), CFG
    )
    assert failing.outcome == "fail"
    assert {c.metric for c in failing.checks if c.outcome == "fail"} == {
        "error_rate",
        "fallback_rate",
    }
    assert all("beyond" in reason for reason in failing.reasons())
    unsure = analysis.judge_canary("canary 5%", _arm(1000), _arm(20), _report(1020), CFG)
    assert unsure.outcome == "inconclusive"
    assert "requests" in {c.metric for c in unsure.checks if c.outcome == "inconclusive"}
    down = analysis.judge_canary("canary 5%", _arm(1000), _arm(100), _report(1100, 40), CFG)
    assert down.outcome == "fail" and "http 503 40" in down.reasons()[0]


def test_a_shadow_is_judged_on_its_copies() -> None:
    stable = _arm(300)
    slow = ShadowWindow(300, 0, 0, 270.0, 40.0, 300)
    verdict = analysis.judge_shadow("shadow", stable, slow, _report(300), CFG)
    assert verdict.outcome == "fail"
    assert [c.metric for c in verdict.checks if c.outcome == "fail"] == ["latency_p99_ms"]
    dropping = ShadowWindow(200, 0, 100, 180.0, 3.0, 200)
    verdict = analysis.judge_shadow("shadow", stable, dropping, _report(300), CFG)
    assert [c.metric for c in verdict.checks if c.outcome == "fail"] == ["fallback_rate"]


def test_a_bake_holds_the_candidate_to_the_ceilings_and_the_popularity_fallback() -> None:
    good = analysis.judge_bake("bake", _arm(300), _report(300), CFG)
    assert good.outcome == "pass"
    no_better = analysis.judge_bake("bake", _arm(300, hits=30), _report(300), CFG)
    assert no_better.outcome == "fail"
    assert [c.metric for c in no_better.checks if c.outcome == "fail"] == ["hit_rate"]


def test_the_windows_of_an_arm_and_a_shadow_come_from_the_snapshot_and_the_replay() -> None:
    window = Snapshot()
    labels = {"version": "v2", "arm": "canary"}
    window.add("recflow_requests_total", {**labels, "code": "200"}, 40)
    window.add("recflow_errors_total", {**labels, "kind": "error"}, 3)
    window.add("recflow_errors_total", {**labels, "kind": "deadline"}, 1)
    window.add("recflow_fallbacks_total", {**labels, "reason": "error"}, 4)
    for le, count in (("0.001", 10), ("0.01", 39), ("+Inf", 40)):
        window.add("recflow_request_latency_seconds_bucket", {**labels, "le": le}, count)
    window.add("recflow_shadow_requests_total", {"version": "v3", "outcome": "scored"}, 8)
    window.add("recflow_shadow_requests_total", {"version": "v3", "outcome": "skipped"}, 2)
    window.add("recflow_shadow_overlap_sum", {"version": "v3"}, 6.0)
    report = ReplayReport(sent=40)
    report.arms[("v2", "canary")] = ArmTally(answered=39, hits=20, invalid=1)
    report.pairs[("v2", "canary")] = PairTally(sessions=39, hits=20, stable_hits=18, both=15)
    arm = analysis.arm_window(window, report, "v2", "canary")
    assert (arm.requests, arm.errors, arm.fallbacks, arm.hits, arm.replayed) == (40, 4, 4, 20, 39)
    assert (arm.paired, arm.paired_hits, arm.stable_hits, arm.both_paired) == (39, 20, 18, 15)
    assert arm.latency_count == 40 and 1.0 < (arm.latency_p99_ms or 0) <= 10.0
    shadow = analysis.shadow_window(window, "v3")
    assert (shadow.scored, shadow.skipped, shadow.copies, shadow.overlap_sum) == (8, 2, 10, 6.0)
