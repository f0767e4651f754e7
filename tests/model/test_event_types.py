"""The event-type side feature: prepared columns, step tokens, training, serving and the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.core.errors import InputError
from pipelines.core.params import EvaluateConfig, TrainConfig
from pipelines.data.prepared import load_prepared
from pipelines.data.sequences import left_pad, step_tokens
from pipelines.gate.judge import GateBlocked, judge_candidate
from pipelines.gate.verdict import read_verdict
from pipelines.model.sasrec import ModelSpec, SASRec, split_tokens
from pipelines.model.saved import load_model
from pipelines.model.training.loop import train
from pipelines.serving.artifacts import held_out_histories, optimize
from pipelines.serving.backends.onnxruntime import ort_session
from pipelines.serving.graph.torch_export import export_onnx
from pipelines.serving.runtime import Recommender
from tests.model.conftest import FAST_OPTIMIZE, RUN, model_dir


@pytest.fixture(scope="module")
def event_model(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SASRec with the event-type embedding, trained on ``tiny_prepared``: its folder."""
    out = tmp_path_factory.mktemp("event-model")
    cfg = TrainConfig(
        hidden=16,
        max_len=20,
        epochs=3,
        batch_size=64,
        lr=5e-3,
        threads=1,
        progress=False,
        event_type_feature=True,
    )
    train(cfg, RUN, tiny_prepared, out)
    optimize(FAST_OPTIMIZE, out / "model.pt", tiny_prepared, out / "optimized")
    return out


def test_prepared_event_types_align_with_the_items(tiny_prepared: Path) -> None:
    sequences = pq.read_table(tiny_prepared / "sequences.parquet").to_pylist()
    by_user = {row["user_idx"]: row for row in sequences}
    for name, items_column, events_column in (
        ("train", "item_idx", "event_types"),
        ("test", "history", "history_event_types"),
    ):
        rows = pq.read_table(tiny_prepared / f"{name}.parquet").to_pylist()
        assert rows
        for row in rows:
            full = by_user[row["user_idx"]]
            n = len(row[items_column])
            assert len(row[events_column]) == n
            # every split's history is a prefix of the user's sequence, events included
            assert row[items_column] == full["item_idx"][:n]
            assert row[events_column] == full["event_types"][:n]
    assert {code for row in sequences for code in row["event_types"]} == {0, 1, 2}


def test_step_tokens_round_trip() -> None:
    spec = ModelSpec(n_items=10, event_types=True)
    items = np.array([0, 0, 3, 10, 1])
    events = np.array([2, 0, 1, 2, 0])
    tokens = step_tokens(items, events, spec.n_items)
    assert tokens.tolist() == [0, 0, 14, 32, 1]  # padding stays 0 whatever its event
    got_items, got_events = split_tokens(torch.from_numpy(tokens), spec)
    assert got_items.tolist() == [0, 0, 3, 10, 1]
    assert got_events is not None and got_events.tolist() == [0, 0, 1, 2, 0]
    plain, none = split_tokens(torch.from_numpy(items), ModelSpec(n_items=10))
    assert none is None and plain.tolist() == items.tolist()


def test_event_type_changes_the_scores_and_padding_does_not() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(n_items=30, hidden=16, max_len=8, dropout=0.0, event_types=True)
    model = SASRec(spec).eval()
    with torch.no_grad():
        model.event_emb.weight.normal_(0.0, 1.0)  # type: ignore[union-attr]
        model.event_emb.weight[0].zero_()  # type: ignore[union-attr]
    items = [4, 7, 9]
    viewed = step_tokens(np.array(items), np.array([0, 0, 0]), spec.n_items)
    bought = step_tokens(np.array(items), np.array([0, 0, 2]), spec.n_items)
    scores = model.score(torch.from_numpy(left_pad([viewed, bought], spec.max_len)))
    assert not torch.allclose(scores[0, 1:], scores[1, 1:])
    bare = model.score(torch.from_numpy(np.asarray([bought])))
    torch.testing.assert_close(bare[0, 1:], scores[1, 1:], atol=1e-5, rtol=1e-5)


def test_training_with_event_types_records_them(event_model: Path, tiny_prepared: Path) -> None:
    model = load_model(event_model / "model.pt")
    assert model.spec.event_types and model.event_emb is not None
    metrics = json.loads((event_model / "metrics.json").read_text())
    # about 1.36x most-popular after three epochs on this data; the margin leaves room for
    # other CPUs' float rounding
    popular = metrics["baselines"]["most_popular"]["ndcg@10"]
    assert metrics["test"]["ndcg@10"] > 1.2 * popular, metrics
    # the embedding of each event code was trained (padding row stays zero)
    weight = model.event_emb.weight.detach()
    assert torch.all(weight[0] == 0) and weight[1:].abs().sum() > 0
    data = load_prepared(tiny_prepared, event_types=True)
    tokens = data.model_inputs("test", True)
    assert max(int(t.max()) for t in tokens if len(t)) > data.n_items  # not only views


