"""The regression gate blocks faulty candidates and passes good ones, through real artifacts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.core.contracts import schema_text
from pipelines.core.io import sha256_file
from pipelines.core.params import EvaluateConfig
from pipelines.gate.golden import golden_set
from pipelines.gate.judge import GateBlocked, judge_candidate
from pipelines.gate.verdict import Verdict, read_verdict
from pipelines.model.sasrec import SASRec
from pipelines.model.saved import load_model
from pipelines.serving.graph.torch_export import export_onnx
from pipelines.serving.manifest import ArtifactError
from pipelines.serving.runtime import Recommender
from pipelines.stages.evaluate import main
from tests.model.conftest import model_dir

GATE = {
    "golden_users": 300,
    "latency_requests": 20,
    "quality": {"bootstrap_samples": 200, "min_absolute": {"ndcg@10": 0.01, "recall@10": 0.02}},
}


def _cfg(**overrides: object) -> EvaluateConfig:
    return EvaluateConfig.model_validate({**GATE, **overrides})


@pytest.fixture(scope="module")
def good(tiny_model: Path, tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir(tmp_path_factory.mktemp("good") / "model", tiny_model, tiny_prepared)


def _blocked(
    candidate: Path, prepared: Path, out: Path, production: Path, **cfg: object
) -> dict[str, object]:
    with pytest.raises(GateBlocked) as info:
        judge_candidate(_cfg(**cfg), candidate, prepared, out, production=production)
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["blocked"] is True and verdict["outcome"] != "pass"
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    failed = {c["name"] for c in verdict["checks"] if c["status"] == "fail"}
    assert all(name in str(info.value) for name in failed)
    return verdict


def _failed(verdict: dict[str, object]) -> dict[str, str]:
    checks = verdict["checks"]
    assert isinstance(checks, list)
    return {c["name"]: c["detail"] for c in checks if c["status"] == "fail"}


def _with_artifact_bytes(source: Path, dest: Path, data: bytes, fix_sha: bool = True) -> Path:
    shutil.copytree(source, dest)
    onnx = dest / "optimized" / "model.onnx"
    onnx.write_bytes(data)
    if fix_sha:
        manifest = json.loads((dest / "optimized" / "manifest.json").read_text())
        manifest["artifacts"][0]["sha256"] = sha256_file(onnx)
        (dest / "optimized" / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_first_run_passes_under_the_first_model_rule(
    good: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    result = judge_candidate(
        _cfg(), good, tiny_prepared, tmp_path / "eval", production=tmp_path / "none"
    )
    assert result.outcome == "pass" and result.first_model is True and result.production is None
    assert read_verdict(tmp_path / "eval") == result
    assert (tmp_path / "eval" / "verdict.schema.json").read_text() == schema_text(Verdict)
    statuses = {c.metric: c.outcome for c in result.checks}
    assert statuses["quality_vs_production"] == "skipped"
    for name in (
        "infra_load",
        "infra_request",
        "parity",
        "finite_scores",
        "no_duplicate_items",
        "catalog_items_only",
        "cold_start_user",
        "batch_invariance",
        "padding_invariance",
        "latency_p99_ms",
    ):
        assert statuses[name] == "pass", name
    assert "first-model rule" in (tmp_path / "eval" / "report.md").read_text()


def test_same_model_as_production_passes_not_inconclusive(
    good: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    result = judge_candidate(_cfg(), good, tiny_prepared, tmp_path / "eval", production=good)
    assert result.outcome == "pass" and result.first_model is False
    compared = [c for c in result.checks if c.metric.startswith("quality_vs_production_")]
    assert [c.outcome for c in compared] == ["pass", "pass"]
    assert result.production is not None
    assert result.production.quality == result.candidate.quality


def test_nan_scores_are_blocked(
    good: Path, tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    # an artifact whose manifest claims parity but whose graph yields NaN (e.g. built by a
    # buggy exporter): the gate must not take the manifest's word for it
    model = load_model(tiny_model)
    with torch.no_grad():
        model.norm.weight.fill_(float("nan"))
    candidate = _with_artifact_bytes(good, tmp_path / "nan", export_onnx(model, 10))
    verdict = _blocked(candidate, tiny_prepared, tmp_path / "eval", tmp_path / "none")
    assert "NaN or infinite" in _failed(verdict)["finite_scores"]


def test_quality_below_production_is_blocked(
    good: Path, tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    spec = load_model(tiny_model).spec
    torch.manual_seed(0)
    untrained = SASRec(spec, load_model(tiny_model).item_category)
    path = tmp_path / "untrained.pt"
    torch.save({"model": untrained.state_dict(), "spec": spec.to_dict()}, path)
    candidate = model_dir(tmp_path / "untrained", path, tiny_prepared)
    verdict = _blocked(candidate, tiny_prepared, tmp_path / "eval", good)
    failed = _failed(verdict)
    assert "worse than production" in failed["quality_vs_production_ndcg@10"]


def test_quality_below_the_minimum_is_blocked(
    good: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    verdict = _blocked(
        good,
        tiny_prepared,
        tmp_path / "eval",
        tmp_path / "none",
        quality={"bootstrap_samples": 200, "min_absolute": {"ndcg@10": 0.99}},
    )
    assert "< minimum 0.99" in _failed(verdict)["quality_min_ndcg@10"]


def test_too_slow_is_blocked(good: Path, tiny_prepared: Path, tmp_path: Path) -> None:
    verdict = _blocked(
        good, tiny_prepared, tmp_path / "eval", tmp_path / "none", latency_p99_ms=1e-6
    )
    assert "p99" in _failed(verdict)["latency_p99_ms"]


def test_wrong_output_shape_is_blocked(
    good: Path, tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    candidate = _with_artifact_bytes(
        good, tmp_path / "shape", export_onnx(load_model(tiny_model), 5)
    )
    verdict = _blocked(candidate, tiny_prepared, tmp_path / "eval", tmp_path / "none")
    assert "output top_items" in _failed(verdict)["infra_request"]


def test_artifact_that_fails_to_load_is_blocked(
    good: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    corrupt = _with_artifact_bytes(good, tmp_path / "corrupt", b"\x08\x07 not a graph")
    verdict = _blocked(corrupt, tiny_prepared, tmp_path / "eval1", tmp_path / "none")
    assert "does not load" in _failed(verdict)["infra_load"]
    tampered = _with_artifact_bytes(good, tmp_path / "tampered", b"changed", fix_sha=False)
    verdict = _blocked(tampered, tiny_prepared, tmp_path / "eval2", tmp_path / "none")
    assert "the file was changed" in _failed(verdict)["infra_load"]


def test_cli_exits_3_when_blocked(
    good: Path, tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "run: {logical_date: '2026-11-22'}\n"
        "evaluate: {golden_users: 100, latency_p99_ms: 0.000001, latency_requests: 10}\n"
    )
    args = ["--params", str(params), "--candidate", str(good), "--prepared", str(tiny_prepared)]
    code = main([*args, "--out", str(tmp_path / "eval"), "--metrics", str(tmp_path / "m.json")])
    assert code == 3
    assert "candidate blocked (fail): latency_p99_ms" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["blocked"] is True and metrics["verdict"] == "fail"


def _ndcg_by_hand(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean NDCG@10 with numpy: rank = items scored above + tied items of a smaller index."""
    values = []
    for row, target in zip(scores, targets, strict=True):
        real = row.copy()
        real[0] = -np.inf  # padding never ranks
        above = int((real > real[target]).sum())
        tied_before = int((real[:target] == real[target]).sum())
        rank = above + tied_before
        values.append(1.0 / math.log2(rank + 2) if rank < 10 else 0.0)
    return float(np.mean(values))


