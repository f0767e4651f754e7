"""The decision before a rollout's later targets: approve or reject, with one source of truth.

The decision is the rollout's ``approval.json`` (``pipelines.rollout.record``), written once:
the first decision wins and stays; the same decision again is answered with the one that
stands, a different one is refused naming who decided first, when and through what. Every way
of deciding goes through :func:`decide`: ``recflow deploy approve|reject`` (via ``cli``) and the
Airflow approval task (via ``airflow``), and every reader through :func:`read_decision`: the
controller waiting in-process, ``recflow deploy --target`` for a later target, ``recflow deploy
status``. So the UI and the command line cannot disagree.

A reject rolls back what the rollout deployed (the first target back to its previous
production; fleets and ledger when its controller still runs, the ledger only when none does),
and the ledger entries of the rollback name the person who rejected and why. A wait that times
out is not a decision: a caller that wants a timeout to count as a reject records one.

:func:`approval_summary` is what the approver reads: the gate's verdict, the first target's
step figures from the rollout record, and where the gate and monitoring reports are.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.io import sha256_file
from pipelines.core.waiting import wait_until
from pipelines.registry.clouds import open_registry
from pipelines.registry.errors import RegistryError
from pipelines.registry.versions import read_version
from pipelines.rollout.context import Context, Rollout, steps_log
from pipelines.rollout.record import (
    APPROVAL,
    FINISHED,
    Records,
    RolloutBusy,
    RolloutRecord,
    TargetRecord,
)
from pipelines.rollout.rollback import roll_back

DecisionWord = Literal["approve", "reject"]
Via = Literal["cli", "airflow"]

# where the evaluate stage leaves the candidate's gate verdict and report (dvc.yaml)
GATE_FOLDER = Path("models/candidate/evaluation")

_PAST = {"approve": "approved", "reject": "rejected"}


class DecisionConflict(InputError):
    """Another decision was recorded first; it stands."""


@dataclass(frozen=True)
class Decision:
    """A person's decision on the targets after the first one.

    Attributes:
        version: The version rolled out.
        decision: ``approve`` (the next targets go on) or ``reject`` (roll back).
        actor: Who decided.
        reason: Why.
        via: Where: ``cli`` or ``airflow``.
        at: When (ISO time).
        before: The target the decision lets go on, or not.
    """

    version: str
    decision: DecisionWord
    actor: str
    reason: str
    via: Via
    at: str
    before: str

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    def describe(self) -> str:
        """``rejected by alice via airflow at 2026-12-02T06:00:00+00:00: p99 too high``."""
        return f"{_PAST[self.decision]} by {self.actor} via {self.via} at {self.at}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any, where: Path) -> Decision:
        """Parse a decision file.

        Raises:
            InputError: It is not a decision.
        """
        try:
            fields = {name: raw[name] for name in cls.__dataclass_fields__}
            if fields["decision"] not in get_args(DecisionWord):
                raise ValueError(f"decision {fields['decision']!r}")
            if fields["via"] not in get_args(Via):
                raise ValueError(f"via {fields['via']!r}")
            if not all(isinstance(value, str) for value in fields.values()):
                raise ValueError("every field is text")
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"approval decision {where} is malformed: {exc}") from None
        return cls(**fields)


def read_decision(ctx: Context, version: str) -> Decision | None:
    """The decision recorded for ``version``'s rollout, None when there is none yet.

    Raises:
        InputError: The decision file is unreadable or malformed.
    """
    records = Records(ctx.run_dir)
    raw = records.read_request(version, APPROVAL)
    if raw is None:
        return None
    return Decision.from_json(raw, records.folder(version) / APPROVAL)


def gated_target(record: RolloutRecord) -> TargetRecord | None:
    """The target a decision is for now: the first one not begun after the first target, with
    every target before it done (None: the rollout does not stand between two targets)."""
    if record.status in FINISHED:
        return None
    for index, target in enumerate(record.targets):
        if target.phase == "done":
            continue
        return target if index > 0 and target.phase == "pending" else None
    return None


def waiting_version(ctx: Context) -> str:
    """The latest rollout's version, for a decision that names none.

    Raises:
        InputError: There was no rollout yet.
    """
    record = Records(ctx.run_dir).latest()
    if record is None:
        raise InputError("no rollout waits for approval (latest rollout: none yet)")
    return record.version


def decide(
    ctx: Context,
    version: str,
    decision: DecisionWord,
    actor: str,
    reason: str,
    via: Via,
    *,
    wait_s: float = 300.0,
) -> Decision:
    """Record a decision on the targets after the first one; on ``reject``, roll back.

    The first decision wins (create-if-absent): the same decision again returns the one that
    stands, a different one is refused. A reject's rollback is done by the controller when one
    runs (this waits up to ``wait_s`` for it), else here on the ledger.

    Args:
        ctx: The context.
        version: The version whose rollout is decided on.
        decision: ``approve`` or ``reject``.
        actor: Who decides (the ledger's actor of a reject's rollback).
        reason: Why (a reject needs one).
        via: ``cli`` or ``airflow``.
        wait_s: How long to wait for a running controller to roll back on a reject.

    Returns:
        The decision that stands.

    Raises:
        DecisionConflict: A different decision was recorded first (it is named).
        InputError: The rollout does not stand between two targets (none began, the first
            target is not done yet, or a later one has begun), or a reject has no reason.
        RecflowError: A running controller did not roll back within ``wait_s``.
    """
    if decision not in get_args(DecisionWord):
        raise InputError(f"a decision is approve or reject, not {decision!r}")
    if via not in get_args(Via):
        raise InputError(f"a decision comes via cli or airflow, not {via!r}")
    if decision == "reject" and not reason.strip():
        raise InputError("a reject needs a reason (--reason)")
    actor = actor.strip() or "unknown"
    stands = read_decision(ctx, version)
    if stands is None:
        stands = _record(ctx, version, decision, actor, reason.strip() or _PAST[decision], via)
    if stands.decision != decision:
        raise DecisionConflict(
            f"the rollout of {version} was {stands.describe()}; that decision stands, so it "
            f"cannot be {_PAST[decision]} now"
        )
    if not stands.approved:
        _carry_out_reject(ctx, stands, wait_s)
    return stands


def _record(
    ctx: Context, version: str, decision: DecisionWord, actor: str, reason: str, via: Via
) -> Decision:
    """Write the decision unless another is there by now; the one that stands."""
    records = Records(ctx.run_dir)
    record = records.load(version)
    target = gated_target(record) if record is not None else None
    if record is None or target is None:
        where = f"{record.version}: {record.where()}" if record else f"{version}: none"
        raise InputError(f"no rollout waits for approval (latest rollout: {where})")
    mine = Decision(
        version=version,
        decision=decision,
        actor=actor,
        reason=reason,
        via=via,
        at=ctx.clock().astimezone(dt.UTC).isoformat(),
        before=target.cloud,
    )
    raw, created = records.write_request_once(version, APPROVAL, mine.to_json())
    stands = Decision.from_json(raw, records.folder(version) / APPROVAL)
    if created:
        steps_log.info("%s: %s", version, stands.describe())
    return stands


def reject_failure(rollout: Rollout, decision: Decision) -> dict[str, Any]:
    """The record's ``failure`` of a rejected rollout: the rollback's reason and actor (the
    rejection stops the rollout before the target it was for)."""
    return {
        "cloud": None,
        "step": f"the approval before {decision.before}",
        "reason": f"{_PAST[decision.decision]} by {decision.actor} via {decision.via}: "
        f"{decision.reason}",
        "checks": [],
        "manual": True,
        "actor": decision.actor,
        "approval": decision.to_json(),
        "at": rollout.now(),
    }


def _carry_out_reject(ctx: Context, decision: Decision, wait_s: float) -> RolloutRecord:
    """Roll the rejected rollout back: here when no controller runs, else by the controller
    (it reads the decision at its next check); waits until the record says rolled back."""
    records = Records(ctx.run_dir)
    version = decision.version

    def rolled_back() -> RolloutRecord | None:
        record = records.load(version)
        if record is None or record.status == "rolled_back":
            return record
        try:
            return _reject_by_hand(ctx, decision)
        except RolloutBusy:
            return None  # its controller rolls back at its next check

    done = wait_until(rolled_back, timeout_s=wait_s, interval_s=0.5)
    if done is None:
        raise RecflowError(
            f"the controller of {version} did not roll back within {wait_s:.0f} s; the reject "
            "stands and it rolls back when it checks next"
        )
    return done


def _reject_by_hand(ctx: Context, decision: Decision) -> RolloutRecord:
    """The rollback of a rejected rollout no controller runs (the ledger only).

    Raises:
        RolloutBusy: A controller runs it.
    """
    rollout = Rollout(ctx, decision.version)
    with rollout.records.lock():
        record = rollout.records.load(decision.version)
        if record is None:
            raise InputError(f"version {decision.version} was never rolled out")
        if record.status != "rolled_back":
            roll_back(rollout, record, reject_failure(rollout, decision), None)
        return record


# ---------------------------------------------------------------------------- the summary
def approval_summary(ctx: Context, version: str) -> str:
    """Markdown for the approver: the gate's verdict, the first target's step figures from the
    rollout record, links to the gate and monitoring reports, and the decision if any.

    Raises:
        InputError: ``version`` was never rolled out.
    """
    record = Records(ctx.run_dir).load(version)
    if record is None:
        raise InputError(f"version {version} was never rolled out: nothing to approve")
    target = gated_target(record)
    before = target.cloud if target else (record.current.cloud if record.current else None)
    title = f"before {before}" if before else "(no target waits)"
    lines = [f"## Rollout of `{version}` {title}", "", f"Status: {record.where()}.", ""]
    lines += _gate_lines(ctx, version)
    for done in record.targets:
        if done.phase == "pending":
            continue
        lines += ["", *_target_lines(ctx, done)]
    decision = read_decision(ctx, version)
    lines += [
        "",
        "### Decision",
        "",
        decision.describe()
        if decision
        else "None yet: `recflow deploy approve|reject --reason ...`, or the approval task.",
    ]
    return "\n".join(lines) + "\n"


def _gate_lines(ctx: Context, version: str) -> list[str]:
    lines = ["### Gate"]
    try:
        registered = read_version(open_registry(ctx.params, ctx.root).record, version)
    except (RegistryError, RecflowError) as exc:
        return [*lines, "", f"The version cannot be read from the registry: {exc}"]
    gate = registered.gate
    lines += [
        "",
        f"Verdict **{gate.get('verdict')}**"
        + (" (first model: bootstrap rule)" if gate.get("bootstrap") else "")
        + (", blocked" if gate.get("blocked") else ""),
        "",
    ]
    # the candidate's folder holds this version's evaluation only if its verdict is the same file
    folder = ctx.root / GATE_FOLDER
    local = folder / "verdict.json"
    try:
        same = local.is_file() and sha256_file(local) == (
            registered.file("evaluation/verdict.json").sha256
        )
    except RegistryError:
        same = False
    if same:
        lines += _gate_checks(local)
        for name in ("report.md", "report.html"):
            if (folder / name).is_file():
                path = (GATE_FOLDER / name).as_posix()
                lines.append(f"- Gate report: [{path}]({path})")
    else:
        lines.append(
            f"- Gate report: `evaluation/report.md` of version {version} in the registry "
            f"(`recflow registry show {version}`)"
        )
    return lines


def _gate_checks(verdict: Path) -> list[str]:
    try:
        raw = json.loads(verdict.read_text(encoding="utf-8"))
        checks = [c for c in raw.get("checks", []) if isinstance(c, dict)]
    except (OSError, ValueError, AttributeError):
        return []
    if not checks:
        return []
    counts: dict[str, int] = {}
    for check in checks:
        status = str(check.get("status"))
        counts[status] = counts.get(status, 0) + 1
    out = ["- Checks: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))]
    out += [
        f"  - {c.get('name')}: {c.get('status')}, {c.get('detail')}"
        for c in checks
        if c.get("status") != "pass"
    ]
    return out


def _figure(value: Any, digits: int) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def _against(check: dict[str, Any] | None, digits: int) -> str:
    if check is None:
        return "-"
    text = _figure(check.get("value"), digits)
    if check.get("baseline") is not None:
        text += f" (stable {_figure(check.get('baseline'), digits)})"
    return text


def _target_lines(ctx: Context, target: TargetRecord) -> list[str]:
    lines = [
        f"### {target.cloud}: {target.phase.replace('_', ' ')}"
        + (f", from stable `{target.stable}`" if target.stable else ", a first rollout"),
        "",
    ]
    if target.note:
        lines += [target.note, ""]
    lines += [
        "| step | verdict | requests per arm | error rate | p99 latency (ms) | hit rate |",
        "|---|---|---|---|---|---|",
    ]
    for step in target.steps:
        checks = {c.get("metric"): c for c in step.get("checks", [])}
        window = step.get("window") or {}
        arms = ", ".join(
            f"{name} {arm.get('requests', arm.get('scored'))}"
            for name, arm in window.items()
            if name != "replay" and isinstance(arm, dict)
        )
        lines.append(
            f"| {step.get('step')} | {step.get('outcome')} | {arms or '-'} | "
            f"{_against(checks.get('error_rate'), 4)} | "
            f"{_against(checks.get('latency_p99_ms'), 1)} | "
            f"{_against(checks.get('hit_rate'), 3)} |"
        )
    lines.append("")
    lines.append(f"- Monitoring report: {_monitoring_report(ctx, target.cloud)}")
    return lines


def _monitoring_report(ctx: Context, cloud: str) -> str:
    """The latest monitoring window's report of ``cloud``, as a link relative to the root."""
    out = ctx.params.monitor.out
    folder = out if out.is_absolute() else ctx.root / out
    try:
        latest = json.loads((folder / cloud / "latest.json").read_text(encoding="utf-8"))
        window = Path(cast(str, latest["summary"])).parent
    except (OSError, ValueError, KeyError, TypeError):
        return f"none yet for {cloud} (`recflow monitor --cloud {cloud}` writes one)"
    report = folder / cloud / window / "report.html"
    if not report.is_file():
        return f"none yet for {cloud} (`recflow monitor --cloud {cloud}` writes one)"
    path = (report.relative_to(ctx.root) if report.is_relative_to(ctx.root) else report).as_posix()
    return f"[{path}]({path})"