def test_serving_artifact_reads_step_tokens(event_model: Path, tiny_prepared: Path) -> None:
    optimized = event_model / "optimized"
    manifest = json.loads((optimized / "manifest.json").read_text())
    shipped = next(a for a in manifest["artifacts"] if a["name"] == manifest["shipped"])
    assert shipped["inputs"][0]["steps"] == "tokens"
    assert manifest["spec"]["event_types"] is True
    assert shipped["parity"]["passed"] and shipped["parity"]["max_abs_error"] < 1e-3
    recommender = Recommender.load(optimized, threads=1)
    assert recommender.event_types
    model = load_model(event_model / "model.pt")
    history = held_out_histories(tiny_prepared, model.spec, 32)
    assert history.max() > model.spec.n_items
    expected = model.score(torch.from_numpy(history)).numpy()
    np.testing.assert_allclose(recommender.scores(history)[:, 1:], expected[:, 1:], atol=1e-4)


def test_portable_export_reads_step_tokens(event_model: Path, tiny_prepared: Path) -> None:
    model = load_model(event_model / "model.pt")
    history = held_out_histories(tiny_prepared, model.spec, 32)
    session = ort_session(export_onnx(model, 10), threads=1)
    expected = model.score(torch.from_numpy(history)).numpy()
    np.testing.assert_allclose(
        session.run(["scores"], {"history": history})[0][:, 1:], expected[:, 1:], atol=1e-4
    )


def test_runtime_refuses_steps_outside_its_vocabulary(
    event_model: Path, tiny_prepared: Path
) -> None:
    recommender = Recommender.load(event_model / "optimized", threads=1)
    limit = (recommender.n_items + 1) * 3
    history = recommender.pad([[1, 2, limit]])
    with pytest.raises(ValueError, match=rf"step tokens outside 0\.\.{limit - 1}"):
        recommender.scores(history)
    with pytest.raises(ValueError, match="outside"):
        recommender.recommend(recommender.pad([[1, -2]]))


def _untrained(trained: Path, root: Path, prepared: Path) -> Path:
    """A model folder with the spec of ``trained`` and random weights, optimized for the gate."""
    model = load_model(trained)
    torch.manual_seed(0)
    untrained = SASRec(model.spec, model.item_category)
    root.mkdir(parents=True)
    path = root / "untrained.pt"
    torch.save({"model": untrained.state_dict(), "spec": model.spec.to_dict()}, path)
    return model_dir(root / "model", path, prepared)


# the default allowed drop (the larger of 0.005 and 2 % of production): a worse candidate blocks
GATE = EvaluateConfig.model_validate(
    {
        "golden_users": 300,
        "latency_requests": 20,
        "quality": {
            "bootstrap_samples": 200,
            "min_absolute": {"ndcg@10": 0.0, "recall@10": 0.0},
        },
    }
)


def test_gate_compares_an_event_type_candidate_with_a_plain_production_model(
    event_model: Path, tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    # each model answers the same golden users in its own form: the event-type one step
    # tokens, the plain one item indices
    plain = model_dir(tmp_path / "plain", tiny_model, tiny_prepared)
    alone = judge_candidate(
        GATE, plain, tiny_prepared, tmp_path / "alone", production=tmp_path / "none"
    )

    # a worse event-type candidate (untrained) is blocked by the comparison
    worse = _untrained(event_model / "model.pt", tmp_path / "worse", tiny_prepared)
    with pytest.raises(GateBlocked, match="quality_vs_production_ndcg@10"):
        judge_candidate(GATE, worse, tiny_prepared, tmp_path / "blocked", production=plain)
    blocked = read_verdict(tmp_path / "blocked")
    checks = {c.metric: c for c in blocked.checks}
    assert blocked.first_model is False and blocked.blocked
    for metric in ("ndcg@10", "recall@10"):
        comparison = checks[f"quality_vs_production_{metric}"]
        assert comparison.outcome == "fail", comparison
        assert "worse than production" in comparison.detail
    # the plain production model was judged on its own item-index histories of the same users
    assert blocked.production is not None
    assert blocked.production.quality == alone.candidate.quality

    # the trained event-type candidate against an untrained plain production model passes
    weak = _untrained(tiny_model, tmp_path / "weak", tiny_prepared)
    passed = judge_candidate(GATE, event_model, tiny_prepared, tmp_path / "passed", production=weak)
    assert passed.outcome == "pass" and not passed.blocked
    compared = [c for c in passed.checks if c.metric.startswith("quality_vs_production_")]
    assert [c.outcome for c in compared] == ["pass", "pass"]
    assert passed.candidate.quality["ndcg@10"] > passed.production.quality["ndcg@10"]  # type: ignore[union-attr]


def test_missing_event_columns_are_named(tiny_prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, copy)
    table = pq.read_table(copy / "test.parquet").drop_columns(["history_event_types"])
    pq.write_table(table, copy / "test.parquet")
    load_prepared(copy)  # a model without event types does not need them
    with pytest.raises(InputError, match=r"test\.parquet has no history_event_types column"):
        load_prepared(copy, event_types=True)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (lambda row: [5] * len(row), r"history_event_types has codes outside 0\.\.2"),
        (lambda row: [0] * (len(row) + 1), "history_event_types and the item lists differ"),
    ],
)
def test_bad_event_columns_are_refused(
    codes: Any, message: str, tiny_prepared: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, copy)
    table = pq.read_table(copy / "valid.parquet")
    column = table.schema.get_field_index("history_event_types")
    broken = pa.array([codes(h) for h in table.column("history").to_pylist()], pa.list_(pa.int8()))
    pq.write_table(table.set_column(column, "history_event_types", broken), copy / "valid.parquet")
    with pytest.raises(InputError, match=message):
        load_prepared(copy, event_types=True)
