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

With ``deploy.require_approval``, the rollout waits after the first target (status
``awaiting_approval``) until ``recflow deploy approve``.

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
from pipelines.rollout.context import Context, Rollout, log, short, steps_log
from pipelines.rollout.environment import Environment, LocalEnvironment
from pipelines.rollout.fleet.client import FleetError
from pipelines.rollout.fleet.local import FleetStartError
from pipelines.rollout.metrics import MetricsError
from pipelines.rollout.record import (
    APPROVAL,
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


class Controller:
    """Rolls one version out to every target (see the module's docstring).

    Args:
        ctx: The context.
        version: The version (registered, passed by the gate).
        environment: What the rollout acts on (default: the local fleets).
    """

    def __init__(self, ctx: Context, version: str, environment: Environment | None = None):
        self.rollout = Rollout(ctx, version)
        self.ctx, self.cfg, self.version = ctx, self.rollout.cfg, version
        self.registry, self.records = self.rollout.registry, self.rollout.records
        if environment is None:
            environment = LocalEnvironment(ctx, self.records.folder(version), self.registry)
        self.environment = environment
        self.steps = Steps(self.rollout, environment, self._interrupted)

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

    def _open_record(self) -> RolloutRecord:
        latest = self.records.latest()
        if latest is not None and latest.version != self.version and latest.status not in FINISHED:
            raise InputError(
                f"the rollout of {latest.version} is unfinished ({latest.where()}): resume it with "
                f"recflow deploy {latest.version}, or roll it back with recflow deploy --rollback"
            )
        record = self.records.load(self.version)
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
        elif record.status not in FINISHED:
            record.resumes += 1
            self.rollout.save(record)
            steps_log.info("resuming the rollout of %s at %s", short(self.version), record.where())
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
            if index > 0 and self.cfg.require_approval and record.approval is None:
                self._await_approval(record, target)
            self._run_target(record, target)
        record.status = "succeeded"
        self.rollout.save(record)
        log.info("rollout of %s succeeded in %s", self.version, ", ".join(self.cfg.targets))

    def _interrupted(self) -> bool:
        return self.records.read_request(self.version, ROLLBACK) is not None

    def _check_rollback(self) -> None:
        request = self.records.read_request(self.version, ROLLBACK)
        if request is not None:
            raise _RollbackAsked(request)

    def _await_approval(self, record: RolloutRecord, target: TargetRecord) -> None:
        record.status = "awaiting_approval"
        self.rollout.save(record)
        steps_log.info(
            "%s done; waiting for approval before %s: recflow deploy approve",
            ", ".join(t.cloud for t in record.targets if t.phase == "done"),
            target.cloud,
        )
        found: dict[str, dict[str, Any]] = {}

        def approved() -> bool:
            self._check_rollback()
            approval = self.records.read_request(self.version, APPROVAL)
            if approval is not None:
                found["approval"] = approval
            return approval is not None

        if not wait_until(approved, timeout_s=self.cfg.approval_timeout_s, interval_s=0.5):
            raise AwaitingApproval(
                f"the rollout of {self.version} still waits for approval before "
                f"{target.cloud}; after recflow deploy approve, run recflow deploy "
                f"{self.version} again to continue"
            )
        approval = found["approval"]
        record.approval = approval
        record.status = "running"
        self.rollout.save(record)
        self.records.clear_request(self.version, APPROVAL)
        steps_log.info("approved by %s: %s next", approval.get("actor", "someone"), target.cloud)

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


def deploy(ctx: Context, version: str) -> RolloutRecord:
    """Roll ``version`` out to every target (see :class:`Controller`)."""
    return Controller(ctx, version).run()


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
