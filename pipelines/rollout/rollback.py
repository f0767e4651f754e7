"""Rolling a rollout back: every target it touched returns to its stable version, newest first.

The fleets go first, all at once (every user to stable, no shadow, the candidate unloaded),
then the ledger: in each target's cloud, ``production`` (where the rollout had completed) and
``candidate`` point back at stable, each entry a rollback of the one that set it, with the
failed step, its checks and the thresholds as the decision. A first rollout has nothing to
return to: a target where it completed keeps the version, one where it did not has its fleet
stopped.

A controller rolls back when a step fails or when ``recflow deploy --rollback`` asks it to
(:func:`request_rollback` leaves the request and waits); with no controller running, the
rollback is done by the command itself, on the ledger only (no local fleet runs then, and
each starts from production when it next starts).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.waiting import wait_until
from pipelines.registry import ledger
from pipelines.registry.aliases import read_alias
from pipelines.registry.promotion import promote
from pipelines.rollout.context import Context, Rollout, log, short, steps_log
from pipelines.rollout.environment import Environment
from pipelines.rollout.fleet.client import FleetError
from pipelines.rollout.record import ROLLBACK, Records, RolloutRecord, TargetRecord


def manual_failure(
    rollout: Rollout, record: RolloutRecord, request: dict[str, Any]
) -> dict[str, Any]:
    """The record's ``failure`` of a rollback a person asked for (``request``: reason, actor)."""
    return {
        "cloud": record.current.cloud if record.current else None,
        "step": record.where(),
        "reason": f"manual rollback: {request.get('reason') or 'no reason given'}",
        "checks": [],
        "manual": True,
        "actor": request.get("actor"),
        "at": rollout.now(),
    }


def roll_back(
    rollout: Rollout,
    record: RolloutRecord,
    failure: dict[str, Any],
    environment: Environment | None,
) -> None:
    """Every touched target back to stable, newest first: the fleets at once, then the ledger.

    Args:
        rollout: The rollout.
        record: Its record (saved after each target).
        failure: Why (the record's ``failure``: cloud, step, reason, checks, manual; a
            person's rollback names its ``actor``, who the ledger entries name too, and a
            rejection its ``approval`` decision).
        environment: Where the rollout's fleets run; None when none runs (by hand).
    """
    version = rollout.version
    # a person's rollback (or rejection) is theirs in the ledger, a failed step the controller's
    actor = str(failure.get("actor") or rollout.ctx.actor)
    where = f"{failure['cloud']} {failure['step']}" if failure["cloud"] else failure["step"]
    reason = f"rollout of {version} stopped at {where}: {failure['reason']}"
    targets = [
        t
        for t in reversed(record.touched)
        if t.phase not in ("rolled_back", "kept") and t.note != "already production"
    ]
    for target in targets:
        if environment is None or not environment.running(target.cloud):
            continue
        if target.first_model or target.stable is None:
            continue
        try:
            environment.roll_back(target.cloud, target.stable, version)
        except FleetError as exc:
            log.error("%s fleet did not roll back cleanly: %s", target.cloud, exc)
    for target in targets:
        if target.first_model:
            _roll_back_first(rollout, record, target, environment)
            continue
        stable = target.stable
        assert stable is not None
        decision = rollout.decision(
            target,
            failed_step=where,
            failed_checks=failure["checks"],
            manual=failure["manual"],
            **({"actor": actor} if failure["manual"] else {}),
            **({"approval": failure["approval"]} if failure.get("approval") else {}),
        )
        cfg = rollout.registry.cfg
        written = []
        for alias in (cfg.promote_alias, cfg.candidate_alias):
            seq = _withdraw(rollout, alias, target.cloud, stable, reason, decision, actor)
            if seq is not None:
                written.append(seq)
        target.ledger.extend(written)
        target.phase, target.finished_at = "rolled_back", rollout.now()
        rollout.save(record)
        served = (
            "serves 100%, candidate unloaded"
            if environment is not None and environment.running(target.cloud)
            else "is production again"
        )
        steps_log.warning(
            "%s rolled back: stable %s %s (ledger %s)",
            target.cloud,
            short(stable),
            served,
            ", ".join(f"entry {n}" for n in written) or "unchanged",
        )
    record.status = "rolled_back"
    record.failure = failure
    rollout.save(record)


