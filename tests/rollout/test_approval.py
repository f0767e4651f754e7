"""The decision between a rollout's targets, one source of truth for the command line and the
Airflow approval task: the first decision wins (two deciders racing, started together by a
barrier), the same decision again is idempotent, a different one is refused naming the first;
a reject rolls the first target back in the registry with who and why in the ledger, and a
later deploy of the next target fails naming who rejected.

The rollout here stands where ``recflow deploy --target private`` leaves it (the record and
the registry are real; the fleets have stopped, as they do when that command ends); the same
path with running fleets is in ``test_targets.py``.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelines.commands.deploy import main as command
from pipelines.core.errors import InputError
from pipelines.registry import ledger
from pipelines.registry.promotion import promote
from pipelines.rollout.approval import (
    Decision,
    DecisionConflict,
    approval_summary,
    decide,
    read_decision,
)
from pipelines.rollout.controller import RolloutFailed, deploy
from pipelines.rollout.record import APPROVAL, Records, RolloutRecord, TargetRecord
from pipelines.stages.deploy import main
from tests.rollout.conftest import AT, Project

CANARY_STEP = {
    "step": "canary 10%",
    "outcome": "pass",
    "checks": [
        {"metric": "error_rate", "outcome": "pass", "value": 0.0, "baseline": 0.001,
         "limit": 0.01, "detail": "error rate"},
        {"metric": "latency_p99_ms", "outcome": "pass", "value": 12.5, "baseline": 11.0,
         "limit": 100.0, "detail": "p99"},
        {"metric": "hit_rate", "outcome": "pass", "value": 0.52, "baseline": 0.5,
         "limit": 0.45, "detail": "hits"},
    ],
    "window": {
        "replay": {"sent": 400},
        "stable": {"requests": 360, "errors": 0},
        "canary": {"requests": 40, "errors": 0},
    },
}  # fmt: skip


def _between_targets(project: Project, served: Path) -> tuple[str, str]:
    """A rollout whose private target is done (production there) and public pending."""
    stable = project.version(served, "stable")
    project.make_production(stable)
    version = project.version(served, "next")
    promote(
        project.registry(), version, "production", "private",
        reason="rollout passed in private: infra, shadow, canary 10%", actor="test:rollout", at=AT,
    )  # fmt: skip
    infra = {"step": "infra", "outcome": "pass", "checks": [], "window": {}}
    private = TargetRecord("private", phase="done", stable=stable, steps=[infra, CANARY_STEP])
    Records(project.root / "deploy").save(
        RolloutRecord(
            version=version,
            targets=[private, TargetRecord("public")],
            actor="test:rollout",
            created_at=AT.isoformat(),
            updated_at=AT.isoformat(),
            status="awaiting_approval",
        )
    )
    return stable, version


def _decide_together(project: Project, version: str, *deciders: tuple[str, str]) -> list[Any]:
    """``decide`` from one thread per (decision, actor), released at once by a barrier; each
    thread's decision or exception."""
    barrier = threading.Barrier(len(deciders))
    outcomes: list[Any] = [None] * len(deciders)

    def run(index: int, decision: Any, actor: str) -> None:
        ctx = project.context()
        barrier.wait()
        try:
            outcomes[index] = decide(ctx, version, decision, actor, f"{actor}'s call", "cli")
        except Exception as exc:
            outcomes[index] = exc

    threads = [
        threading.Thread(target=run, args=(i, decision, actor))
        for i, (decision, actor) in enumerate(deciders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    return outcomes


def test_of_two_different_decisions_at_once_the_first_wins(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    stable, version = _between_targets(project, served_folder)

    outcomes = _decide_together(project, version, ("approve", "alice"), ("reject", "bob"))

    won = [o for o in outcomes if isinstance(o, Decision)]
    lost = [o for o in outcomes if isinstance(o, DecisionConflict)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    winner = won[0]
    assert read_decision(project.context(), version) == winner
    # the loser is told who decided first, when, and through what
    assert f"{winner.actor} via cli at {winner.at}" in str(lost[0])
    record = Records(project.root / "deploy").load(version)
    assert record is not None
    if winner.approved:
        assert record.status == "awaiting_approval"
        assert project.production("private") == version
    else:
        assert record.status == "rolled_back"
        assert project.production("private") == stable


def test_of_many_writers_of_the_decision_file_exactly_one_creates_it(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    records = Records(project.root / "deploy")
    writers = 8
    barrier = threading.Barrier(writers)
    created: list[bool] = []

    def write(n: int) -> None:
        barrier.wait()
        stands, mine = records.write_request_once("0123456789abcdef", APPROVAL, {"writer": n})
        created.append(mine)
        assert mine == (stands == {"writer": n})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(created) == [False] * (writers - 1) + [True]
    folder = records.folder("0123456789abcdef")
    # no temporary file is left beside the decision
    assert [p.name for p in folder.iterdir()] == [APPROVAL]


def test_the_same_decision_twice_is_idempotent(make_project: Any, served_folder: Path) -> None:
    project: Project = make_project()
    _, version = _between_targets(project, served_folder)
    ctx = project.context()

    first = decide(ctx, version, "approve", "alice", "canary figures look fine", "airflow")
    data = (Records(project.root / "deploy").folder(version) / APPROVAL).read_bytes()
    again = decide(ctx, version, "approve", "carol", "me too", "cli")

    assert again == first and first.actor == "alice" and first.via == "airflow"
    assert first.before == "public"
    assert (Records(project.root / "deploy").folder(version) / APPROVAL).read_bytes() == data
    with pytest.raises(DecisionConflict) as refused:
        decide(ctx, version, "reject", "bob", "too late", "cli")
    assert f"was approved by alice via airflow at {first.at}: canary figures look fine" in str(
        refused.value
    )
    assert project.production("private") == version


def test_a_reject_rolls_private_back_and_the_ledger_names_who_and_why(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    stable, version = _between_targets(project, served_folder)
    ctx = project.context()
    before = len(ledger.entries(project.registry().record))

    decision = decide(ctx, version, "reject", "bob", "p99 too close to the limit", "airflow")

    assert not decision.approved
    assert project.production("private") == stable
    assert project.alias("candidate", "private") == stable
    assert project.production("public") == stable
    back = ledger.entries(project.registry().record)[before:]
    assert {(e.cloud, e.alias, e.action, e.version) for e in back} == {
        ("private", "production", "rollback", stable),
        ("private", "candidate", "rollback", stable),
    }
    for entry in back:
        assert entry.change["actor"] == "bob"
        assert entry.change["reason"] == (
            f"rollout of {version} stopped at the approval before public: rejected by bob via "
            "airflow: p99 too close to the limit"
        )
        evidence = entry.change["evidence"]["decision"]
        assert evidence["actor"] == "bob" and evidence["manual"] is True
        assert evidence["approval"]["reason"] == "p99 too close to the limit"
    record = Records(project.root / "deploy").load(version)
    assert record is not None and record.status == "rolled_back"
    assert record.target("private").phase == "rolled_back"
    assert record.target("public").phase == "pending"
    # the same reject again changes nothing more
    assert decide(ctx, version, "reject", "dave", "agreed", "cli") == decision
    assert len(ledger.entries(project.registry().record)) == before + 2


def test_deploying_the_next_target_after_a_reject_fails_naming_who(
    make_project: Any, served_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project({"require_approval": True})
    stable, version = _between_targets(project, served_folder)
    decide(project.context(), version, "reject", "bob", "checkout errors", "cli")
    args = ["--params", str(project.params_file), "--prepared", str(project.prepared)]

    assert main([*args, version, "--target", "public"]) == 1

    err = capsys.readouterr().err
    assert "was rolled back (rejected by bob via cli: checkout errors)" in err
    assert project.production("public") == stable


def test_a_reject_recorded_before_its_rollback_is_carried_out_by_the_next_deploy(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    stable, version = _between_targets(project, served_folder)
    # the decision stands, but whoever wrote it stopped before rolling back
    records = Records(project.root / "deploy")
    rejected = Decision(version, "reject", "bob", "latency", "cli", AT.isoformat(), "public")
    records.write_request_once(version, APPROVAL, rejected.to_json())

    named = re.escape(f"rejected by bob via cli at {AT.isoformat()}: latency")
    with pytest.raises(RolloutFailed, match=named):
        deploy(project.context(), version, through="public", require_approval=False)

    assert project.production("private") == stable and project.production("public") == stable
    record = records.load(version)
    assert record is not None and record.status == "rolled_back"
    assert record.target("public").phase == "pending"


def test_a_decision_is_refused_where_no_rollout_stands_between_targets(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    _, version = _between_targets(project, served_folder)
    ctx = project.context()
    with pytest.raises(InputError, match="a reject needs a reason"):
        decide(ctx, version, "reject", "bob", "  ", "cli")
    with pytest.raises(InputError, match="a decision is approve or reject, not 'maybe'"):
        decide(ctx, version, "maybe", "bob", "why", "cli")  # type: ignore[arg-type]
    records = Records(project.root / "deploy")
    record = records.load(version)
    assert record is not None
    record.target("private").phase = "canary"
    record.status = "running"
    records.save(record)
    with pytest.raises(InputError, match=r"no rollout waits for approval .*private canary"):
        decide(ctx, version, "approve", "alice", "early", "cli")
    assert read_decision(ctx, version) is None
    with pytest.raises(InputError, match="never rolled out"):
        approval_summary(ctx, "fedcba9876543210")


def test_a_malformed_decision_file_is_named(make_project: Any, served_folder: Path) -> None:
    project: Project = make_project()
    _, version = _between_targets(project, served_folder)
    path = Records(project.root / "deploy").folder(version) / APPROVAL
    path.write_text(json.dumps({"decision": "approve", "actor": "alice"}))
    with pytest.raises(InputError, match=f"approval decision {path} is malformed"):
        read_decision(project.context(), version)


def test_the_summary_shows_the_gate_the_private_figures_and_the_reports(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    _, version = _between_targets(project, served_folder)
    # the candidate's folder holds the gate verdict this version was registered with
    gate = project.root / "models" / "candidate" / "evaluation"
    gate.mkdir(parents=True)
    registered = project.root / "candidates" / "next" / "evaluation" / "verdict.json"
    (gate / "verdict.json").write_bytes(registered.read_bytes())
    (gate / "report.md").write_text("# gate\n")
    window = project.root / "reports" / "monitoring" / "private" / "20261201T000000Z--x"
    window.mkdir(parents=True)
    (window / "report.html").write_text("<html></html>")
    (window.parent / "latest.json").write_text(
        json.dumps({"summary": f"{window.name}/summary.json"})
    )

    summary = approval_summary(project.context(), version)

    assert summary.startswith(f"## Rollout of `{version}` before public\n")
    assert "Verdict **pass**\n\n- Gate report: [models/candidate/evaluation/report.md]" in summary
    assert (
        "| canary 10% | pass | canary 40, stable 360 | 0.0000 (stable 0.0010) | "
        "12.5 (stable 11.0) | 0.520 (stable 0.500) |"
    ) in summary
    assert f"- Monitoring report: [reports/monitoring/private/{window.name}/report.html]" in (
        summary
    )
    assert "None yet: `recflow deploy approve|reject" in summary
    decide(project.context(), version, "approve", "alice", "fine", "cli")
    assert "approved by alice via cli" in approval_summary(project.context(), version)


def test_the_approve_and_reject_commands(
    make_project: Any, served_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project()
    stable, version = _between_targets(project, served_folder)
    params = ["--params", str(project.params_file)]
    with pytest.raises(SystemExit) as stopped:
        command(["reject", *params])
    assert stopped.value.code == 2
    assert "--reason" in capsys.readouterr().err

    # as the Airflow task records it: the version the candidate alias names
    approve = ["--from-alias", "candidate", "--via", "airflow", "--actor", "alice"]
    assert command(["approve", *approve, "--reason", "looks good", *params]) == 0
    out = capsys.readouterr().out
    assert f"rollout of {version}: approved by alice via airflow at " in out
    assert command(["reject", "--version", version, "--reason", "no", *params]) == 2
    assert "was approved by alice via airflow" in capsys.readouterr().err
    assert command(["status", *params]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"rollout of {version}: awaiting_approval (approved; public next: recflow deploy "
        f"{version} --target public)"
    )
    assert any(line.startswith("  decision: approved by alice via airflow at ") for line in lines)
    assert command(["status", "--from-alias", "candidate", "--summary", *params]) == 0
    assert capsys.readouterr().out.startswith(f"## Rollout of `{version}` before public\n")
    assert command(["status", "--json", *params]) == 0
    assert json.loads(capsys.readouterr().out)["decision"]["actor"] == "alice"
    assert project.production("private") == version != stable
