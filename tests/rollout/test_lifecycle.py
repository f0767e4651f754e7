"""A rollout's life beyond the happy path, on real fleets: a controller killed mid-rollout
resumes where it was; the approval between the clouds; a rollback asked for by a person, while
the controller runs or after it finished; inconclusive steps held or failed; a first rollout that
fails; the dry run, which changes nothing."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.errors import InputError
from pipelines.core.waiting import wait_until
from pipelines.registry import ledger
from pipelines.rollout.controller import RolloutFailed, approve, deploy
from pipelines.rollout.record import Records, RolloutRecord
from pipelines.rollout.rollback import request_rollback
from tests.rollout import faults
from tests.rollout.conftest import LOAD_PROOF_LATENCY, PROJECT_ROOT, Project

pytestmark = pytest.mark.slow


def _record(project: Project, version: str) -> RolloutRecord | None:
    return Records(project.root / "deploy").load(version)


def _wait_for(condition: Any, timeout_s: float = 120.0, what: str = "") -> None:
    # the limit only ends a hung test: nothing passes or fails by how fast it came
    if not wait_until(condition, timeout_s=timeout_s, interval_s=0.05):
        raise AssertionError(f"timed out waiting for {what}")


class Background:
    """``deploy`` in a thread; its outcome (record or exception) once it ends."""

    def __init__(self, project: Project, version: str) -> None:
        self.outcome: Any = None
        self.thread = threading.Thread(target=self._run, args=(project, version), daemon=True)
        self.thread.start()

    def _run(self, project: Project, version: str) -> None:
        try:
            self.outcome = deploy(project.context(), version)
        except Exception as exc:
            self.outcome = exc

    def result(self, timeout_s: float = 180.0) -> Any:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the controller did not finish"
        return self.outcome


def _stable_and_next(project: Project, served: Path) -> tuple[str, str]:
    stable = project.version(served, "stable")
    project.make_production(stable)
    return stable, project.version(served, "next")


def _cli(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "deploy", "--params", str(project.params_file),
         "--prepared", str(project.prepared), *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _server_pids(project: Project, version: str) -> list[int]:
    folder = Records(project.root / "deploy").folder(version) / "fleets"
    return [int(p.stem) for p in folder.rglob("workers/*.json")]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # exited, waiting to be reaped


def test_a_killed_controller_resumes_where_it_was(make_project: Any, served_folder: Path) -> None:
    project: Project = make_project(
        {"targets": ["private"], "canary": {"weights": [0.1, 0.3, 0.5], "max_requests": 600}}
    )
    _, version = _stable_and_next(project, served_folder)
    first = _cli(project, version)
    try:
        _wait_for(
            lambda: (
                (r := _record(project, version)) is not None
                and r.target("private").phase == "canary"
                and r.target("private").canary_step >= 1
            ),
            what="the first canary step to pass",
        )
        servers = _server_pids(project, version)
        assert servers
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    # the servers go with their controller
    _wait_for(lambda: all(_gone(pid) for pid in servers), 60, "the fleet to stop")
    at_kill = _record(project, version)
    assert at_kill is not None and at_kill.status == "running"
    done_before = [s["step"] for s in at_kill.target("private").steps]

    again = _cli(project, version)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output[-3000:]
    assert f"resuming the rollout of {version[:12]} at private canary" in output
    record = _record(project, version)
    assert record is not None and record.status == "succeeded" and record.resumes == 1
    steps = [s["step"] for s in record.target("private").steps]
    # nothing that passed before the kill ran again
    assert steps[: len(done_before)] == done_before
    assert steps.count("shadow") == done_before.count("shadow")
    assert "canary 50%" in steps
    assert project.production("private") == version


def test_the_public_cloud_waits_for_approval(make_project: Any, served_folder: Path) -> None:
    project: Project = make_project({"require_approval": True})
    _, version = _stable_and_next(project, served_folder)
    with pytest.raises(InputError, match="no rollout waits for approval"):
        approve(project.context(), "too early")
    running = Background(project, version)
    _wait_for(
        lambda: (r := _record(project, version)) is not None and r.status == "awaiting_approval",
        what="the approval wait",
    )
    record = _record(project, version)
    assert record is not None
    assert record.target("private").phase == "done" and record.target("public").phase == "pending"
    assert project.production("private") == version and project.production("public") != version

    approve(project.context(), "private looks good")

    done = running.result()
    assert isinstance(done, RolloutRecord) and done.status == "succeeded"
    assert done.approval is not None and done.approval["reason"] == "private looks good"
    assert project.production("public") == version


def test_a_person_rolls_back_a_running_rollout(make_project: Any, served_folder: Path) -> None:
    project: Project = make_project({"require_approval": True})
    stable, version = _stable_and_next(project, served_folder)
    running = Background(project, version)
    _wait_for(
        lambda: (r := _record(project, version)) is not None and r.status == "awaiting_approval",
        what="the approval wait",
    )
    with pytest.raises(InputError, match="needs a reason"):
        request_rollback(project.context(), None, "  ")

    record = request_rollback(project.context(), None, "checkout errors downstream")

    assert record.status == "rolled_back"
    outcome = running.result()
    assert isinstance(outcome, RolloutFailed)
    assert "rolled back as asked by test:rollout: checkout errors downstream" in str(outcome)
    assert project.production("private") == stable and project.production("public") == stable
    back = ledger.entries(project.registry().record)[-2:]
    assert {(e.alias, e.action, e.version) for e in back} == {
        ("production", "rollback", stable),
        ("candidate", "rollback", stable),
    }
    assert all("manual rollback: checkout errors downstream" in e.change["reason"] for e in back)
    assert back[0].change["evidence"]["decision"]["manual"] is True
    with pytest.raises(InputError, match="rolled back already"):
        request_rollback(project.context(), version, "again")


def test_a_finished_rollout_is_rolled_back_by_hand(make_project: Any, served_folder: Path) -> None:
    project: Project = make_project({"targets": ["private"]})
    stable, version = _stable_and_next(project, served_folder)
    assert deploy(project.context(), version).status == "succeeded"
    assert project.production("private") == version

    record = request_rollback(project.context(), version, "users report odd results")

    assert record.status == "rolled_back" and record.target("private").phase == "rolled_back"
    assert project.production("private") == stable
    entry = ledger.entries(project.registry().record)[-2]
    assert entry.alias == "production" and entry.action == "rollback"
    assert entry.change["reason"].endswith("manual rollback: users report odd results")
    # a rolled-back version is not deployed again
    with pytest.raises(RolloutFailed, match="was rolled back"):
        deploy(project.context(), version)


def test_an_inconclusive_step_is_held_until_it_has_enough_answers(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project(
        {
            "targets": ["private"],
            "shadow": {"requests": 25},
            "canary": {"weights": [0.5], "max_requests": 600},
            "analysis": {"min_requests": 60, "latency_p99_ms": LOAD_PROOF_LATENCY},
        }
    )
    _, version = _stable_and_next(project, served_folder)
    record = deploy(project.context(), version)
    assert record.status == "succeeded"
    shadow = [s for s in record.target("private").steps if s["step"] == "shadow"]
    assert [(s["outcome"], s["window"].get("holds")) for s in shadow] == [
        ("inconclusive", None),
        ("inconclusive", 1),
        ("pass", 2),
    ]
    assert shadow[-1]["window"]["replay"]["sent"] == 75


def test_on_inconclusive_fail_stops_at_once(make_project: Any, served_folder: Path) -> None:
    project: Project = make_project(
        {
            "targets": ["private"],
            "on_inconclusive": "fail",
            "shadow": {"requests": 25},
            "analysis": {"min_requests": 60, "latency_p99_ms": LOAD_PROOF_LATENCY},
        }
    )
    stable, version = _stable_and_next(project, served_folder)
    with pytest.raises(RolloutFailed, match="private shadow failed: on_inconclusive is fail"):
        deploy(project.context(), version)
    assert project.production("private") == stable


def test_a_first_rollout_that_fails_leaves_nothing_serving(
    make_project: Any, served_folder: Path, tmp_path: Path
) -> None:
    project: Project = make_project()
    version = project.version(faults.does_not_load(served_folder, tmp_path / "bad"), "bad")
    entries_before = len(ledger.entries(project.registry().record))

    with pytest.raises(RolloutFailed, match=r"private infra failed: .* does not load"):
        deploy(project.context(), version)

    record = _record(project, version)
    assert record is not None and record.status == "rolled_back"
    assert record.target("private").phase == "rolled_back"
    assert "nothing serves there" in (record.target("private").note or "")
    assert record.target("public").phase == "pending"
    assert project.production("private") is None and project.production("public") is None
    # no alias moved, so the ledger has nothing to record; the rollout record says why
    assert len(ledger.entries(project.registry().record)) == entries_before


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_dry_run_prints_the_plan_and_changes_nothing(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    stable, version = _stable_and_next(project, served_folder)
    before = _tree(project.root)

    run = _cli(project, version, "--dry-run")
    output, _ = run.communicate(timeout=120)

    assert run.returncode == 0, output
    assert _tree(project.root) == before
    assert not (project.root / "deploy").exists()
    lines = output.splitlines()
    assert lines[0] == f"plan: roll out {version} to private then public (dry run: nothing changes)"
    for cloud in ("private", "public"):
        assert any(
            line.startswith(f"  {cloud}: fleet of 1 local server(s)")
            and f"production {stable}, candidate {version}" in line
            for line in lines
        ), output
    assert "    2. shadow: 120 replayed requests" in output
    assert "    3. canary 10%: until each arm answered 30" in output
    assert "    error rate: max 0.01, stable + max(0.005, 0.5 x stable)" in output
    assert "inconclusive: hold (up to 2 holds)" in output