def _roll_back_first(
    rollout: Rollout, record: RolloutRecord, target: TargetRecord, environment: Environment | None
) -> None:
    """A first rollout has no stable version to return to."""
    if target.phase == "done":
        target.phase = "kept"
        target.note = f"first version in {target.cloud}: kept, there is no earlier one to serve"
    else:
        if environment is not None:
            environment.stop(target.cloud)
        target.phase = "rolled_back"
        target.note = (
            f"first rollout in {target.cloud}: the fleet was stopped, nothing serves there"
        )
    target.finished_at = rollout.now()
    rollout.save(record)
    steps_log.warning("%s: %s", target.cloud, target.note)


def _withdraw(
    rollout: Rollout,
    alias: str,
    cloud: str,
    stable: str,
    reason: str,
    decision: dict[str, Any],
    actor: str,
) -> int | None:
    """Point ``alias`` in ``cloud`` back at ``stable`` if it names the version, as a rollback
    of the entry that set it, by ``actor``; the new entry's number."""
    registry, ctx = rollout.registry, rollout.ctx
    state = read_alias(registry.store(cloud), alias)
    if state is None or state.version != rollout.version:
        return None
    setting = ledger.recorded(registry.record, state.change)
    entry = promote(
        registry,
        stable,
        alias,
        cloud,
        reason=reason,
        actor=actor,
        at=ctx.clock(),
        run=ctx.run,
        action="rollback",
        rolls_back=setting.seq if setting else None,
        decision=decision,
    )
    return entry.seq if entry else None


def roll_back_by_hand(ctx: Context, version: str, reason: str) -> RolloutRecord:
    """Roll back ``version``'s rollout when no controller runs it (the ledger only).

    Raises:
        InputError: The version was never rolled out, or is rolled back already, or is
            production nowhere any more.
        RolloutBusy: A controller is running (ask it with a rollback request instead).
    """
    rollout = Rollout(ctx, version)
    with rollout.records.lock():
        record = rollout.records.load(version)
        if record is None:
            raise InputError(f"version {version} was never rolled out: nothing to roll back")
        if record.status == "rolled_back":
            raise InputError(
                f"the rollout of {version} is rolled back already "
                f"({(record.failure or {}).get('reason')})"
            )
        if record.status == "succeeded" and not any(
            rollout.production(t.cloud) == version for t in record.targets
        ):
            raise InputError(
                f"version {version} is production in none of "
                f"{', '.join(t.cloud for t in record.targets)} any more: roll back the "
                "rollout that replaced it"
            )
        request = {"reason": reason, "actor": ctx.actor, "at": rollout.now()}
        roll_back(rollout, record, manual_failure(rollout, record, request), None)
        return record


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
        return roll_back_by_hand(ctx, record.version, reason)
    records.write_request(
        record.version,
        ROLLBACK,
        {"reason": reason, "actor": ctx.actor, "at": ctx.clock().isoformat()},
    )

    def rolled_back() -> RolloutRecord | None:
        current = records.load(record.version)
        if current is not None and current.status == "rolled_back":
            return current
        if not records.controller_running():
            # it finished before it saw the request: roll back here
            with contextlib.suppress(InputError):
                return roll_back_by_hand(ctx, record.version, reason)
        return None

    done = wait_until(rolled_back, timeout_s=wait_s, interval_s=0.5)
    if done is None:
        raise RecflowError(
            f"the controller of {record.version} did not roll back within {wait_s:.0f} s; the "
            "request stays and is carried out when it checks next"
        )
    return done
