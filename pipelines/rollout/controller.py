"""The deployment controller: one version's rollout to each target, a persisted state machine.

Per target (``deploy.targets``, in order), with the record saved after every transition: the
steps **infra**, **shadow**, and **canary** at each of ``deploy.canary.weights`` (what each does
and how it is judged: ``pipelines.rollout.steps``), then **full**: every server makes the
candidate stable; then ``production`` points at it in the target's cloud, in the ledger with the
steps' verdicts.

An inconclusive step is held and judged again with more traffic (``deploy.on_inconclusive``).
A failed step rolls back every target the rollout touched, newest first: all traffic to
stable at once, the candidate unloaded, and in the ledger ``candidate`` (and ``production``
where the rollout had completed) back to stable, with the failed step, its metrics and the
thresholds. ``recflow deploy --rollback`` does the same with a person's reason.

**A first rollout** (no production version in the target's cloud): there is nothing to shadow
or to canary against. The fleet starts with the candidate (infra), a **bake** judges it alone,
then full. If the bake fails, the fleet is stopped (there is no earlier version to serve) and no
alias moves; a first version that completed in an earlier target is kept there when a later
target fails, since nothing older can replace it.

With ``deploy.require_approval`` (or ``require_approval`` given for one run), the rollout waits
after the first target (status ``awaiting_approval``) for a decision
(``pipelines.rollout.approval``: ``recflow deploy approve|reject`` or the Airflow approval
task): approve goes on, reject rolls back what was deployed, naming who rejected and why. A
recorded reject stops the rollout at its next check even where no approval is required.

``through`` rolls out up to and including one target, then stops with the record open
(``awaiting_approval`` where the next target needs a decision, else ``running``): the
Airflow DAG runs one task per target this way. Each run starts the fleets it needs and stops
them when it ends; a target already done is a no-op.

This module is the state machine and its decisions only: the fleets, their metrics and the
replayed traffic are the :class:`~pipelines.rollout.environment.Environment`'s (the local
fleets by default), and rolling back is ``pipelines.rollout.rollback``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.waiting import wait_until
from pipelines.registry.errors import RegistryError
from pipelines.registry.versions import read_version
from pipelines.rollout.analysis import Check, Verdict
from pipelines.rollout.approval import (
    Decision,
    decide,
    read_decision,
    reject_failure,
    waiting_version,
)
from pipelines.rollout.context import Context, Rollout, log, short, steps_log
from pipelines.rollout.environment import Environment, Fleets, LocalEnvironment
from pipelines.rollout.fleet.client import FleetError
from pipelines.rollout.fleet.local import FleetStartError
from pipelines.rollout.metrics import MetricsError
from pipelines.rollout.record import (
    FINISHED,
    ROLLBACK,
    SETTLED,
    Records,
    RolloutRecord,
    TargetRecord,
)
from pipelines.rollout.rollback import manual_failure, roll_back
from pipelines.rollout.steps import Steps, step_name, summary


class RolloutFailed(RecflowError):
    """A step failed (or a person asked for a rollback) and the rollout was rolled back."""

    exit_code = 1


class AwaitingApproval(RecflowError):
    """The rollout waits for a decision (``recflow deploy approve|reject``) and the wait timed
    out; the record stays open."""

    exit_code = 3


class _StepFailed(Exception):
    def __init__(self, cloud: str, step: str, reason: str, checks: list[dict[str, Any]]):
        super().__init__(reason)
        self.cloud, self.step, self.reason, self.checks = cloud, step, reason, checks


class _RollbackAsked(Exception):
    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__(str(request.get("reason")))
        self.request = request


class _Rejected(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.describe())
        self.decision = decision


class Controller:
    """Rolls one version out to every target (see the module's docstring).

    Args:
        ctx: The context.
        version: The version (registered, passed by the gate).
        environment: What the rollout acts on (default: the local fleets; ``fleets``
            ``kubernetes``: each cloud's Deployment, :mod:`pipelines.rollout.cluster`).
        through: Roll out up to and including this target, then stop (None: every target).
        require_approval: Whether the targets after the first wait for approval (None:
            ``deploy.require_approval``).
    """

    def __init__(
        self,
        ctx: Context,
        version: str,
        environment: Environment | None = None,
        *,
        through: str | None = None,
        require_approval: bool | None = None,
        fleets: Fleets = "local",
    ):
        self.rollout = Rollout(ctx, version)
        self.ctx, self.cfg, self.version = ctx, self.rollout.cfg, version
        self.through = through
        self.require_approval = (
            self.cfg.require_approval if require_approval is None else require_approval
        )
        self.registry, self.records = self.rollout.registry, self.rollout.records
        if environment is None and fleets == "kubernetes":
            from pipelines.rollout.cluster import ClusterEnvironment

            environment = ClusterEnvironment(ctx, self.registry)
        if environment is None:
            environment = LocalEnvironment(ctx, self.records.folder(version), self.registry)
        self.environment = environment
        self.steps = Steps(self.rollout, environment, self._interrupted)

    def run(self) -> RolloutRecord:
        """Roll the version out, or resume its rollout where its record stands.

        Raises:
            InputError: The version is unknown or was blocked by the gate, another version's
                rollout is unfinished, ``through`` is not one of its targets, or the held-out
                sessions are missing.
            RolloutBusy: Another controller is running.
            RolloutFailed: A step failed, a rollback was asked for, or the rollout was
                rejected; everything the rollout touched was rolled back.
            AwaitingApproval: No decision came within ``deploy.approval_timeout_s``.
        """
        self._check_version()
        with self.records.lock():
            record = self.records.load(self.version)
            self._check_through(record)
            if record is not None and record.status in FINISHED:
                self._report_finished(record)
                return record
            if record is not None and self._through_done(record):
                return record
            record = self._open_record(record)
            try:
                self._drive(record)
            except _StepFailed as failure:
                roll_back(self.rollout, record, self._failure(failure), self.environment)
                raise RolloutFailed(
                    f"rollout of {self.version} rolled back: {failure.cloud} {failure.step} "
                    f"failed: {failure.reason}"
                ) from None
            except _RollbackAsked as asked:
                reason = str(asked.request.get("reason") or "no reason given")
                manual = manual_failure(self.rollout, record, asked.request)
                roll_back(self.rollout, record, manual, self.environment)
                self.records.clear_request(self.version, ROLLBACK)
                raise RolloutFailed(
                    f"rollout of {self.version} rolled back as asked by "
                    f"{asked.request.get('actor')}: {reason}"
                ) from None
            except _Rejected as rejected:
                decision = rejected.decision
                rejection = reject_failure(self.rollout, decision)
                roll_back(self.rollout, record, rejection, self.environment)
                raise RolloutFailed(
                    f"rollout of {self.version} rolled back: {decision.describe()}"
                ) from None
            finally:
                self.environment.close()
            return record

    # ------------------------------------------------------------------ the record
    def _check_version(self) -> None:
        version = read_version(self.registry.record, self.version)
        if not version.passed:
            raise InputError(
                f"version {self.version} was blocked by the gate (verdict "
                f"{version.gate.get('verdict')}): it is never deployed"
            )

    def _check_through(self, record: RolloutRecord | None) -> None:
        targets = [t.cloud for t in record.targets] if record else list(self.cfg.targets)
        if self.through is not None and self.through not in targets:
            raise InputError(
                f"target {self.through!r} is not one of the rollout's targets "
                f"({', '.join(targets)})"
            )

    def _through_done(self, record: RolloutRecord) -> bool:
        """Whether the target to roll out through is done already (a rerun: nothing to do)."""
        if self.through is None or record.target(self.through).phase != "done":
            return False
        steps_log.info(
            "%s: %s is done already (%s); nothing to do",
            short(self.version),
            self.through,
            record.where(),
        )
        return True

    def _open_record(self, record: RolloutRecord | None) -> RolloutRecord:
        latest = self.records.latest()
        if latest is not None and latest.version != self.version and latest.status not in FINISHED:
            raise InputError(
                f"the rollout of {latest.version} is unfinished ({latest.where()}): resume it with "
                f"recflow deploy {latest.version}, or roll it back with recflow deploy --rollback"
            )
        if record is None:
            now = self.rollout.now()
            record = RolloutRecord(
                version=self.version,
                targets=[TargetRecord(cloud) for cloud in self.cfg.targets],
                actor=self.ctx.actor,
                created_at=now,
                updated_at=now,
                run=self.ctx.run,
            )
            self.rollout.save(record)
            log.info("rollout of %s to %s begins", self.version, ", ".join(self.cfg.targets))
        else:
            record.resumes += 1
            self.rollout.save(record)
            # "at public canary", or ", waiting for approval before public"
            where = (" at " if record.status == "running" else ", ") + record.where()
            # a step line when a killed rollout resumes; the full log's when a task of the DAG
            # takes the next target (resuming is how a per-target run goes on)
            (log if self.through is not None else steps_log).info(
                "resuming the rollout of %s%s", short(self.version), where
            )
        return record

    def _report_finished(self, record: RolloutRecord) -> None:
        if record.status == "rolled_back":
            raise RolloutFailed(
                f"the rollout of {self.version} was rolled back "
                f"({(record.failure or {}).get('reason')}); a rolled-back version is not "
                "deployed again"
            )
        steps_log.info(
            "%s already rolled out to %s", short(self.version), ", ".join(self.cfg.targets)
        )

    def _failure(self, failure: _StepFailed) -> dict[str, Any]:
        return {
            "cloud": failure.cloud,
            "step": failure.step,
            "reason": failure.reason,
            "checks": failure.checks,
            "manual": False,
            "at": self.rollout.now(),
        }

    # ------------------------------------------------------------------ the state machine
    def _drive(self, record: RolloutRecord) -> None:
        for index, target in enumerate(record.targets):
            if target.phase in SETTLED:
                continue
            if index > 0 and target.phase == "pending":
                self._pass_approval(record, target)
            self._run_target(record, target)
            if target.cloud == self.through and index + 1 < len(record.targets):
                self._stop_before(record, record.targets[index + 1])
                return
        record.status = "succeeded"
        self.rollout.save(record)
        log.info("rollout of %s succeeded in %s", self.version, ", ".join(self.cfg.targets))

    def _stop_before(self, record: RolloutRecord, target: TargetRecord) -> None:
        """Leave the record open before ``target`` (a run ``through`` the one before it)."""
        waits = self.require_approval and read_decision(self.ctx, self.version) is None
        record.status = "awaiting_approval" if waits else "running"
        self.rollout.save(record)
        # the full log's, not a step: in the DAG the next task is on screen already
        log.info(
            "%s done; %s next%s: recflow deploy %s --target %s",
            ", ".join(t.cloud for t in record.targets if t.phase == "done"),
            target.cloud,
            " after approval (recflow deploy approve|reject)" if waits else "",
            self.version,
            target.cloud,
        )

    def _interrupted(self) -> bool:
        if self.records.read_request(self.version, ROLLBACK) is not None:
            return True
        decision = read_decision(self.ctx, self.version)
        return decision is not None and not decision.approved

    def _check_rollback(self) -> None:
        """Stop for a person: a rollback request, or a recorded reject."""
        request = self.records.read_request(self.version, ROLLBACK)
        if request is not None:
            raise _RollbackAsked(request)
        decision = read_decision(self.ctx, self.version)
        if decision is not None and not decision.approved:
            raise _Rejected(decision)

    def _pass_approval(self, record: RolloutRecord, target: TargetRecord) -> None:
        """Before a later target: a reject stops here; approval is waited for if required."""
        self._check_rollback()
        decision = read_decision(self.ctx, self.version)
        if decision is None and self.require_approval:
            decision = self._await_approval(record, target)
        if decision is not None:
            record.approval = decision.to_json()
        record.status = "running"
        self.rollout.save(record)

    def _await_approval(self, record: RolloutRecord, target: TargetRecord) -> Decision:
        record.status = "awaiting_approval"
        self.rollout.save(record)
        steps_log.info(
            "%s done; waiting for approval before %s: recflow deploy approve|reject",
            ", ".join(t.cloud for t in record.targets if t.phase == "done"),
            target.cloud,
        )

        def decided() -> Decision | None:
            self._check_rollback()  # a reject ends the wait here
            return read_decision(self.ctx, self.version)

        decision = wait_until(decided, timeout_s=self.cfg.approval_timeout_s, interval_s=0.5)
        if decision is None:
            raise AwaitingApproval(
                f"the rollout of {self.version} still waits for approval before "
                f"{target.cloud}; after recflow deploy approve (or reject), run recflow deploy "
                f"{self.version} again to continue"
            )
        steps_log.info("%s: %s next", decision.describe(), target.cloud)
        return decision

    def _run_target(self, record: RolloutRecord, target: TargetRecord) -> None:
        cloud = target.cloud
        if target.phase == "pending":
            target.stable = self.rollout.production(cloud)
            target.started_at = self.rollout.now()
            if target.stable == self.version:
                target.phase, target.finished_at = "done", self.rollout.now()
                target.note = "already production"
                self.rollout.save(record)
                steps_log.info("%s: %s is production already", cloud, short(self.version))
                return
            self._name_candidate(target)
            target.phase = "infra"
            self.rollout.save(record)
        self._start(target)
        if target.phase == "infra":
            self._step(record, target, "infra", lambda: self.steps.infra(target))
            target.phase = "shadow"
            self.rollout.save(record)
        if target.phase == "shadow":
            if target.first_model:
                self._step(record, target, "bake", lambda: self.steps.bake(target))
                target.phase = "full"
            else:
                self._step(record, target, "shadow", lambda: self.steps.shadow(target))
                target.phase, target.canary_step = "canary", 0
            self.rollout.save(record)
        if target.phase == "canary":
            weights = self.cfg.canary.weights
            for step in range(target.canary_step, len(weights)):
                weight = weights[step]
                self._step(
                    record,
                    target,
                    step_name("canary", weight),
                    functools.partial(self.steps.canary, target, weight),
                )
                target.canary_step = step + 1
                self.rollout.save(record)
            target.phase = "full"
            self.rollout.save(record)
        if target.phase == "full":
            self._full(record, target)

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
        self.rollout.save(record)
        self._check_rollback()
        line = f"{target.cloud} {step}: {verdict.outcome}, {summary(verdict)}"
        if verdict.outcome != "pass":
            steps_log.warning("%s", line)
            failed = [c.to_json() for c in verdict.checks if c.outcome != "pass"]
            raise _StepFailed(target.cloud, step, "; ".join(verdict.reasons()), failed)
        steps_log.info("%s", line)

    # ------------------------------------------------------------------ steps
    def _start(self, target: TargetRecord) -> None:
        """Start the target's fleet (serving its stable version, or the candidate on a first
        rollout) unless the environment runs it already."""
        try:
            self.environment.start(target.cloud, target.stable or self.version)
        except FleetStartError as exc:
            # the candidate itself serves on a first rollout: its not starting fails infra
            check = Check("fleet", "fail", None, None, None, str(exc))
            target.steps.append(Verdict("infra", "fail", (check,), {}).to_json())
            steps_log.warning("%s infra: fail, %s", target.cloud, exc)
            raise _StepFailed(target.cloud, "infra", str(exc), [check.to_json()]) from None

    def _full(self, record: RolloutRecord, target: TargetRecord) -> None:
        cloud = target.cloud
        self._check_rollback()
        try:
            if not target.first_model:
                self.environment.promote(cloud, self.version)
            wrong = self.environment.not_serving(cloud, self.version)
            if wrong:
                raise FleetError(f"{', '.join(wrong)} still serve another version")
        except FleetError as exc:
            check = Check("fleet", "fail", None, None, None, str(exc))
            target.steps.append(Verdict("full", "fail", (check,), {}).to_json())
            self.rollout.save(record)
            raise _StepFailed(cloud, "full", str(exc), [check.to_json()]) from None
        passed = [s for s in target.steps if s.get("outcome") == "pass"]
        steps = ", ".join(dict.fromkeys(s["step"] for s in passed))
        entry = self.rollout.promote(
            target,
            self.registry.cfg.promote_alias,
            f"rollout passed in {cloud}: {steps}",
            decision=self.rollout.decision(target),
        )
        target.phase, target.finished_at = "done", self.rollout.now()
        self.rollout.save(record)
        where = f"ledger entry {entry}" if entry is not None else "already in the ledger"
        steps_log.info(
            "%s full: %s serves 100%%, production in %s (%s)",
            cloud,
            short(self.version),
            cloud,
            where,
        )

    # ------------------------------------------------------------------ the ledger
    def _name_candidate(self, target: TargetRecord) -> None:
        """Make sure ``candidate`` names the version in the target's cloud during its rollout
        (the register step did, unless the version is deployed by hand)."""
        alias = self.registry.cfg.candidate_alias
        self.rollout.promote(target, alias, f"rollout of {self.version} to {target.cloud} begins")


def deploy(
    ctx: Context,
    version: str,
    *,
    through: str | None = None,
    require_approval: bool | None = None,
    fleets: Fleets = "local",
) -> RolloutRecord:
    """Roll ``version`` out to every target, or up to ``through`` (see :class:`Controller`)."""
    return Controller(
        ctx, version, through=through, require_approval=require_approval, fleets=fleets
    ).run()


def approve(ctx: Context, reason: str) -> RolloutRecord:
    """Approve the latest rollout as ``ctx.actor`` from the command line (see
    :func:`pipelines.rollout.approval.decide`).

    Raises:
        InputError: No rollout waits for approval.
        DecisionConflict: It was rejected first.
    """
    version = waiting_version(ctx)
    decide(ctx, version, "approve", ctx.actor, reason, "cli")
    record = Records(ctx.run_dir).load(version)
    assert record is not None
    return record
