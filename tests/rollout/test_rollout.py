"""Real rollouts against real fleets (``recflow serve`` processes on 127.0.0.1): a first rollout
(bake, then full), shadow and canary in both clouds with production moved in the ledger, and a
failure in the second cloud that rolls the first one back too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.registry import ledger
from pipelines.registry.names import file_key
from pipelines.rollout.controller import Controller, RolloutFailed, deploy
from pipelines.rollout.environment import LocalEnvironment
from pipelines.rollout.record import Records
from tests.rollout.conftest import Project

pytestmark = pytest.mark.slow


def _steps(record: Any, cloud: str) -> list[tuple[str, str]]:
    return [(s["step"], s["outcome"]) for s in record.target(cloud).steps]


def _entries(project: Project, alias: str | None = None) -> list[ledger.LedgerEntry]:
    return ledger.select(ledger.entries(project.registry().record), alias)


def _fleets_stopped(project: Project, version: str) -> bool:
    """Every server of the rollout removed its worker report when it stopped."""
    folder = Records(project.root / "deploy").folder(version) / "fleets"
    return not list(folder.rglob("workers/*.json"))


def test_a_first_rollout_bakes_against_the_popularity_fallback_then_goes_full(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    version = project.version(served_folder, "v1")
    assert project.production("private") is None

    controller = Controller(project.context(), version)
    record = controller.run()

    assert record.status == "succeeded"
    for cloud in ("private", "public"):
        assert _steps(record, cloud) == [("infra", "pass"), ("bake", "pass")]
        assert record.target(cloud).phase == "done"
        assert record.target(cloud).stable is None
        assert project.production(cloud) == version
        bake = record.target(cloud).steps[1]
        hits = next(c for c in bake["checks"] if c["metric"] == "hit_rate")
        # the model beats the popularity shelf on the same replayed sessions
        assert "popularity fallback" in hits["detail"] and hits["value"] > hits["baseline"]
    production = _entries(project, "production")
    assert [(e.cloud, e.version, e.action) for e in production] == [
        ("private", version, "promote"),
        ("public", version, "promote"),
    ]
    assert production[0].change["reason"] == "rollout passed in private: infra, bake"
    decision = production[0].change["evidence"]["decision"]
    assert [s["step"] for s in decision["steps"]] == ["infra", "bake"]
    assert decision["thresholds"]["error_rate"]["max"] == 0.01
    assert _fleets_stopped(project, version)
    # the fleet's tokens and the pseudonymization key reached the servers through their
    # environment only: no record, setting or log holds them
    environment = controller.environment
    assert isinstance(environment, LocalEnvironment)
    tokens = environment.tokens
    secrets = [tokens.admin, tokens.client, environment.pseudonym_key()]
    for path in project.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path


def test_a_rollout_goes_through_shadow_and_canary_in_both_clouds(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    stable = project.version(served_folder, "stable")
    project.make_production(stable)
    version = project.version(served_folder, "next")

    record = deploy(project.context(), version)

    assert record.status == "succeeded", record.failure
    for cloud in ("private", "public"):
        steps = _steps(record, cloud)
        # an inconclusive window may be held and judged again: the last verdict of a step counts
        final = dict(steps)
        assert list(final) == ["infra", "shadow", "canary 10%", "canary 50%"]
        assert set(final.values()) == {"pass"}
        assert project.production(cloud) == version
        assert record.target(cloud).stable == stable
        shadow = next(s for s in record.target(cloud).steps if s["step"] == "shadow")
        overlap = next(c for c in shadow["checks"] if c["metric"] == "shadow_overlap")
        assert overlap["value"] == pytest.approx(1.0)  # the same model: the same answers
        canary = [s for s in record.target(cloud).steps if s["step"] == "canary 10%"][-1]
        arms = canary["window"]["replay"]["arms"]
        assert arms[f"{version}/canary"]["answered"] >= 30
        assert arms[f"{stable}/stable"]["answered"] > arms[f"{version}/canary"]["answered"]
    production = _entries(project, "production")
    assert [(e.cloud, e.version) for e in production[-2:]] == [
        ("private", version),
        ("public", version),
    ]
    reason = production[-1].change["reason"]
    assert reason == "rollout passed in public: infra, shadow, canary 10%, canary 50%"
    assert _fleets_stopped(project, version)
    # rolling the same version out again changes nothing
    before = len(_entries(project))
    again = deploy(project.context(), version)
    assert again.status == "succeeded" and len(_entries(project)) == before


def test_a_failure_in_the_public_cloud_rolls_the_private_cloud_back_too(
    make_project: Any, served_folder: Path
) -> None:
    project: Project = make_project()
    stable = project.version(served_folder, "stable")
    project.make_production(stable)
    version = project.version(served_folder, "next")
    # the public replica of the candidate's model is corrupted after replication
    public = project.registry().store("public")
    onnx_key = file_key(version, "optimized/model.onnx")
    path = Path(str(project.root / "stores" / "public" / onnx_key))
    path.write_bytes(path.read_bytes()[:-8] + bytes(8))
    assert public.head(onnx_key) is not None

    with pytest.raises(RolloutFailed, match=r"public infra failed: .*model\.onnx"):
        deploy(project.context(), version)

    record = Records(project.root / "deploy").load(version)
    assert record is not None and record.status == "rolled_back"
    assert record.target("private").phase == "rolled_back"
    assert record.target("public").phase == "rolled_back"
    assert dict(_steps(record, "private"))["canary 50%"] == "pass"
    assert record.failure is not None and record.failure["cloud"] == "public"
    # production in private went to the version and back; candidate back to stable everywhere
    assert project.production("private") == stable and project.production("public") == stable
    assert project.alias("candidate", "private") == stable
    assert project.alias("candidate", "public") == stable
    entries = _entries(project)
    rollbacks = [e for e in entries if e.action == "rollback"]
    assert {(e.cloud, e.alias) for e in rollbacks} == {
        ("private", "production"),
        ("private", "candidate"),
        ("public", "candidate"),
    }
    for entry in rollbacks:
        assert entry.version == stable
        assert entry.change["reason"].startswith(f"rollout of {version} stopped at public infra: ")
        decision = entry.change["evidence"]["decision"]
        assert decision["failed_step"] == "public infra"
        assert any("model.onnx" in c["detail"] for c in decision["failed_checks"])
        limit = project.params.deploy.analysis.latency_p99_ms.max
        assert decision["thresholds"]["latency_p99_ms"]["max"] == limit
    # a rollback undoes the entry that set the alias: the ledger's last known good is stable
    promoted = next(e for e in entries if e.alias == "production" and e.version == version)
    undo = next(e for e in rollbacks if e.alias == "production")
    assert undo.change["rolls_back"] == promoted.seq
    assert _fleets_stopped(project, version)
