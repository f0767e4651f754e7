"""The deployment controller: one version's rollout to each target, a persisted state machine.

Per target (``deploy.targets``, in order), with the record saved after every transition:

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
4. **full**: every server makes the candidate stable; then ``production`` points at it in the
   target's cloud, in the ledger with the steps' verdicts.

An inconclusive step is held and judged again with more traffic (``deploy.on_inconclusive``).
A failed step rolls back every target the rollout touched, newest first: all traffic to
stable at once, the candidate unloaded, and in the ledger ``candidate`` (and ``production``
where the rollout had completed) back to stable, with the failed step, its metrics and the
thresholds. ``recflow deploy --rollback`` does the same with a person's reason.

**A first rollout** (no production version in the target's cloud): there is nothing to shadow
or to canary against. The fleet starts with the candidate (infra), a **bake** replays the
shadow's number of requests against it alone, held to the absolute ceilings of error rate,
fallback rate and p99 latency, and its hit rate must not fall below the popularity fallback's
(what a user gets without a model) on the same sessions by more than the hit-rate drop; then
full. If the bake fails, the fleet is stopped (there is no earlier version to serve) and no
alias moves; a first version that completed in an earlier target is kept there when a later
target fails, since nothing older can replace it.

With ``deploy.require_approval``, the rollout waits after the first target (status
``awaiting_approval``) until ``recflow deploy approve``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.params import Params
from pipelines.registry import ledger
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.errors import RegistryError
from pipelines.registry.promotion import promote
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.replication import ensure_replicated
from pipelines.registry.versions import read_version, verify_version
from pipelines.rollout import analysis
from pipelines.rollout.analysis import Check, Verdict
from pipelines.rollout.fleet.client import Fleet, FleetError, Tokens
from pipelines.rollout.fleet.local import FleetStartError, LocalFleet
from pipelines.rollout.metrics import MetricsError, Snapshot
from pipelines.rollout.prometheus import LocalPrometheus, PrometheusError, find_binary
from pipelines.rollout.record import (
    APPROVAL,
    FINISHED,
    ROLLBACK,
    SETTLED,
    Records,
    RolloutRecord,
    TargetRecord,
)
from pipelines.rollout.replay import ReplayReport
from pipelines.rollout.sessions import HeldOut, load_sessions
from pipelines.rollout.sources import MetricSource, PrometheusSource, ScrapeSource
from pipelines.rollout.windows import Traffic, run_window

log = logging.getLogger("recflow.rollout")
# one line per step, shown on the main job's console
steps_log = logging.getLogger("recflow.rollout.steps")

Clock = Callable[[], dt.datetime]


class RolloutFailed(RecflowError):
    """A step failed (or a person asked for a rollback) and the rollout was rolled back."""

    exit_code = 1


class AwaitingApproval(RecflowError):
    """The rollout waits for ``recflow deploy approve`` and the wait timed out."""

    exit_code = 3


class _StepFailed(Exception):
    def __init__(self, cloud: str, step: str, reason: str, checks: list[dict[str, Any]]):
        super().__init__(reason)
        self.cloud, self.step, self.reason, self.checks = cloud, step, reason, checks


class _RollbackAsked(Exception):
    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__(str(request.get("reason")))
        self.request = request


@dataclass
class Context:
    """What a controller runs with.

    Attributes:
        params: The project's params.
        params_file: Their file (the local fleets' servers read it).
        root: The project root (relative stores and folders are under it).
        prepared: The prepare stage's folder: the held-out sessions to replay.
        actor: Who deploys (the ledger's actor).
        run: The Airflow run, when there is one.
        clock: The time of the record and the ledger.
    """

    params: Params
    params_file: Path
    root: Path
    prepared: Path
    actor: str
    run: dict[str, Any] | None = None
    clock: Clock = field(default=lambda: dt.datetime.now(dt.UTC))

    @property
    def run_dir(self) -> Path:
        """The rollout records' folder."""
        return self.root / self.params.deploy.run_dir


def _short(version: str | None) -> str:
    return version[:12] if version else "none"


def _step_name(step: str, weight: float | None = None) -> str:
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
    if errors is not None and errors.value is not None:
        parts.append(f"errors {100 * errors.value:.1f}%")
    return ", ".join(parts) or "; ".join(c.detail for c in verdict.checks)


class Controller:
    """Rolls one version out to every target (see the module's docstring).

    Args:
        ctx: The context.
        version: The version (registered, passed by the gate).
    """

    def __init__(self, ctx: Context, version: str) -> None:
        self.ctx = ctx
        self.cfg = ctx.params.deploy
        self.version = version
        self.registry: Registry = open_registry(ctx.params, ctx.root)
        self.records = Records(ctx.run_dir)
        self.tokens = Tokens(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        self.fleets: dict[str, Fleet] = {}
        self.locals: dict[str, LocalFleet] = {}
        self.sources: dict[str, MetricSource] = {}
        self.prometheus: LocalPrometheus | None = None
        self._held_out: HeldOut | None = None
        self._traffics: dict[str, Traffic] = {}
        self._key: str | None = None

    # ------------------------------------------------------------------ entry points
    def run(self) -> RolloutRecord:
        """Roll the version out, or resume its rollout where its record stands.

        Raises:
            InputError: The version is unknown or was blocked by the gate, another version's
                rollout is unfinished, or the held-out sessions are missing.
            RolloutBusy: Another controller is running.
            RolloutFailed: A step failed (or a rollback was asked for); everything the rollout
                touched was rolled back.
            AwaitingApproval: Approval did not come within ``deploy.approval_timeout_s``.
        """
        self._check_version()
        with self.records.lock():
            record = self._open_record()
            if record.status in FINISHED:
                self._report_finished(record)
                return record
            try:
                self._drive(record)
            except _StepFailed as failure:
                self._roll_back(record, self._failure(failure))
                raise RolloutFailed(
                    f"rollout of {self.version} rolled back: {failure.cloud} {failure.step} "
                    f"failed: {failure.reason}"
                ) from None
            except _RollbackAsked as asked:
                reason = str(asked.request.get("reason") or "no reason given")
                self._roll_back(record, self._manual(record, asked.request))
                self.records.clear_request(self.version, ROLLBACK)
                raise RolloutFailed(
                    f"rollout of {self.version} rolled back as asked by "
                    f"{asked.request.get('actor')}: {reason}"
                ) from None
            finally:
                self._stop_all()
            return record

    def roll_back(self, reason: str) -> RolloutRecord:
        """Roll back this version's rollout by hand when no controller runs it (the ledger; no
        local fleet runs then, and each starts from production when it next starts).

        Raises:
            InputError: The version was never rolled out, or is rolled back already.
            RolloutBusy: A controller is running (ask it with a rollback request instead).
        """
        with self.records.lock():
            record = self.records.load(self.version)
            if record is None:
                raise InputError(
                    f"version {self.version} was never rolled out: nothing to roll back"
                )
            if record.status == "rolled_back":
                raise InputError(
                    f"the rollout of {self.version} is rolled back already "
                    f"({(record.failure or {}).get('reason')})"
                )
            if record.status == "succeeded" and not any(
                self._production(t.cloud) == self.version for t in record.targets
            ):
                raise InputError(
                    f"version {self.version} is production in none of "
                    f"{', '.join(t.cloud for t in record.targets)} any more: roll back the "
                    "rollout that replaced it"
                )
            request = {"reason": reason, "actor": self.ctx.actor, "at": self._now()}
            self._roll_back(record, self._manual(record, request))
            return record

    # ------------------------------------------------------------------ the record
    def _now(self) -> str:
        return self.ctx.clock().astimezone(dt.UTC).isoformat()

    def _check_version(self) -> None:
        version = read_version(self.registry.record, self.version)
        if not version.passed:
            raise InputError(
                f"version {self.version} was blocked by the gate (verdict "
                f"{version.gate.get('verdict')}): it is never deployed"
            )

    def _open_record(self) -> RolloutRecord:
        latest = self.records.latest()
        if latest is not None and latest.version != self.version and latest.status not in FINISHED:
            raise InputError(
                f"the rollout of {latest.version} is unfinished ({latest.where()}): resume it with "
                f"recflow deploy {latest.version}, or roll it back with recflow deploy --rollback"
            )
        record = self.records.load(self.version)
        if record is None:
            now = self._now()
            record = RolloutRecord(
                version=self.version,
                targets=[TargetRecord(cloud) for cloud in self.cfg.targets],
                actor=self.ctx.actor,
                created_at=now,
                updated_at=now,
                run=self.ctx.run,
            )
            self._save(record)
            log.info("rollout of %s to %s begins", self.version, ", ".join(self.cfg.targets))
        elif record.status not in FINISHED:
            record.resumes += 1
            self._save(record)
            steps_log.info("resuming the rollout of %s at %s", _short(self.version), record.where())
        return record

    def _save(self, record: RolloutRecord) -> None:
        record.updated_at = self._now()
        self.records.save(record)

    def _report_finished(self, record: RolloutRecord) -> None:
        if record.status == "rolled_back":
            raise RolloutFailed(
                f"the rollout of {self.version} was rolled back "
                f"({(record.failure or {}).get('reason')}); a rolled-back version is not "
                "deployed again"
            )
        steps_log.info(
            "%s already rolled out to %s", _short(self.version), ", ".join(self.cfg.targets)
        )

    # ------------------------------------------------------------------ the state machine
    def _drive(self, record: RolloutRecord) -> None:
        for index, target in enumerate(record.targets):
            if target.phase in SETTLED:
                continue
            if index > 0 and self.cfg.require_approval and record.approval is None:
                self._await_approval(record, target)
            self._run_target(record, target)
        record.status = "succeeded"
        self._save(record)
        log.info("rollout of %s succeeded in %s", self.version, ", ".join(self.cfg.targets))

    def _interrupted(self) -> bool:
        return self.records.read_request(self.version, ROLLBACK) is not None

    def _check_rollback(self) -> None:
        request = self.records.read_request(self.version, ROLLBACK)
        if request is not None:
            raise _RollbackAsked(request)

    def _await_approval(self, record: RolloutRecord, target: TargetRecord) -> None:
        record.status = "awaiting_approval"
        self._save(record)
        steps_log.info(
            "%s done; waiting for approval before %s: recflow deploy approve",
            ", ".join(t.cloud for t in record.targets if t.phase == "done"),
            target.cloud,
        )
        deadline = time.monotonic() + self.cfg.approval_timeout_s
        while True:
            self._check_rollback()
            approval = self.records.read_request(self.version, APPROVAL)
            if approval is not None:
                record.approval = approval
                record.status = "running"
                self._save(record)
                self.records.clear_request(self.version, APPROVAL)
                steps_log.info(
                    "approved by %s: %s next", approval.get("actor", "someone"), target.cloud
                )
                return
            if time.monotonic() > deadline:
                raise AwaitingApproval(
                    f"the rollout of {self.version} still waits for approval before "
                    f"{target.cloud}; after recflow deploy approve, run recflow deploy "
                    f"{self.version} again to continue"
                )
            time.sleep(0.5)

    def _run_target(self, record: RolloutRecord, target: TargetRecord) -> None:
        cloud = target.cloud
        if target.phase == "pending":
            target.stable = self._production(cloud)
            target.started_at = self._now()
            if target.stable == self.version:
                target.phase, target.finished_at = "done", self._now()
                target.note = "already production"
                self._save(record)
                steps_log.info("%s: %s is production already", cloud, _short(self.version))
                return
            self._name_candidate(target)
            target.phase = "infra"
            self._save(record)
        fleet = self._fleet(target)
        if target.phase == "infra":
            self._step(record, target, "infra", lambda: self._infra(target, fleet))
            target.phase = "shadow"
            self._save(record)
        if target.phase == "shadow":
            if target.bootstrap:
                self._step(record, target, "bake", lambda: self._bake(target, fleet))
                target.phase = "full"
            else:
                self._step(record, target, "shadow", lambda: self._shadow(target, fleet))
                target.phase, target.canary_step = "canary", 0
            self._save(record)
        if target.phase == "canary":
            weights = self.cfg.canary.weights
            for step in range(target.canary_step, len(weights)):
                weight = weights[step]
                self._step(
                    record,
                    target,
                    _step_name("canary", weight),
                    functools.partial(self._canary, target, fleet, weight),
                )
                target.canary_step = step + 1
                self._save(record)
            target.phase = "full"
            self._save(record)
        if target.phase == "full":
            self._full(record, target, fleet)

    def _step(
        self,
        record: RolloutRecord,
        target: TargetRecord,
        step: str,
        body: Callable[[], Verdict],
    ) -> None:
        """Run one step; record every verdict; a failed one raises ``_StepFailed``."""
        self._check_rollback()
        try:
            verdict = body()
        except (FleetError, MetricsError, FleetStartError, RegistryError) as exc:
            verdict = Verdict(
                step, "fail", (Check("fleet", "fail", None, None, None, str(exc)),), {}
            )
            target.steps.append(verdict.to_json())
        self._save(record)
        self._check_rollback()
        line = f"{target.cloud} {step}: {verdict.outcome}, {summary(verdict)}"
        if verdict.outcome != "pass":
            steps_log.warning("%s", line)
            failed = [c.to_json() for c in verdict.checks if c.outcome != "pass"]
            raise _StepFailed(target.cloud, step, "; ".join(verdict.reasons()), failed)
        steps_log.info("%s", line)

    def _recorder(self, target: TargetRecord) -> Callable[[Verdict], None]:
        return lambda verdict: target.steps.append(verdict.to_json())

    # ------------------------------------------------------------------ fleets and metrics
    def _production(self, cloud: str) -> str | None:
        state = read_alias(self.registry.store(cloud), self.registry.cfg.promote_alias)
        return state.version if state else None

    def _pseudonym_key(self) -> str:
        if self._key is None:
            self._key = pseudonym_key(self.registry.record).hex()
        return self._key

    def _fleet(self, target: TargetRecord) -> Fleet:
        """The target's fleet, started (serving its stable version, or the candidate on a
        first rollout) if this controller has not started it yet."""
        cloud = target.cloud
        if cloud in self.fleets:
            return self.fleets[cloud]
        fleet_cfg = getattr(self.cfg.fleets, cloud)
        local = LocalFleet(
            cloud,
            self.ctx.params_file,
            self.records.folder(self.version) / "fleets" / cloud,
            fleet_cfg,
            self.ctx.root / self.ctx.params.serve.request_log.dir / cloud,
            self.tokens,
            self._pseudonym_key(),
        )
        self.locals[cloud] = local
        try:
            fleet = local.start(target.stable or self.version, self.cfg.fleet_start_timeout_s)
        except FleetStartError as exc:
            # the candidate itself serves on a first rollout: its not starting fails infra
            check = Check("fleet", "fail", None, None, None, str(exc))
            verdict = Verdict("infra", "fail", (check,), {})
            target.steps.append(verdict.to_json())
            steps_log.warning("%s infra: fail, %s", cloud, exc)
            raise _StepFailed(cloud, "infra", str(exc), [check.to_json()]) from None
        self.fleets[cloud] = fleet
        self.sources[cloud] = self._source(cloud, fleet)
        return fleet

    def _source(self, cloud: str, fleet: Fleet) -> MetricSource:
        metrics = self.cfg.metrics
        binary = None if metrics.source == "scrape" else find_binary(metrics.prometheus)
        if binary is None:
            if metrics.source == "prometheus":
                raise InputError(
                    f"deploy.metrics.source is prometheus but {metrics.prometheus!r} is not "
                    "installed (make setup installs Debian's package), or set source: scrape"
                )
            return ScrapeSource(fleet.urls)
        if self.prometheus is None:
            folder = self.records.folder(self.version) / "prometheus"
            # a fresh database: series of an earlier controller's fleets must not count
            shutil.rmtree(folder / "data", ignore_errors=True)
            server = LocalPrometheus(binary, folder, metrics.scrape_interval_s)
            try:
                server.start(metrics.start_timeout_s)
            except PrometheusError as exc:
                raise InputError(str(exc)) from exc
            self.prometheus = server
        self.prometheus.watch(cloud, fleet.urls)
        return PrometheusSource(
            self.prometheus.url, cloud, len(fleet.urls), metrics.scrape_interval_s
        )

    def _stop_all(self) -> None:
        for local in self.locals.values():
            local.stop()
        self.locals.clear()
        self.fleets.clear()
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None

    def _traffic(self, fleet: Fleet) -> Traffic:
        """The fleet's traffic; every window goes on with the sessions the last one left."""
        if self._held_out is None:
            replay_cfg = self.cfg.replay
            self._held_out = load_sessions(
                self.ctx.prepared, replay_cfg.split, seed=self.ctx.params.run.seed
            )
        traffic = self._traffics.get(fleet.cloud)
        if traffic is None or traffic.endpoints != fleet.urls:
            traffic = self._traffics[fleet.cloud] = Traffic(
                fleet.urls, self.tokens.client, self._held_out
            )
        return traffic

    # ------------------------------------------------------------------ steps
    def _infra(self, target: TargetRecord, fleet: Fleet) -> Verdict:
        cloud = target.cloud
        checks = []
        store = self.registry.store(cloud)
        if store is not self.registry.record:
            ensure_replicated(self.registry, self.version, cloud)
        problems = verify_version(store, self.version)
        checks.append(
            Check(
                "store",
                "fail" if problems else "pass",
                None,
                None,
                None,
                "; ".join(problems) or f"{_short(self.version)} intact in the {cloud} store",
            )
        )
        expected = target.stable or self.version
        deadline = time.monotonic() + self.cfg.metrics.start_timeout_s
        while True:
            fleet_problems = fleet.health()
            for state in fleet.states():
                workers = getattr(self.cfg.fleets, cloud).workers
                if state.stable != expected:
                    fleet_problems.append(f"{state.url} serves {state.stable}, not {expected}")
                if not state.converged or state.workers < workers:
                    fleet_problems.append(
                        f"{state.url}: {state.workers} of {workers} workers converged"
                    )
                fleet_problems.extend(f"{state.url}: {error}" for error in state.errors)
            metric_problems = self.sources[cloud].problems()
            if not (fleet_problems or metric_problems) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        checks.append(
            Check(
                "fleet",
                "fail" if fleet_problems else "pass",
                float(len(fleet.urls)),
                None,
                None,
                "; ".join(fleet_problems)
                or f"{len(fleet.urls)} server(s) ready on {_short(expected)}",
            )
        )
        checks.append(
            Check(
                "metrics",
                "fail" if metric_problems else "pass",
                None,
                None,
                None,
                "; ".join(metric_problems) or self.sources[cloud].describe(),
            )
        )
        verdict = Verdict.of("infra", checks, {})
        target.steps.append(verdict.to_json())
        return verdict

    def _load_candidate(self, fleet: Fleet) -> None:
        try:
            fleet.load(self.version)
        except FleetError as exc:
            raise FleetError(f"the candidate {self.version} was refused: {exc}") from exc

    def _shadow(self, target: TargetRecord, fleet: Fleet) -> Verdict:
        stable = target.stable
        assert stable is not None
        self._load_candidate(fleet)
        fleet.shadow(self.version)
        analysis_cfg = self.cfg.analysis

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

        verdict = run_window(
            "shadow",
            self.cfg,
            self._traffic(fleet),
            self.sources[target.cloud],
            judge,
            max_requests=self.cfg.shadow.requests,
            settled=settled,
            interrupted=self._interrupted,
            on_verdict=self._recorder(target),
        )
        if verdict.outcome == "pass":
            fleet.shadow(None)
        return verdict

    def _bake(self, target: TargetRecord, fleet: Fleet) -> Verdict:
        analysis_cfg = self.cfg.analysis

        def judge(window: Snapshot, report: ReplayReport) -> Verdict:
            return analysis.judge_bake(
                "bake",
                analysis.arm_window(window, report, self.version, "stable"),
                report,
                analysis_cfg,
            )

        return run_window(
            "bake",
            self.cfg,
            self._traffic(fleet),
            self.sources[target.cloud],
            judge,
            max_requests=self.cfg.shadow.requests,
            interrupted=self._interrupted,
            on_verdict=self._recorder(target),
        )

    def _canary(self, target: TargetRecord, fleet: Fleet, weight: float) -> Verdict:
        stable = target.stable
        assert stable is not None
        step = _step_name("canary", weight)
        self._load_candidate(fleet)
        fleet.shadow(None)
        fleet.canary(self.version, weight)
        analysis_cfg = self.cfg.analysis
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

        return run_window(
            step,
            self.cfg,
            self._traffic(fleet),
            self.sources[target.cloud],
            judge,
            max_requests=self.cfg.canary.max_requests,
            pair=True,
            stop_when=enough,
            interrupted=self._interrupted,
            on_verdict=self._recorder(target),
        )

    def _full(self, record: RolloutRecord, target: TargetRecord, fleet: Fleet) -> None:
        cloud = target.cloud
        self._check_rollback()
        try:
            if not target.bootstrap:
                fleet.promote(self.version)
            wrong = [s.url for s in fleet.states() if s.stable != self.version]
            if wrong:
                raise FleetError(f"{', '.join(wrong)} still serve another version")
        except FleetError as exc:
            check = Check("fleet", "fail", None, None, None, str(exc))
            target.steps.append(Verdict("full", "fail", (check,), {}).to_json())
            self._save(record)
            raise _StepFailed(cloud, "full", str(exc), [check.to_json()]) from None
        passed = [s for s in target.steps if s.get("outcome") == "pass"]
        steps = ", ".join(dict.fromkeys(s["step"] for s in passed))
        reason = f"rollout passed in {cloud}: {steps}"
        entry = promote(
            self.registry,
            self.version,
            self.registry.cfg.promote_alias,
            cloud,
            reason=reason,
            actor=self.ctx.actor,
            at=self.ctx.clock(),
            run=self.ctx.run,
            decision=self._decision(target),
        )
        if entry is not None:
            target.ledger.append(entry.seq)
        target.phase, target.finished_at = "done", self._now()
        self._save(record)
        where = f"ledger entry {entry.seq}" if entry else "already in the ledger"
        steps_log.info(
            "%s full: %s serves 100%%, production in %s (%s)",
            cloud,
            _short(self.version),
            cloud,
            where,
        )

    # ------------------------------------------------------------------ the ledger
    def _decision(self, target: TargetRecord, **more: Any) -> dict[str, Any]:
        """What a ledger entry keeps of the rollout: its steps' outcomes and checks (values,
        baselines, limits), and the thresholds."""
        steps = [
            {
                "step": s["step"],
                "outcome": s["outcome"],
                "checks": [
                    {k: c[k] for k in ("metric", "outcome", "value", "baseline", "limit")}
                    for c in s.get("checks", [])
                ],
            }
            for s in target.steps
        ]
        return {
            "rollout": self.version,
            "cloud": target.cloud,
            "stable": target.stable,
            "steps": steps,
            "thresholds": self.cfg.analysis.model_dump(mode="json"),
            **more,
        }

    def _name_candidate(self, target: TargetRecord) -> None:
        """Make sure ``candidate`` names the version in the target's cloud during its rollout
        (the register step did, unless the version is deployed by hand)."""
        alias = self.registry.cfg.candidate_alias
        entry = promote(
            self.registry,
            self.version,
            alias,
            target.cloud,
            reason=f"rollout of {self.version} to {target.cloud} begins",
            actor=self.ctx.actor,
            at=self.ctx.clock(),
            run=self.ctx.run,
        )
        if entry is not None:
            target.ledger.append(entry.seq)

    def _withdraw(
        self, alias: str, cloud: str, stable: str, reason: str, decision: dict[str, Any]
    ) -> int | None:
        """Point ``alias`` in ``cloud`` back at ``stable`` if it names the version, as a
        rollback of the entry that set it."""
        state = read_alias(self.registry.store(cloud), alias)
        if state is None or state.version != self.version:
            return None
        setting = ledger.recorded(self.registry.record, state.change)
        entry = promote(
            self.registry,
            stable,
            alias,
            cloud,
            reason=reason,
            actor=self.ctx.actor,
            at=self.ctx.clock(),
            run=self.ctx.run,
            action="rollback",
            rolls_back=setting.seq if setting else None,
            decision=decision,
        )
        return entry.seq if entry else None

    # ------------------------------------------------------------------ rollback
    def _failure(self, failure: _StepFailed) -> dict[str, Any]:
        return {
            "cloud": failure.cloud,
            "step": failure.step,
            "reason": failure.reason,
            "checks": failure.checks,
            "manual": False,
            "at": self._now(),
        }

    def _manual(self, record: RolloutRecord, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "cloud": record.current.cloud if record.current else None,
            "step": record.where(),
            "reason": f"manual rollback: {request.get('reason') or 'no reason given'}",
            "checks": [],
            "manual": True,
            "actor": request.get("actor"),
            "at": self._now(),
        }

    def _roll_back(self, record: RolloutRecord, failure: dict[str, Any]) -> None:
        """Every touched target back to stable, newest first: the fleets at once, then the
        ledger."""
        where = f"{failure['cloud']} {failure['step']}" if failure["cloud"] else failure["step"]
        reason = f"rollout of {self.version} stopped at {where}: {failure['reason']}"
        targets = [
            t
            for t in reversed(record.touched)
            if t.phase not in ("rolled_back", "kept") and t.note != "already production"
        ]
        for target in targets:
            fleet = self.fleets.get(target.cloud)
            if target.bootstrap or fleet is None or target.stable is None:
                continue
            try:
                fleet.canary(None, 0.0)
                fleet.shadow(None)
                fleet.rollback_to(target.stable)
                fleet.unload(self.version)
            except FleetError as exc:
                log.error("%s fleet did not roll back cleanly: %s", target.cloud, exc)
        for target in targets:
            if target.bootstrap:
                self._roll_back_first(record, target)
                continue
            stable = target.stable
            assert stable is not None
            decision = self._decision(
                target, failed_step=where, failed_checks=failure["checks"], manual=failure["manual"]
            )
            written = []
            for alias in (self.registry.cfg.promote_alias, self.registry.cfg.candidate_alias):
                seq = self._withdraw(alias, target.cloud, stable, reason, decision)
                if seq is not None:
                    written.append(seq)
            target.ledger.extend(written)
            target.phase, target.finished_at = "rolled_back", self._now()
            self._save(record)
            served = (
                "serves 100%, candidate unloaded"
                if target.cloud in self.fleets
                else ("is production again")
            )
            steps_log.warning(
                "%s rolled back: stable %s %s (ledger %s)",
                target.cloud,
                _short(stable),
                served,
                ", ".join(f"entry {n}" for n in written) or "unchanged",
            )
        record.status = "rolled_back"
        record.failure = failure
        self._save(record)

    def _roll_back_first(self, record: RolloutRecord, target: TargetRecord) -> None:
        """A first rollout has no stable version to return to."""
        if target.phase == "done":
            target.phase = "kept"
            target.note = f"first version in {target.cloud}: kept, there is no earlier one to serve"
        else:
            local = self.locals.get(target.cloud)
            if local is not None:
                local.stop()
                self.fleets.pop(target.cloud, None)
            target.phase = "rolled_back"
            target.note = (
                f"first rollout in {target.cloud}: the fleet was stopped, nothing serves there"
            )
        target.finished_at = self._now()
        self._save(record)
        steps_log.warning("%s: %s", target.cloud, target.note)


def deploy(ctx: Context, version: str) -> RolloutRecord:
    """Roll ``version`` out to every target (see :class:`Controller`)."""
    return Controller(ctx, version).run()


def request_rollback(
    ctx: Context, version: str | None, reason: str, wait_s: float = 300.0
) -> RolloutRecord:
    """``recflow deploy --rollback``: roll back ``version``'s rollout (default: the latest).

    A running controller is asked (it rolls back at its next check, within a request or two)
    and waited for; with none running, the rollback is done here.

    Raises:
        InputError: There is no such rollout, or it is rolled back already.
        RecflowError: The running controller did not roll back within ``wait_s``.
    """
    if not reason.strip():
        raise InputError("a rollback needs a reason (--reason)")
    records = Records(ctx.run_dir)
    record = records.load(version) if version else records.latest()
    if record is None:
        raise InputError(
            f"no rollout of {version} to roll back" if version else "there was no rollout yet"
        )
    if record.status == "rolled_back":
        raise InputError(f"the rollout of {record.version} is rolled back already")
    if not records.controller_running():
        return Controller(ctx, record.version).roll_back(reason)
    records.write_request(
        record.version,
        ROLLBACK,
        {"reason": reason, "actor": ctx.actor, "at": ctx.clock().isoformat()},
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        current = records.load(record.version)
        if current is not None and current.status == "rolled_back":
            return current
        if not records.controller_running():
            # it finished before it saw the request: roll back here
            with contextlib.suppress(InputError):
                return Controller(ctx, record.version).roll_back(reason)
        time.sleep(0.5)
    raise RecflowError(
        f"the controller of {record.version} did not roll back within {wait_s:.0f} s; the "
        "request stays and is carried out when it checks next"
    )


def approve(ctx: Context, reason: str) -> RolloutRecord:
    """``recflow deploy approve``: let the latest rollout go on to the next targets.

    Raises:
        InputError: No rollout waits for approval.
    """
    records = Records(ctx.run_dir)
    record = records.latest()
    if record is None or record.status != "awaiting_approval":
        where = f"{record.version}: {record.where()}" if record else "none yet"
        raise InputError(f"no rollout waits for approval (latest rollout: {where})")
    records.write_request(
        record.version,
        APPROVAL,
        {"actor": ctx.actor, "at": ctx.clock().isoformat(), "reason": reason},
    )
    return record
