"""Analysis of a rollout step: small pure functions from a window's numbers to pass, fail or
inconclusive, in the manner of Argo Rollouts' and Flagger's analysis.

A step compares the candidate with stable over the same window: error rate, fallback rate and
p99 latency may be worse than stable's by the larger of an absolute and a relative increase,
never beyond an absolute ceiling; the hit rate of the replayed sessions' true next items may
drop by the larger of an absolute and a relative drop; a shadow's answers must overlap stable's.

Each check is decided like this:

- below ``min_requests`` answers a check is inconclusive, unless it is already beyond its limit
  with the configured confidence (ten failures in ten requests need no fortieth);
- within its limit (with enough answers), it passes;
- beyond its limit with the configured confidence (one-sided, from the two proportions'
  standard error), it fails; beyond it but within the noise of the window, it is inconclusive.

The hit rate is compared on the same sessions (pairs: the replay asks stable for each session
the canary answers; a bake's baseline is the popularity shelf on the same sessions), so the
difference between the users each arm happens to get does not count as the model's.

A step fails if any check fails, is inconclusive if any is, and passes otherwise. The same code
judges windows read from Prometheus and from the servers' ``/metrics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from pipelines.core.judgment import Check, Judgment, Outcome, worst
from pipelines.core.params import AnalysisConfig, HitRateLimit, LatencyLimit, RateCeiling
from pipelines.rollout.metrics import Snapshot, histogram_count, quantile
from pipelines.rollout.replay import ReplayReport


@dataclass(frozen=True)
class Verdict(Judgment):
    """A step's judgment: its checks and the numbers of its window.

    Attributes:
        step: The step judged (``infra``, ``shadow``, ``canary 25%``, ...).
        outcome: The worst of the checks' outcomes.
        checks: What was checked; a check's ``metric`` is ``error_rate``, ``fallback_rate``,
            ``latency_p99_ms``, ``hit_rate``, ``shadow_overlap``, ``fleet_error_rate`` or
            ``requests``.
        window: The window's numbers, per arm and for the replay.
    """

    step: str
    outcome: Outcome
    checks: tuple[Check, ...]
    window: dict[str, Any]

    @classmethod
    def of(cls, step: str, checks: list[Check], window: dict[str, Any]) -> Verdict:
        """The verdict of ``checks``: fail if one fails, inconclusive if one is, else pass."""
        return cls(step, worst(c.outcome for c in checks), tuple(checks), window)

    def to_json(self) -> dict[str, Any]:
        """The step as the rollout record holds it."""
        return {
            "step": self.step,
            "outcome": self.outcome,
            "checks": [c.to_json() for c in self.checks],
            "window": self.window,
        }


@dataclass(frozen=True)
class ArmWindow:
    """What one arm served in a window.

    Attributes:
        requests: Answers it gave (the servers' count).
        errors: Model calls that failed, and answers the replay found malformed.
        fallbacks: Answers from the popularity fallback.
        latency_p99_ms: p99 latency (request latency for a canary, model latency against a
            shadow), None without observations.
        latency_count: Observations behind it.
        replayed: Its answers the replay tallied.
        hits: Of those, answers holding the session's true next item.
        popularity_hits: Of those sessions, the ones the popularity shelf would have hit.
        both_popular: Sessions both it and the popularity shelf hit.
        paired: Its sessions that stable answered too (a canary's).
        paired_hits, stable_hits, both_paired: Of those, its hits, stable's, and both's.
    """

    requests: int
    errors: int
    fallbacks: int
    latency_p99_ms: float | None
    latency_count: int
    replayed: int
    hits: int
    popularity_hits: int
    both_popular: int = 0
    paired: int = 0
    paired_hits: int = 0
    stable_hits: int = 0
    both_paired: int = 0


@dataclass(frozen=True)
class ShadowWindow:
    """What a shadow scored in a window (copies of stable's requests)."""

    scored: int
    failed: int
    skipped: int
    overlap_sum: float
    latency_p99_ms: float | None
    latency_count: int

    @property
    def copies(self) -> int:
        return self.scored + self.failed + self.skipped


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def arm_window(
    window: Snapshot, report: ReplayReport, version: str, arm: str, *, model_latency: bool = False
) -> ArmWindow:
    """The window of ``version`` in ``arm`` from the servers' metrics and the replay's tally."""
    tally = report.tally(version, arm)
    pairs = report.paired(version, arm)
    name = (
        "recflow_model_latency_seconds_bucket"
        if model_latency
        else ("recflow_request_latency_seconds_bucket")
    )
    buckets = window.buckets(name, version=version, arm=arm)
    return ArmWindow(
        requests=int(window.total("recflow_requests_total", version=version, arm=arm, code="200")),
        errors=int(window.total("recflow_errors_total", version=version, arm=arm, kind="error"))
        + tally.invalid,
        fallbacks=int(window.total("recflow_fallbacks_total", version=version, arm=arm)),
        latency_p99_ms=_ms(quantile(buckets, 0.99)),
        latency_count=histogram_count(buckets),
        replayed=tally.answered,
        hits=tally.hits,
        popularity_hits=tally.popularity_hits,
        both_popular=tally.both,
        paired=pairs.sessions,
        paired_hits=pairs.hits,
        stable_hits=pairs.stable_hits,
        both_paired=pairs.both,
    )


def shadow_window(window: Snapshot, version: str) -> ShadowWindow:
    """What the shadow ``version`` scored in the window."""
    buckets = window.buckets("recflow_shadow_latency_seconds_bucket", version=version)

    def outcome(name: str) -> int:
        return int(window.total("recflow_shadow_requests_total", version=version, outcome=name))

    return ShadowWindow(
        scored=outcome("scored"),
        failed=outcome("failed"),
        skipped=outcome("skipped"),
        overlap_sum=window.total("recflow_shadow_overlap_sum", version=version),
        latency_p99_ms=_ms(quantile(buckets, 0.99)),
        latency_count=histogram_count(buckets),
    )


def _z(cfg: AnalysisConfig) -> float:
    return NormalDist().inv_cdf(cfg.confidence)


def _adjusted(bad: int, n: int) -> tuple[float, int]:
    """Agresti-Coull: a proportion's estimate that stays honest at 0 or n successes."""
    return (bad + 2) / (n + 4), n + 4


def _se(bad: int, n: int, base_bad: int | None = None, base_n: int | None = None) -> float:
    p, m = _adjusted(bad, n)
    variance = p * (1 - p) / m
    if base_bad is not None and base_n:
        q, mb = _adjusted(base_bad, base_n)
        variance += q * (1 - q) / mb
    return math.sqrt(variance)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def rate_check(
    metric: str,
    words: str,
    bad: int,
    n: int,
    base_bad: int | None,
    base_n: int | None,
    limits: RateCeiling,
    cfg: AnalysisConfig,
) -> Check:
    """A rate that may be worse than the baseline's by a bounded increase (error, fallback).

    Args:
        metric: The check's name.
        words: What the rate is, for the detail ("error rate").
        bad, n: The candidate's bad answers and answers.
        base_bad, base_n: The baseline's; None: no baseline (only ``limits.max`` applies).
        limits: The limits.
        cfg: Minimum requests and confidence.
    """
    baseline = base_bad / base_n if base_bad is not None and base_n else None
    limit = limits.max
    if baseline is not None:
        allowed = max(limits.max_increase, limits.max_relative_increase * baseline)
        limit = min(limits.max, baseline + allowed)
    if n == 0:
        return Check(metric, "inconclusive", None, baseline, limit, f"{words}: no answers yet")
    value = bad / n
    against = "" if baseline is None else f", stable {_pct(baseline)} of {base_n}"
    text = f"{words} {_pct(value)} ({bad}/{n}) against limit {_pct(limit)}{against}"
    beyond = value - _z(cfg) * _se(bad, n, base_bad, base_n) > limit
    if beyond:
        return Check(metric, "fail", value, baseline, limit, f"{text}: beyond")
    if value <= limit and n >= cfg.min_requests:
        return Check(metric, "pass", value, baseline, limit, text)
    why = "too few answers" if n < cfg.min_requests else "beyond, within the window's noise"
    return Check(metric, "inconclusive", value, baseline, limit, f"{text}: {why}")


def latency_check(
    metric: str,
    value: float | None,
    n: int,
    baseline: float | None,
    limits: LatencyLimit,
    cfg: AnalysisConfig,
) -> Check:
    """A p99 latency (ms) that may exceed the baseline's by a bounded increase."""
    limit = limits.max
    if baseline is not None:
        limit = min(
            limits.max, baseline + max(limits.max_increase, limits.max_relative_increase * baseline)
        )
    if value is None or n < cfg.min_requests:
        return Check(
            metric,
            "inconclusive",
            value,
            baseline,
            limit,
            f"p99 latency: {n} observations, too few",
        )
    against = "" if baseline is None else f", stable {baseline:.1f} ms"
    text = f"p99 latency {value:.1f} ms against limit {limit:.1f} ms{against}"
    if value <= limit:
        return Check(metric, "pass", value, baseline, limit, text)
    return Check(metric, "fail", value, baseline, limit, f"{text}: beyond")


def hit_rate_check(
    hits: int,
    base_hits: int,
    both: int,
    n: int,
    limits: HitRateLimit,
    cfg: AnalysisConfig,
    baseline_name: str = "stable",
) -> Check:
    """The hit rate on ``n`` sessions answered by the candidate and by a baseline, which may
    drop below the baseline's by the larger of ``max_drop`` and ``max_relative_drop``.

    Args:
        hits: Sessions the candidate hit.
        base_hits: Sessions the baseline hit.
        both: Sessions both hit.
        n: Sessions.
        limits: The allowed drop.
        cfg: Minimum answers and confidence.
        baseline_name: What the baseline is, for the detail.
    """
    if n == 0:
        return Check("hit_rate", "inconclusive", None, None, None, "hit rate: no paired sessions")
    value, baseline = hits / n, base_hits / n
    allowed = max(limits.max_drop, limits.max_relative_drop * baseline)
    limit = baseline - allowed
    text = (
        f"hit rate {value:.3f} against {baseline_name} {baseline:.3f} on the same {n} "
        f"sessions, limit {limit:.3f}"
    )
    # the paired difference (McNemar): sessions only one of the two hit carry it; one more
    # discordant session keeps a handful of sessions from looking certain
    only, only_base = hits - both, base_hits - both
    se = math.sqrt(max(only + only_base - (only - only_base) ** 2 / n, 0.0) + 1.0) / n
    difference = (only - only_base) / n
    if difference + _z(cfg) * se < -allowed:
        return Check("hit_rate", "fail", value, baseline, limit, f"{text}: below")
    if difference >= -allowed and n >= cfg.min_requests:
        return Check("hit_rate", "pass", value, baseline, limit, text)
    why = "too few sessions" if n < cfg.min_requests else "below, within the noise"
    return Check("hit_rate", "inconclusive", value, baseline, limit, f"{text}: {why}")


def overlap_check(shadow: ShadowWindow, cfg: AnalysisConfig) -> Check:
    """The mean top-k overlap of the shadow's answers with stable's."""
    minimum = cfg.min_shadow_overlap
    if shadow.scored < cfg.min_requests:
        mean = shadow.overlap_sum / shadow.scored if shadow.scored else None
        return Check(
            "shadow_overlap",
            "inconclusive",
            mean,
            None,
            minimum,
            f"overlap with stable: {shadow.scored} scored copies, too few",
        )
    mean = shadow.overlap_sum / shadow.scored
    text = f"overlap with stable {mean:.3f} against minimum {minimum:.3f}"
    if mean >= minimum:
        return Check("shadow_overlap", "pass", mean, None, minimum, text)
    return Check("shadow_overlap", "fail", mean, None, minimum, f"{text}: below")


def volume_check(counts: dict[str, int], cfg: AnalysisConfig) -> Check:
    """Whether every arm answered the minimum number of requests."""
    short = {arm: n for arm, n in counts.items() if n < cfg.min_requests}
    text = ", ".join(f"{arm} {n}" for arm, n in counts.items())
    if short:
        return Check(
            "requests",
            "inconclusive",
            float(min(short.values())),
            None,
            float(cfg.min_requests),
            f"answers: {text}; {cfg.min_requests} needed per arm",
        )
    return Check(
        "requests",
        "pass",
        float(min(counts.values())),
        None,
        float(cfg.min_requests),
        f"answers: {text}",
    )


def fleet_check(report: ReplayReport, cfg: AnalysisConfig) -> Check:
    """Requests of the replay that got no valid answer at all, against the error ceiling."""
    failed = sum(report.errors.values())
    check = rate_check(
        "fleet_error_rate",
        "requests without a valid answer",
        failed,
        report.sent,
        None,
        None,
        cfg.error_rate,
        cfg,
    )
    if failed and check.outcome != "pass":
        kinds = ", ".join(f"{kind} {count}" for kind, count in report.errors.most_common(3))
        return Check(
            check.metric, check.outcome, check.value, None, check.limit, f"{check.detail} ({kinds})"
        )
    return check


def _window(report: ReplayReport, **arms: ArmWindow | ShadowWindow) -> dict[str, Any]:
    out: dict[str, Any] = {"replay": report.summary()}
    for name, arm in arms.items():
        out[name] = dict(arm.__dict__)
    return out


def judge_shadow(
    step: str, stable: ArmWindow, shadow: ShadowWindow, report: ReplayReport, cfg: AnalysisConfig
) -> Verdict:
    """The shadow bake: the candidate's answers to copies of stable's requests against stable's
    (``stable`` with model latency, which the shadow's latency is comparable with)."""
    answered = shadow.scored + shadow.failed
    checks = [
        volume_check({"stable": stable.requests, "shadow": answered}, cfg),
        rate_check(
            "error_rate",
            "shadow failures",
            shadow.failed,
            answered,
            stable.errors,
            stable.requests,
            cfg.error_rate,
            cfg,
        ),
        rate_check(
            "fallback_rate",
            "shadow copies failed or dropped",
            shadow.failed + shadow.skipped,
            shadow.copies,
            stable.fallbacks,
            stable.requests,
            cfg.fallback_rate,
            cfg,
        ),
        latency_check(
            "latency_p99_ms",
            shadow.latency_p99_ms,
            shadow.latency_count,
            stable.latency_p99_ms,
            cfg.latency_p99_ms,
            cfg,
        ),
        overlap_check(shadow, cfg),
        fleet_check(report, cfg),
    ]
    return Verdict.of(step, checks, _window(report, stable=stable, shadow=shadow))


def judge_canary(
    step: str, stable: ArmWindow, canary: ArmWindow, report: ReplayReport, cfg: AnalysisConfig
) -> Verdict:
    """A canary step: the canary arm against the stable arm over the same window."""
    checks = [
        volume_check({"stable": stable.requests, "canary": canary.requests}, cfg),
        rate_check(
            "error_rate",
            "error rate",
            canary.errors,
            canary.requests,
            stable.errors,
            stable.requests,
            cfg.error_rate,
            cfg,
        ),
        rate_check(
            "fallback_rate",
            "fallback rate",
            canary.fallbacks,
            canary.requests,
            stable.fallbacks,
            stable.requests,
            cfg.fallback_rate,
            cfg,
        ),
        latency_check(
            "latency_p99_ms",
            canary.latency_p99_ms,
            canary.latency_count,
            stable.latency_p99_ms,
            cfg.latency_p99_ms,
            cfg,
        ),
        hit_rate_check(
            canary.paired_hits,
            canary.stable_hits,
            canary.both_paired,
            canary.paired,
            cfg.hit_rate,
            cfg,
        ),
        fleet_check(report, cfg),
    ]
    return Verdict.of(step, checks, _window(report, stable=stable, canary=canary))


def judge_bake(
    step: str, candidate: ArmWindow, report: ReplayReport, cfg: AnalysisConfig
) -> Verdict:
    """The bake of a first rollout (no stable version): the candidate alone, held to the
    ceilings, and its hit rate against the popularity fallback's on the same sessions."""
    checks = [
        volume_check({"candidate": candidate.requests}, cfg),
        rate_check(
            "error_rate",
            "error rate",
            candidate.errors,
            candidate.requests,
            None,
            None,
            cfg.error_rate,
            cfg,
        ),
        rate_check(
            "fallback_rate",
            "fallback rate",
            candidate.fallbacks,
            candidate.requests,
            None,
            None,
            cfg.fallback_rate,
            cfg,
        ),
        latency_check(
            "latency_p99_ms",
            candidate.latency_p99_ms,
            candidate.latency_count,
            None,
            cfg.latency_p99_ms,
            cfg,
        ),
        hit_rate_check(
            candidate.hits,
            candidate.popularity_hits,
            candidate.both_popular,
            candidate.replayed,
            cfg.hit_rate,
            cfg,
            baseline_name="popularity fallback",
        ),
        fleet_check(report, cfg),
    ]
    return Verdict.of(step, checks, _window(report, candidate=candidate))
