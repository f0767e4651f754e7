"""A rollout one target at a time, as the DAG's deploy task per cloud runs it, on real fleets:
``recflow deploy --target private`` stops with the record open and nothing left running, a
rerun of a done target is a no-op, the decision is recorded by another command, and
``--target public`` resumes from the record; a reject while a controller waits in-process
rolls its running private fleet back, and the next target then fails naming who rejected."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.waiting import wait_until
from pipelines.registry import ledger
from pipelines.rollout.approval import decide, read_decision
from pipelines.rollout.controller import RolloutFailed, deploy
from pipelines.rollout.record import Records, RolloutRecord
from tests.rollout.conftest import PROJECT_ROOT, Project

pytestmark = pytest.mark.slow


def _record(project: Project, version: str) -> RolloutRecord:
    record = Records(project.root / "deploy").load(version)
    assert record is not None
    return record


def _recflow(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """``recflow deploy ...`` in its own process, as the DAG's task runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "deploy", *args, "--params",
         str(project.params_file)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )  # fmt: skip


def _deploy(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return _recflow(project, "--prepared", str(project.prepared), *args)


def _nothing_running(project: Project, version: str) -> bool:
    """No server of the rollout's fleets is left (each removes its worker report on exit)."""
    folder = Records(project.root / "deploy").folder(version) / "fleets"
    return not list(folder.rglob("workers/*.json"))


def _ledger_size(project: Project) -> int:
    return len(ledger.entries(project.registry().record))


def test_one_target_at_a_time_then_the_public_target_resumes(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    stable = project.version(served_folder, "stable")
    project.make_production(stable)
    version = project.version(served_folder, "next")

    # approval is off in params; the flag asks for it for this run
    private = _deploy(project, "--from-alias", "candidate", "--target", "private",
                      "--require-approval")  # fmt: skip

    assert private.returncode == 0, private.stdout[-3000:]
    assert f"recflow deploy {version} --target public" in private.stdout
    record = _record(project, version)
    assert record.status == "awaiting_approval"
    assert record.target("private").phase == "done" and record.target("public").phase == "pending"
    assert project.production("private") == version and project.production("public") == stable
    assert _nothing_running(project, version)
    private_steps = record.target("private").steps
    entries = _ledger_size(project)

    again = _deploy(project, "--from-alias", "candidate", "--target", "private")

    assert again.returncode == 0, again.stdout[-3000:]
    assert "private is done already" in again.stdout
    assert _record(project, version) == record  # not even a resume was counted
    assert _ledger_size(project) == entries

    decided = _recflow(project, "approve", "--actor", "alice", "--reason", "canary fine")
    assert decided.returncode == 0, decided.stdout
    assert f"rollout of {version}: approved by alice via cli" in decided.stdout

    public = _deploy(project, "--from-alias", "candidate", "--target", "public",
                     "--require-approval")  # fmt: skip

    assert public.returncode == 0, public.stdout[-3000:]
    resumed = f"resuming the rollout of {version[:12]}, waiting for approval before public"
    assert resumed in public.stdout
    done = _record(project, version)
    assert done.status == "succeeded"
    assert done.target("private").steps == private_steps  # nothing ran twice
    final = dict((s["step"], s["outcome"]) for s in done.target("public").steps)
    assert list(final) == ["infra", "shadow", "canary 10%", "canary 50%"]
    assert set(final.values()) == {"pass"}
    assert done.approval is not None and done.approval["actor"] == "alice"
    assert project.production("public") == version
    assert _nothing_running(project, version)
    # the last target done: a retry of the task changes nothing
    entries = _ledger_size(project)
    retry = _deploy(project, "--from-alias", "candidate", "--target", "public")
    assert retry.returncode == 0, retry.stdout[-3000:]
    assert _ledger_size(project) == entries and _record(project, version) == done


def test_without_approval_for_the_run_the_next_target_needs_no_decision(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project({"require_approval": True})
    stable = project.version(served_folder, "stable")
    project.make_production(stable)
    version = project.version(served_folder, "next")

    first = deploy(project.context(), version, through="private", require_approval=False)
    assert first.status == "running" and first.where() == "public pending"

    done = deploy(project.context(), version, through="public", require_approval=False)

    assert done.status == "succeeded" and done.approval is None
    assert read_decision(project.context(), version) is None
    assert project.production("private") == version == project.production("public")


def test_a_reject_while_the_controller_waits_rolls_its_fleet_back(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project({"require_approval": True})
    stable = project.version(served_folder, "stable")
    project.make_production(stable)
    version = project.version(served_folder, "next")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["record"] = deploy(project.context(), version)
        except Exception as exc:
            outcome["error"] = exc

    controller = threading.Thread(target=run, daemon=True)
    controller.start()
    # the limit only ends a hung test: nothing passes or fails by how fast it came
    waits = wait_until(
        lambda: (
            (r := Records(project.root / "deploy").load(version)) is not None
            and r.status == "awaiting_approval"
        ),
        timeout_s=180,
        interval_s=0.05,
    )
    assert waits, "the rollout never reached the approval"
    assert not _nothing_running(project, version)  # the private fleet still serves
    entries = _ledger_size(project)

    decision = decide(project.context(), version, "reject", "bob", "hit rate dipped", "airflow")

    controller.join(180)
    assert not controller.is_alive()
    error = outcome.get("error")
    assert isinstance(error, RolloutFailed), outcome
    assert f"rolled back: {decision.describe()}" in str(error)
    record = _record(project, version)
    assert record.status == "rolled_back" and record.target("private").phase == "rolled_back"
    assert project.production("private") == stable
    back = ledger.entries(project.registry().record)[entries:]
    assert {(e.alias, e.action, e.change["actor"]) for e in back} == {
        ("production", "rollback", "bob"),
        ("candidate", "rollback", "bob"),
    }
    assert all(e.change["reason"].endswith("rejected by bob via airflow: hit rate dipped")
               for e in back)  # fmt: skip
    assert _nothing_running(project, version)

    public = _deploy(project, version, "--target", "public")

    assert public.returncode == 1
    assert "rejected by bob via airflow: hit rate dipped" in public.stdout
    assert project.production("public") == stable
