"""The steps of a target's rollout: what each asks of the environment, and how it is judged.

1. **infra**: the version is in the target's store and intact (replicated there first if it
   is not), every server of the fleet is alive, ready, converged, serving the expected stable
   version, and the metrics source sees every server.
2. **shadow**: every server loads the candidate from its store (a candidate that does not load
   is refused here) and scores a copy of each of stable's replayed requests; the copies'
   failures, drops, p99 latency and top-k overlap are judged against stable's.
3. **canary** at each of ``deploy.canary.weights``: that share of the users (by hash of the user
   id) gets the candidate; the canary arm is judged against stable over the same window, the
   hit rate of the replayed sessions' true next items among the metrics (on the same sessions:
   the replay asks stable for each session the canary answers).

On **a first rollout** a **bake** takes the place of shadow and canary: it replays the
shadow's number of requests against the candidate alone, held to the absolute ceilings of
error rate, fallback rate and p99 latency, and its hit rate must not fall below the popularity
fallback's (what a user gets without a model) on the same sessions by more than the hit-rate
drop.

Every verdict a step reaches (a held window's too) is appended to the target's record; the
controller decides what follows from the last one.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.registry.replication import ensure_replicated
from pipelines.registry.versions import verify_version
from pipelines.rollout import analysis
from pipelines.rollout.analysis import Check, Verdict
from pipelines.rollout.context import Rollout, short
from pipelines.rollout.environment import Environment
from pipelines.rollout.fleet.client import FleetError
from pipelines.rollout.metrics import Snapshot
from pipelines.rollout.record import TargetRecord
from pipelines.rollout.replay import ReplayReport


def step_name(step: str, weight: float | None = None) -> str:
    """A step's name in the record and on the console (``canary 25%``)."""
    return f"canary {weight * 100:g}%" if weight is not None else step


def _value(verdict: Verdict, metric: str) -> Check | None:
    return next((c for c in verdict.checks if c.metric == metric), None)


def summary(verdict: Verdict) -> str:
    """The few numbers of a verdict a person reads on the console."""
    if verdict.outcome != "pass":
        return "; ".join(verdict.reasons())
    if verdict.step == "infra":
        fleet, metrics = _value(verdict, "fleet"), _value(verdict, "metrics")
        source = "Prometheus" if metrics and metrics.detail.startswith("Prometheus") else "/metrics"
        return (
            f"{fleet.detail if fleet else ''}, version intact in the store, metrics from {source}"
        )
    parts = []
    volume = _value(verdict, "requests")
    if volume is not None:
        parts.append(volume.detail.removeprefix("answers: "))
    overlap = _value(verdict, "shadow_overlap")
    if overlap is not None and overlap.value is not None:
        parts.append(f"overlap {overlap.value:.2f}")
    hits = _value(verdict, "hit_rate")
    if hits is not None and hits.value is not None and hits.baseline is not None:
        against = "popularity " if "popularity" in hits.detail else ""
        parts.append(f"hit rate {hits.value:.3f} vs {against}{hits.baseline:.3f}")
    latency = _value(verdict, "latency_p99_ms")
    if latency is not None and latency.value is not None:
        base = f" vs {latency.baseline:.1f}" if latency.baseline is not None else ""
        parts.append(f"p99 {latency.value:.1f}{base} ms")
    errors = _value(verdict, "error_rate")
    if errors is not None and isinstance(errors.value, int | float):
        parts.append(f"errors {100 * errors.value:.1f}%")
    return ", ".join(parts) or "; ".join(c.detail for c in verdict.checks)


