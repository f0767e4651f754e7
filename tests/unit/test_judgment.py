"""One judgment type for the gate, a rollout step and the monitor: the fold (fail beats
inconclusive beats pass, skipped never counts), a domain's own words for the three outcomes,
and the documents the gate and the rollout already wrote, read and written the same."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter

from pipelines.core.contracts import schema_path
from pipelines.core.judgment import OUTCOMES, Check, Outcome, Status, Vocabulary, worst
from pipelines.gate.rules import verdict as gate_outcome
from pipelines.gate.verdict import VERDICT, read_verdict, write_verdict
from pipelines.rollout.analysis import Verdict as StepVerdict

STATUSES: tuple[Status, ...] = get_args(Status)
DRIFT = Vocabulary(passed="no_drift", failed="drift", inconclusive="insufficient_data")


def _checks(outcomes: tuple[Status, ...]) -> list[Check]:
    return [
        Check(f"c{i}", outcome, None, None, None, f"check {i}")
        for i, outcome in enumerate(outcomes)
    ]


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ((), "pass"),
        (("skipped",), "pass"),
        (("pass", "skipped"), "pass"),
        (("pass", "inconclusive"), "inconclusive"),
        (("inconclusive", "pass", "fail"), "fail"),
        (("skipped", "fail"), "fail"),
        (("skipped", "inconclusive", "skipped"), "inconclusive"),
    ],
)
def test_fail_beats_inconclusive_beats_pass(
    outcomes: tuple[Status, ...], expected: Outcome
) -> None:
    assert worst(outcomes) == expected


def test_the_order_of_the_checks_does_not_matter_and_skipped_never_decides() -> None:
    for size in range(4):
        for outcomes in itertools.product(STATUSES, repeat=size):
            folded = worst(outcomes)
            assert {worst(order) for order in itertools.permutations(outcomes)} == {folded}
            counted = [o for o in outcomes if o != "skipped"]
            assert worst(counted) == folded
            assert worst([*outcomes, "skipped"]) == folded
            assert worst(iter(outcomes)) == folded  # a single pass over a generator


def test_the_gate_and_a_rollout_step_fold_the_same_way() -> None:
    for outcomes in itertools.product(STATUSES, repeat=3):
        checks = _checks(outcomes)
        outcome, blocked = gate_outcome(checks, "block")
        assert outcome == worst(outcomes) and blocked == (outcome != "pass")
        assert gate_outcome(checks, "pass") == (outcome, outcome == "fail")
        assert StepVerdict.of("canary 25%", checks, {}).outcome == outcome


def test_what_stopped_a_judgment() -> None:
    checks = _checks(("pass", "inconclusive", "skipped", "fail", "inconclusive"))
    step = StepVerdict.of("shadow", checks, {})
    assert step.outcome == "fail" and step.reasons() == ["check 3"]
    assert step.stopping == ["c1", "c3", "c4"]
    unsure = StepVerdict.of("shadow", [checks[0], checks[1]], {})
    assert unsure.reasons() == ["check 1"]
    assert StepVerdict.of("shadow", [checks[0]], {}).reasons() == []


def test_the_monitor_says_the_same_judgment_in_its_own_words() -> None:
    assert [DRIFT.word(o) for o in OUTCOMES] == ["no_drift", "drift", "insufficient_data"]
    for outcome in OUTCOMES:
        assert DRIFT.outcome(DRIFT.word(outcome)) == outcome
    drifted = _checks(("pass", "fail", "inconclusive"))
    assert DRIFT.word(worst(c.outcome for c in drifted)) == "drift"
    assert DRIFT.word(worst(["pass", "inconclusive"])) == "insufficient_data"
    assert DRIFT.word(worst(["pass", "skipped"])) == "no_drift"
    with pytest.raises(ValueError, match="'drifting' is none of no_drift, drift"):
        DRIFT.outcome("drifting")
    with pytest.raises(ValueError, match="one word for two outcomes"):
        Vocabulary(passed="ok", failed="bad", inconclusive="ok")


# a verdict.json as version 1 of the gate wrote it (before checks were the shared type)
GATE_V1: dict[str, Any] = {
    "blocked": True,
    "bootstrap": False,
    "candidate": {
        "artifact": "onnxruntime-fp32",
        "model_sha256": "ab" * 32,
        "path": "models/candidate",
        "quality": {"ndcg@10": 0.25, "recall@10": 0.5},
    },
    "checks": [
        {
            "detail": "answers a request",
            "name": "infra_request",
            "status": "pass",
            "threshold": None,
            "value": [1, 10],
        },
        {
            "detail": "no short history",
            "name": "padding_invariance",
            "status": "skipped",
            "threshold": 0.001,
            "value": None,
        },
        {
            "detail": "straddles",
            "name": "quality_vs_production_ndcg@10",
            "status": "inconclusive",
            "threshold": {"allowed_drop": 0.02},
            "value": {"ci": [-0.03, 0.01], "difference": -0.01},
        },
    ],
    "golden_users": 3,
    "on_inconclusive": "block",
    "outcome": "inconclusive",
    "production": {"path": "models/production", "quality": {"ndcg@10": 0.24, "recall@10": 0.5}},
    "schema_version": 1,
}


def test_a_gate_verdict_of_version_1_reads_and_writes_the_same_bytes(tmp_path: Path) -> None:
    text = json.dumps(GATE_V1, indent=2, sort_keys=True) + "\n"  # how write_json lays it out
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / VERDICT).write_text(text)
    verdict = read_verdict(tmp_path / "old")
    assert verdict.first_model is False and verdict.outcome == "inconclusive"
    skipped = verdict.checks[1]
    assert (skipped.metric, skipped.outcome, skipped.limit) == (
        "padding_invariance",
        "skipped",
        0.001,
    )
    assert verdict.stopping == ["quality_vs_production_ndcg@10"]
    write_verdict(tmp_path / "new", verdict)
    assert (tmp_path / "new" / VERDICT).read_text() == text
    assert read_verdict(tmp_path / "new") == verdict
    schema = json.loads(schema_path(tmp_path / "new" / VERDICT).read_text())
    assert "bootstrap" in schema["required"] and "first_model" not in schema["properties"]
    check = schema["$defs"]["Check"]
    assert set(check["required"]) == {"name", "status"} and "threshold" in check["properties"]


def test_a_gate_check_with_a_baseline_writes_it_and_reads_it_back() -> None:
    adapter = TypeAdapter(Check)
    compared = Check(
        metric="quality_vs_production_ndcg@10", outcome="pass", value=0.3, baseline=0.25
    )
    document = adapter.dump_python(compared, mode="json", by_alias=True)
    assert document["baseline"] == 0.25 and document["name"] == compared.metric
    assert adapter.validate_json(json.dumps(document)) == compared


# one step of a rollout.json as the rollout wrote it
STEP: dict[str, Any] = {
    "step": "canary 25%",
    "outcome": "fail",
    "checks": [
        {
            "metric": "error_rate",
            "outcome": "fail",
            "value": 0.05,
            "baseline": 0.001,
            "limit": 0.006,
            "detail": "error rate 5.00% (15/300) against limit 0.60%: beyond",
        },
        {
            "metric": "requests",
            "outcome": "pass",
            "value": 300.0,
            "baseline": None,
            "limit": 50.0,
            "detail": "answers: stable 900, canary 300",
        },
    ],
    "window": {"replay": {"sent": 1200}},
}


def test_a_rollout_step_keeps_its_fields() -> None:
    checks = [TypeAdapter(Check).validate_json(json.dumps(c)) for c in STEP["checks"]]
    assert checks[0] == Check("error_rate", "fail", 0.05, 0.001, 0.006, checks[0].detail)
    step = StepVerdict.of("canary 25%", checks, {"replay": {"sent": 1200}})
    assert step.to_json() == STEP
    assert step.reasons() == [STEP["checks"][0]["detail"]]
