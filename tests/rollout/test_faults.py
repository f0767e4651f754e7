"""Faulty candidates against a real fleet serving a good stable version: each is stopped at
shadow or canary and rolled back automatically, nothing is served from it beyond the canary
share, and the ledger says why (the failed step, its metrics and the thresholds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.registry import ledger
from pipelines.rollout.controller import RolloutFailed, deploy
from pipelines.rollout.record import Records
from tests.rollout import faults
from tests.rollout.conftest import Project

pytestmark = pytest.mark.slow

FAULTS: dict[str, tuple[Callable[[Path, Path], Path], str, str]] = {
    # fault: (builder, step it is stopped at, the check that stops it)
    # NaN for every input: the server's warm-up at load refuses it
    "nan_everywhere": (faults.nan_scores, "shadow", "fleet"),
    # NaN for some inputs: each such model call fails (answered from the fallback)
    "nan_sometimes": (faults.nan_sometimes, "shadow", "error_rate"),
    "does_not_load": (faults.does_not_load, "shadow", "fleet"),
    "ten_times_slower": (faults.slower, "shadow", "latency_p99_ms"),
    "fails_on_five_percent": (faults.fails_sometimes, "shadow", "error_rate"),
    # the same model with an item table mapping every index to another real item: the shadow
    # compares catalog ids, so it stops here with no answer served to a user
    "wrong_item_table": (faults.wrong_item_table, "shadow", "shadow_overlap"),
    # well-formed answers that ignore the user: caught online, by the replayed hit rate
    "popularity_only": (faults.popularity_only, "canary 10%", "hit_rate"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_candidate_is_stopped_and_rolled_back(
    fault: str, make_project: Any, served_folder: Path, tmp_path: Path
) -> None:
    build, step, metric = FAULTS[fault]
    deploy_cfg: dict[str, Any] = {"targets": ["private"]}
    if metric == "latency_p99_ms":
        # the project's latency rule, not the suite's load-proof ceiling
        deploy_cfg["analysis"] = {"min_requests": 30}
    project: Project = make_project(deploy_cfg)
    stable = project.version(served_folder, "stable")
    project.make_production(stable, "private")
    bad = build(served_folder, tmp_path / fault)
    version = project.version(bad, fault)

    with pytest.raises(RolloutFailed, match=rf"private {step} failed"):
        deploy(project.context(), version)

    record = Records(project.root / "deploy").load(version)
    assert record is not None and record.status == "rolled_back"
    target = record.target("private")
    assert target.phase == "rolled_back"
    failed = target.steps[-1]
    assert failed["step"] == step and failed["outcome"] == "fail"
    # failed, or still unsure after the holds (which fails the step too)
    assert metric in {c["metric"] for c in failed["checks"] if c["outcome"] != "pass"}
    # nothing was served from the candidate but its canary share
    for verdict in target.steps:
        arms = verdict.get("window", {}).get("replay", {}).get("arms", {})
        served = {arm.split("/")[1] for arm in arms if arm.startswith(f"{version}/")}
        assert served <= ({"canary"} if verdict["step"].startswith("canary") else set()), verdict
    if step.startswith("canary"):
        canary = failed["window"]["canary"]
        assert 0 < canary["requests"] < failed["window"]["stable"]["requests"]
    # stable serves; the candidate alias went back to it, saying why
    assert project.production("private") == stable
    assert project.alias("candidate", "private") == stable
    entry = ledger.entries(project.registry().record)[-1]
    assert (entry.alias, entry.cloud, entry.version, entry.action) == (
        "candidate",
        "private",
        stable,
        "rollback",
    )
    assert f"stopped at private {step}" in entry.change["reason"]
    decision = entry.change["evidence"]["decision"]
    checks = {c["metric"]: c for c in decision["failed_checks"]}
    assert metric in checks
    assert checks[metric]["outcome"] in ("fail", "inconclusive")
    assert set(decision["thresholds"]) >= {"error_rate", "fallback_rate", "latency_p99_ms"}
    if metric != "fleet":
        assert checks[metric]["value"] is not None and checks[metric]["limit"] is not None