def test_candidate_quality_is_ndcg_of_the_artifacts_scores(
    good: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    result = judge_candidate(
        _cfg(), good, tiny_prepared, tmp_path / "eval", production=tmp_path / "none"
    )
    histories, targets = golden_set(tiny_prepared, 300)
    recommender = Recommender.load(good / "optimized", threads=1)
    scores = recommender.scores(recommender.pad(histories))
    assert result.golden_users == len(targets) > 100
    assert result.candidate.quality["ndcg@10"] == pytest.approx(
        _ndcg_by_hand(scores, targets), abs=1e-6
    )


def test_rerun_writes_the_same_verdict_and_report_bytes(
    good: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    outputs = []
    for run in ("first", "second"):
        judge_candidate(
            _cfg(),
            good,
            tiny_prepared,
            tmp_path / run,
            production=good,
            metrics=tmp_path / f"{run}.json",
        )
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / run).iterdir())})
    assert set(outputs[0]) == {"verdict.json", "verdict.schema.json", "report.md", "report.html"}
    assert outputs[0] == outputs[1]
    # the measured latency goes to the metrics only
    metrics = json.loads((tmp_path / "first.json").read_text())
    assert metrics["latency_p99_ms"] >= metrics["latency_p50_ms"] > 0
    verdict = read_verdict(tmp_path / "first")
    latency = next(c for c in verdict.checks if c.metric == "latency_p99_ms")
    assert latency.outcome == "pass" and latency.value is None and latency.limit == 50.0
    assert latency.detail == (
        "batch-1 p99 within the 50 ms budget over 20 requests (measured values in the evaluate "
        "metrics)"
    )


