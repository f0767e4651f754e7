"""The state machine in an environment held in memory: no server, no Prometheus, no replayed
traffic. The controller asks the :class:`~pipelines.rollout.environment.Environment` for every
change and every observation, so a fake one is enough to drive a rollout through its passing
path, a rollback, and a first rollout whose bake fails (the registry and the records are real).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipelines.registry import ledger
from pipelines.rollout.analysis import Check, Verdict
from pipelines.rollout.controller import Controller, RolloutFailed
from pipelines.rollout.fleet.client import FleetError
from pipelines.rollout.observation import Judge, Settled, StopWhen
from pipelines.rollout.record import Records
from tests.rollout.conftest import Project


@dataclass
class FakeFleet:
    """What one cloud's fleet serves, as the admin API would change it."""

    stable: str
    previous: list[str] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)
    canary: str | None = None
    weight: float = 0.0
    shadow: str | None = None


class FakeEnvironment:
    """Fleets held in memory; each observed step gets the outcome it is told to get (pass)."""

    def __init__(self, outcomes: dict[tuple[str, str], str] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.fleets: dict[str, FakeFleet] = {}
        self.observed: list[tuple[str, str]] = []
        self.closed = False

    def start(self, cloud: str, version: str) -> None:
        self.fleets.setdefault(cloud, FakeFleet(stable=version, loaded={version}))

    def running(self, cloud: str) -> bool:
        return cloud in self.fleets

    def check(self, cloud: str, expected: str) -> list[Check]:
        fleet = self.fleets[cloud]
        outcome = "pass" if fleet.stable == expected else "fail"
        return [
            Check("fleet", outcome, 1.0, None, None, f"1 server(s) ready on {fleet.stable}"),
            Check("metrics", "pass", None, None, None, "in memory"),
        ]

    def load(self, cloud: str, version: str) -> None:
        self.fleets[cloud].loaded.add(version)

    def shadow(self, cloud: str, version: str | None) -> None:
        self.fleets[cloud].shadow = version

    def canary(self, cloud: str, version: str | None, weight: float) -> None:
        fleet = self.fleets[cloud]
        fleet.canary, fleet.weight = (version, weight) if version else (None, 0.0)

    def promote(self, cloud: str, version: str) -> None:
        fleet = self.fleets[cloud]
        fleet.previous.append(fleet.stable)
        fleet.stable, fleet.canary, fleet.weight = version, None, 0.0

    def not_serving(self, cloud: str, version: str) -> list[str]:
        return [] if self.fleets[cloud].stable == version else [f"memory://{cloud}"]

    def roll_back(self, cloud: str, stable: str, candidate: str) -> None:
        fleet = self.fleets[cloud]
        fleet.canary, fleet.weight, fleet.shadow = None, 0.0, None
        if fleet.stable != stable:
            if fleet.previous[-1:] != [stable]:
                raise FleetError(f"memory://{cloud} cannot roll back to {stable}")
            fleet.stable = fleet.previous.pop()
        fleet.loaded.discard(candidate)

    def stop(self, cloud: str) -> None:
        self.fleets.pop(cloud, None)

    def observe(
        self,
        cloud: str,
        step: str,
        judge: Judge,
        *,
        max_requests: int,
        pair: bool = False,
        stop_when: StopWhen | None = None,
        settled: Settled | None = None,
        interrupted: Callable[[], bool],
        on_verdict: Callable[[Verdict], None],
    ) -> Verdict:
        self.observed.append((cloud, step))
        outcome = self.outcomes.get((cloud, step), "pass")
        check = Check("requests", outcome, 100.0, None, 30.0, f"answers: 100 ({outcome})")
        verdict = Verdict.of(step, [check], {})
        on_verdict(verdict)
        return verdict

    def close(self) -> None:
        self.closed = True


def _steps(record: Any, cloud: str) -> list[tuple[str, str]]:
    return [(s["step"], s["outcome"]) for s in record.target(cloud).steps]


def _production_entries(project: Project) -> list[tuple[str, str, str]]:
    entries = ledger.select(ledger.entries(project.registry().record), "production")
    return [(e.cloud, e.version, e.action) for e in entries]


@pytest.fixture
def stable_and_next(make_project: Any, served_folder: Path) -> tuple[Project, str, str]:
    project: Project = make_project()
    stable = project.version(served_folder, "stable")
    project.make_production(stable)
    return project, stable, project.version(served_folder, "next")


def test_a_fake_environment_takes_a_rollout_through_every_step(
    stable_and_next: tuple[Project, str, str],
) -> None:
    project, stable, version = stable_and_next
    environment = FakeEnvironment()

    record = Controller(project.context(), version, environment=environment).run()

    assert record.status == "succeeded"
    steps = ["infra", "shadow", "canary 10%", "canary 50%"]
    for cloud in ("private", "public"):
        assert _steps(record, cloud) == [(step, "pass") for step in steps]
        assert project.production(cloud) == version
        fleet = environment.fleets[cloud]
        assert (fleet.stable, fleet.previous, fleet.canary, fleet.shadow) == (
            version,
            [stable],
            None,
            None,
        )
    assert environment.observed == [
        (cloud, step) for cloud in ("private", "public") for step in steps[1:]
    ]
    assert _production_entries(project)[-2:] == [
        ("private", version, "promote"),
        ("public", version, "promote"),
    ]
    assert environment.closed


def test_a_failed_step_in_a_fake_environment_rolls_every_target_back(
    stable_and_next: tuple[Project, str, str],
) -> None:
    project, stable, version = stable_and_next
    environment = FakeEnvironment({("public", "canary 50%"): "fail"})

    with pytest.raises(RolloutFailed, match="public canary 50% failed"):
        Controller(project.context(), version, environment=environment).run()

    record = Records(project.root / "deploy").load(version)
    assert record is not None and record.status == "rolled_back"
    assert record.failure is not None
    assert (record.failure["cloud"], record.failure["step"]) == ("public", "canary 50%")
    assert _steps(record, "public")[-1] == ("canary 50%", "fail")
    for cloud in ("private", "public"):
        assert record.target(cloud).phase == "rolled_back"
        assert project.production(cloud) == stable
        fleet = environment.fleets[cloud]
        assert (fleet.stable, fleet.canary, fleet.shadow) == (stable, None, None)
        assert version not in fleet.loaded
    # production had moved in private only: its one rollback entry undoes that promotion
    assert _production_entries(project)[-2:] == [
        ("private", version, "promote"),
        ("private", stable, "rollback"),
    ]
    assert environment.closed


def test_a_first_rollout_whose_bake_fails_stops_the_fleet_in_a_fake_environment(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    version = project.version(served_folder, "first")
    environment = FakeEnvironment({("private", "bake"): "fail"})

    with pytest.raises(RolloutFailed, match="private bake failed"):
        Controller(project.context(), version, environment=environment).run()

    record = Records(project.root / "deploy").load(version)
    assert record is not None and record.status == "rolled_back"
    assert _steps(record, "private") == [("infra", "pass"), ("bake", "fail")]
    assert record.target("private").phase == "rolled_back"
    assert record.target("public").phase == "pending"
    assert environment.observed == [("private", "bake")]
    assert not environment.running("private")
    assert project.production("private") is None