class Steps:
    """The steps of one version's rollout, run in an environment.

    Args:
        rollout: The rollout.
        environment: What the steps act on.
        interrupted: Whether a rollback was asked for (checked before every replayed request).
    """

    def __init__(
        self, rollout: Rollout, environment: Environment, interrupted: Callable[[], bool]
    ) -> None:
        self.rollout = rollout
        self.environment = environment
        self.interrupted = interrupted
        self.version = rollout.version
        self.cfg = rollout.cfg

    def _recorder(self, target: TargetRecord) -> Callable[[Verdict], None]:
        return lambda verdict: target.steps.append(verdict.to_json())

    def _load_candidate(self, cloud: str) -> None:
        try:
            self.environment.load(cloud, self.version)
        except FleetError as exc:
            raise FleetError(f"the candidate {self.version} was refused: {exc}") from exc

    def infra(self, target: TargetRecord) -> Verdict:
        """The version intact in the target's store, the fleet and its metrics ready."""
        cloud, registry = target.cloud, self.rollout.registry
        store = registry.store(cloud)
        if store is not registry.record:
            ensure_replicated(registry, self.version, cloud)
        problems = verify_version(store, self.version)
        intact = f"{short(self.version)} intact in the {cloud} store"
        checks = [
            Check(
                "store",
                "fail" if problems else "pass",
                None,
                None,
                None,
                "; ".join(problems) or intact,
            ),
            *self.environment.check(cloud, target.stable or self.version),
        ]
        verdict = Verdict.of("infra", checks, {})
        target.steps.append(verdict.to_json())
        return verdict

    def shadow(self, target: TargetRecord) -> Verdict:
        """The candidate scores copies of stable's requests; judged against stable."""
        cloud, stable, analysis_cfg = target.cloud, target.stable, self.cfg.analysis
        assert stable is not None
        self._load_candidate(cloud)
        self.environment.shadow(cloud, self.version)

        def judge(window: Snapshot, report: ReplayReport) -> Verdict:
            return analysis.judge_shadow(
                "shadow",
                analysis.arm_window(window, report, stable, "stable", model_latency=True),
                analysis.shadow_window(window, self.version),
                report,
                analysis_cfg,
            )

        def settled(window: Snapshot, report: ReplayReport) -> bool:
            tally = report.tally(stable, "stable")
            copies = analysis.shadow_window(window, self.version).copies
            return copies >= tally.answered - tally.fallbacks

        verdict = self.environment.observe(
            cloud,
            "shadow",
            judge,
            max_requests=self.cfg.shadow.requests,
            settled=settled,
            interrupted=self.interrupted,
            on_verdict=self._recorder(target),
        )
        if verdict.outcome == "pass":
            self.environment.shadow(cloud, None)
        return verdict

    def bake(self, target: TargetRecord) -> Verdict:
        """A first rollout's candidate alone, against the ceilings and the popularity fallback."""
        analysis_cfg = self.cfg.analysis

        def judge(window: Snapshot, report: ReplayReport) -> Verdict:
            return analysis.judge_bake(
                "bake",
                analysis.arm_window(window, report, self.version, "stable"),
                report,
                analysis_cfg,
            )

        return self.environment.observe(
            target.cloud,
            "bake",
            judge,
            max_requests=self.cfg.shadow.requests,
            interrupted=self.interrupted,
            on_verdict=self._recorder(target),
        )

    def canary(self, target: TargetRecord, weight: float) -> Verdict:
        """``weight`` of the users to the candidate; its arm judged against stable's."""
        cloud, stable, analysis_cfg = target.cloud, target.stable, self.cfg.analysis
        assert stable is not None
        step = step_name("canary", weight)
        self._load_candidate(cloud)
        self.environment.shadow(cloud, None)
        self.environment.canary(cloud, self.version, weight)
        needed = analysis_cfg.min_requests

        def judge(window: Snapshot, report: ReplayReport) -> Verdict:
            return analysis.judge_canary(
                step,
                analysis.arm_window(window, report, stable, "stable"),
                analysis.arm_window(window, report, self.version, "canary"),
                report,
                analysis_cfg,
            )

        def enough(report: ReplayReport) -> bool:
            canary = report.tally(self.version, "canary")
            paired = report.paired(self.version, "canary").sessions
            # a canary's malformed answers have no pair: they need none to be judged
            return (
                canary.answered + canary.invalid >= needed
                and paired >= min(needed, canary.answered)
                and report.tally(stable, "stable").answered >= needed
            )

        return self.environment.observe(
            cloud,
            step,
            judge,
            max_requests=self.cfg.canary.max_requests,
            pair=True,
            stop_when=enough,
            interrupted=self.interrupted,
            on_verdict=self._recorder(target),
        )