def _with_protocol(tiny_model: Path, prepared: Path, root: Path, **protocol: object) -> Path:
    saved = torch.load(tiny_model, weights_only=True)
    saved["config"] = {**saved.get("config", {}), **protocol}
    path = root.parent / f"{root.name}.pt"
    root.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, path)
    return model_dir(root, path, prepared)


def test_a_production_model_of_another_protocol_is_not_compared(
    good: Path, tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    masked = _with_protocol(tiny_model, tiny_prepared, tmp_path / "masked", mask_history=True)
    manifest = json.loads((masked / "optimized" / "manifest.json").read_text())
    assert manifest["protocol"] == {"mask_history": True, "ties": "index"}
    verdict = _blocked(good, tiny_prepared, tmp_path / "eval", masked)
    detail = _failed(verdict)["production_protocol"]
    assert "scored with history not masked (mask_history=false)" in detail
    assert "selected with history masked (mask_history=true)" in detail
    assert not [c for c in verdict["checks"] if c["name"].startswith("quality_vs_production_")]


def test_a_masked_candidate_is_scored_with_its_history_masked(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    masked = _with_protocol(tiny_model, tiny_prepared, tmp_path / "masked", mask_history=True)
    result = judge_candidate(_cfg(), masked, tiny_prepared, tmp_path / "eval", production=masked)
    histories, targets = golden_set(tiny_prepared, 300)
    recommender = Recommender.load(masked / "optimized", threads=1)
    scores = recommender.scores(recommender.pad(histories))
    for row, history in zip(scores, histories, strict=True):
        row[np.asarray(history)] = -np.inf
    by_hand = _ndcg_by_hand(scores, targets)
    assert result.candidate.quality["ndcg@10"] == pytest.approx(by_hand, abs=1e-6)
    assert result.production is not None and result.outcome == "pass"
    # the protocol matters: the tiny preset repeats items, so masking them costs many hits
    unmasked = _ndcg_by_hand(recommender.scores(recommender.pad(histories)), targets)
    assert unmasked > by_hand + 0.05


def test_a_manifest_written_before_the_protocol_reads_it_from_the_model(
    good: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(good, old)
    manifest = json.loads((old / "optimized" / "manifest.json").read_text())
    manifest["schema_version"] = 2
    del manifest["protocol"]
    (old / "optimized" / "manifest.json").write_text(json.dumps(manifest))
    result = judge_candidate(_cfg(), good, tiny_prepared, tmp_path / "eval", production=old)
    assert result.outcome == "pass" and result.production is not None
    # version 3 without a protocol, or version 2 with one, is refused by name
    manifest["schema_version"] = 3
    (old / "optimized" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="protocol is required from schema version 3"):
        Recommender.load(old / "optimized")
