"""The trainer on tiny synthetic data: it learns, it is deterministic, it resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.core.contracts import schema_text
from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file
from pipelines.core.params import PrepareConfig, TrainConfig
from pipelines.data.prepared import load_prepared
from pipelines.data.sequences import left_pad
from pipelines.model.sasrec import SASRec
from pipelines.model.training.loop import TrainResult, train, valid_sample
from pipelines.model.training.metrics import TrainingMetrics, read_training_metrics
from tests.model.conftest import RUN

SMALL = {"hidden": 32, "batch_size": 64, "threads": 1, "progress": False, "max_len": 20}


def _cfg(**overrides: object) -> TrainConfig:
    return TrainConfig.model_validate({**SMALL, **overrides})


@pytest.fixture(scope="module")
def trained(
    tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Path]:
    out = tmp_path_factory.mktemp("trained")
    torch.set_num_threads(1)
    return train(_cfg(epochs=10, lr=3e-3), RUN, tiny_prepared, out), out


def test_model_beats_most_popular(trained: tuple[TrainResult, Path]) -> None:
    result, _ = trained
    popular = result.baselines["most_popular"]["ndcg@10"]
    assert result.test["ndcg@10"] > 1.3 * popular, (result.test, result.baselines)
    assert result.test["hr@10"] > result.baselines["most_popular"]["hr@10"]


def test_outputs_of_a_run(trained: tuple[TrainResult, Path]) -> None:
    result, out = trained
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == list(range(1, result.epochs_run + 1))
    assert all(set(row["valid"]) >= {"ndcg@10", "hr@20", "mrr@10"} for row in history)
    csv_lines = (out / "plots" / "train.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,loss,valid_hr@10,valid_ndcg@10")
    assert len(csv_lines) == result.epochs_run + 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema_version"] == 3
    assert metrics["test"] == result.test
    assert set(metrics["baselines"]) == {"most_popular", "item_transition"}
    assert metrics["baselines"]["most_popular"] == result.baselines["most_popular"]
    assert metrics["protocol"] == {"mask_history": False, "ties": "index"}
    best_valid = max(row["valid"]["ndcg@10"] for row in history)
    assert metrics["best_valid"]["ndcg@10"] == best_valid
    assert (out / "checkpoints" / "last.pt").is_file()
    assert (out / "checkpoints" / "best.pt").is_file()


def test_saved_model_reproduces_the_test_scores(
    trained: tuple[TrainResult, Path], tiny_prepared: Path
) -> None:
    from pipelines.data.prepared import load_prepared
    from pipelines.model.ranking import ranking_metrics
    from pipelines.model.sasrec import ModelSpec

    result, out = trained
    saved = torch.load(out / "model.pt", weights_only=False)
    data = load_prepared(tiny_prepared)
    model = SASRec(ModelSpec(**saved["spec"]), data.item_category)
    model.load_state_dict(saved["model"])
    model.eval()
    test = ranking_metrics(model.score, data.test_history, data.test_target)
    assert test == pytest.approx(result.test, abs=1e-6)
    top = model.score(torch.from_numpy(left_pad(data.test_history[:50], 20))).topk(20).indices
    assert not (top == 0).any()


def test_rerun_gives_the_same_bytes_and_resume_matches_an_uninterrupted_run(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    straight = train(_cfg(epochs=3), RUN, tiny_prepared, tmp_path / "straight")
    again = train(_cfg(epochs=3), RUN, tiny_prepared, tmp_path / "again")
    assert again == straight
    for name in ("model.pt", "metrics.json", "metrics.schema.json", "history.jsonl"):
        assert sha256_file(tmp_path / "again" / name) == sha256_file(tmp_path / "straight" / name)
    assert sha256_file(tmp_path / "again" / "plots/train.csv") == sha256_file(
        tmp_path / "straight" / "plots/train.csv"
    )

    first = train(_cfg(epochs=2), RUN, tiny_prepared, tmp_path / "resumed")
    assert (first.resumed_from, first.epochs_run) == (0, 2)
    resumed = train(_cfg(epochs=3), RUN, tiny_prepared, tmp_path / "resumed")
    assert (resumed.resumed_from, resumed.epochs_run) == (2, 3)
    assert resumed.test == straight.test
    for name in ("model.pt", "history.jsonl"):
        assert sha256_file(tmp_path / "resumed" / name) == sha256_file(tmp_path / "straight" / name)

    # a finished run is not trained again
    done = train(_cfg(epochs=3), RUN, tiny_prepared, tmp_path / "resumed")
    assert (done.resumed_from, done.epochs_run) == (3, 3)
    assert done.test == straight.test


def test_the_new_training_options_resume_exactly(tiny_prepared: Path, tmp_path: Path) -> None:
    # the weight average travels in the checkpoint
    options = {
        "window_stride": 5,
        "window_targets": "newest",
        "label_smoothing": 0.1,
        "ema_decay": 0.99,
    }
    cfg = _cfg(epochs=3, **options)
    straight = train(cfg, RUN, tiny_prepared, tmp_path / "straight")

    def crash_after_epoch_2(row: dict[str, object]) -> None:
        if row["epoch"] == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, RUN, tiny_prepared, tmp_path / "resumed", on_epoch=crash_after_epoch_2)
    resumed = train(cfg, RUN, tiny_prepared, tmp_path / "resumed")
    assert (resumed.resumed_from, resumed.test) == (2, straight.test)
    for name in ("model.pt", "history.jsonl"):
        assert sha256_file(tmp_path / "resumed" / name) == sha256_file(tmp_path / "straight" / name)
    # the saved model is the average the validation judged, not the last raw weights
    saved = torch.load(tmp_path / "straight" / "model.pt", weights_only=False)["model"]
    last = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    assert "average" in last
    best = torch.load(tmp_path / "straight" / "checkpoints" / "best.pt", weights_only=False)
    assert all(torch.equal(saved[name], best["model"][name]) for name in saved)
    shadow = last["average"]["shadow"]
    assert not torch.equal(shadow["item_emb.weight"], last["model"]["item_emb.weight"])
    if best["epoch"] == 3:
        assert all(torch.equal(saved[name], shadow[name]) for name in shadow)


def test_weight_average_follows_the_weights_and_swaps_in_and_out() -> None:
    from pipelines.model.training.averaging import WeightAverage

    layer = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(layer.weight)
    average = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average.update(layer)  # first update: decay min(0.5, 2 / 11)
    expected = 1.0 - 2 / 11
    assert torch.allclose(average.shadow["weight"], torch.full((1, 2), expected))
    with average.applied(layer):
        assert torch.allclose(layer.weight, torch.full((1, 2), expected))
    assert torch.equal(layer.weight, torch.ones(1, 2))
    copy = WeightAverage(layer, decay=0.5)
    copy.load_state_dict(average.state_dict())
    assert copy.updates == 1 and torch.equal(copy.shadow["weight"], average.shadow["weight"])


def test_sampled_softmax_training_beats_most_popular(tiny_prepared: Path, tmp_path: Path) -> None:
    cfg = _cfg(epochs=4, lr=3e-3, loss="sampled_softmax", num_negatives=32)
    result = train(cfg, RUN, tiny_prepared, tmp_path)
    assert result.epochs_run == 4
    # about 1.5x on this data; the margin leaves room for other CPUs' float rounding
    popular = result.baselines["most_popular"]["ndcg@10"]
    assert result.test["ndcg@10"] > 1.3 * popular, (result.test, result.baselines)


def test_metrics_are_a_contract_with_a_schema(trained: tuple[TrainResult, Path]) -> None:
    result, out = trained
    metrics = read_training_metrics(out)
    assert metrics.test.ndcg_at_10 == result.test["ndcg@10"]
    assert metrics.baselines.most_popular.hr_at_10 == result.baselines["most_popular"]["hr@10"]
    assert (metrics.best_epoch, metrics.epochs_run) == (result.best_epoch, result.epochs_run)
    assert (out / "metrics.schema.json").read_text() == schema_text(TrainingMetrics)
    schema = json.loads((out / "metrics.schema.json").read_text())
    assert "ndcg@10" in schema["$defs"]["RankingMetrics"]["required"]


def test_invalid_metrics_are_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"metrics\.json not found"):
        read_training_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text(
        json.dumps({"schema_version": 3, "best_epoch": "3", "test": {"hr@10": 0.5}})
    )
    with pytest.raises(InputError, match="not a valid training metrics document") as info:
        read_training_metrics(tmp_path)
    message = str(info.value)
    assert "best_epoch: Input should be a valid integer" in message
    assert "test.ndcg@10: Field required" in message
    assert "epochs_run: Field required" in message


def test_early_stopping_stops_after_patience(tiny_prepared: Path, tmp_path: Path) -> None:
    # a learning rate of almost 0 never improves on the first evaluation
    result = train(_cfg(epochs=50, patience=2, lr=1e-12), RUN, tiny_prepared, tmp_path)
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 2


def test_evaluation_every_other_epoch_and_always_after_the_last(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    train(_cfg(epochs=3, eval_every=2), RUN, tiny_prepared, tmp_path)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert ["valid" in row for row in history] == [False, True, True]
    rows = (tmp_path / "plots" / "train.csv").read_text().splitlines()
    assert rows[1].endswith(",,,,,,")


def test_checkpoint_of_other_data_is_not_resumed(tiny_prepared: Path, tmp_path: Path) -> None:
    """A finished run's checkpoint must not stand in for training on a new batch."""
    import shutil

    from pipelines.data.preparation import prepare

    out = tmp_path / "candidate"
    first = train(_cfg(epochs=2), RUN, tiny_prepared, out)
    assert first.epochs_run == 2
    # the same model settings on other prepared data (a different split of the same events)
    other = tmp_path / "other"
    source = tmp_path / "source"
    shutil.copytree(tiny_prepared.parent / "source", source)
    prepare(PrepareConfig(max_sequence_length=30), RUN, source, other)
    second = train(_cfg(epochs=2), RUN, other, out)
    assert second.resumed_from == 0
    assert second.epochs_run == 2


def test_windows_with_a_stride_cover_old_steps_of_long_sequences() -> None:
    import numpy as np

    from pipelines.model.training.examples import training_windows as _windows

    long = np.arange(1, 13)  # 12 steps, windows of max_len + 1 = 5
    short = np.array([7, 8, 9])
    one = np.array([4])  # nothing to predict: no window
    newest = _windows([long, short, one], max_len=4)
    assert newest.tolist() == [[8, 9, 10, 11, 12], [0, 0, 7, 8, 9]]
    strided = _windows([long, short, one], max_len=4, stride=4).tolist()
    # windows end 4 and 8 steps before the end, and the oldest one ends at the window width
    assert strided == [
        [8, 9, 10, 11, 12],
        [4, 5, 6, 7, 8],
        [1, 2, 3, 4, 5],
        [0, 0, 7, 8, 9],
    ]
    # every step of the long sequence is a target (or the first step) in some window
    covered = {step for row in strided[:3] for step in row}
    assert covered == set(range(1, 13))


def test_newest_window_targets_train_every_step_once() -> None:
    import numpy as np

    from pipelines.model.training.examples import older_targets, training_windows

    long = np.arange(1, 13)  # 12 steps, windows of max_len + 1 = 5
    short = np.array([7, 8, 9])
    sequences = [long, short, np.array([4])]
    windows = training_windows(sequences, max_len=4, stride=3)
    skip = older_targets(sequences, max_len=4, stride=3)
    assert windows.tolist() == [
        [8, 9, 10, 11, 12],
        [5, 6, 7, 8, 9],
        [2, 3, 4, 5, 6],
        [1, 2, 3, 4, 5],
        [0, 0, 7, 8, 9],
    ]
    # the window ending at step 5 shares targets 3, 4, 5 with the oldest one, which trains them
    assert skip.tolist() == [1, 1, 3, 0, 0]
    trained = [
        step
        for row, first in zip(windows.tolist(), skip.tolist(), strict=True)
        for position, step in enumerate(row[1:])
        if position >= first and step > 0 and row[position] > 0
    ]
    assert sorted(trained) == sorted([*range(2, 13), 8, 9])  # each step of both sequences once
    assert older_targets(sequences, max_len=4).tolist() == [0, 0]  # newest windows only


def test_newest_window_targets_train_and_change_the_run(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    every = train(_cfg(epochs=2, window_stride=5), RUN, tiny_prepared, tmp_path / "all")
    newest = train(
        _cfg(epochs=2, window_stride=5, window_targets="newest"),
        RUN,
        tiny_prepared,
        tmp_path / "new",
    )
    assert newest.best_valid != every.best_valid
    assert newest.test["ndcg@10"] > newest.baselines["most_popular"]["ndcg@10"] * 0.5


def test_on_epoch_sees_every_epoch_row(tiny_prepared: Path, tmp_path: Path) -> None:
    rows: list[dict[str, object]] = []
    train(_cfg(epochs=2, window_stride=10), RUN, tiny_prepared, tmp_path, on_epoch=rows.append)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert rows == history
    assert [row["epoch"] for row in rows] == [1, 2]


# ---------------------------------------------------------------------- sampled validation
def test_the_validation_sample_is_fixed_by_the_seed_and_every_user_when_small() -> None:
    assert valid_sample(500, None, 1).rows is None
    assert valid_sample(500, 500, 1).rows is None and valid_sample(500, 900, 1).users == 500
    drawn = valid_sample(500, 100, 7)
    assert drawn.rows is not None and drawn.to_json() == {"users": 100, "of": 500, "seed": 7}
    assert list(drawn.rows) == sorted(set(drawn.rows.tolist()))
    assert drawn.rows.min() >= 0 and drawn.rows.max() < 500
    again = valid_sample(500, 100, 7).rows
    assert again is not None and (drawn.rows == again).all()
    other = valid_sample(500, 100, 8).rows
    assert other is not None and not (drawn.rows == other).all()


def test_standard_errors_are_the_users_spread_over_root_n() -> None:
    from pipelines.model.ranking import (
        batch_metric_values,
        mask_scores,
        ranking_metrics,
        ranking_moments,
    )

    generator = torch.Generator().manual_seed(3)
    table = torch.randn(60, 41, generator=generator)

    def score(history: torch.Tensor) -> torch.Tensor:
        # a fixed score table looked up by the last item: each user gets another ranking
        return table[history[:, -1] % 60]

    histories = [np.array([1 + (u * 7) % 40, 1 + u % 40]) for u in range(60)]
    targets = np.array([1 + (u * 13) % 40 for u in range(60)])
    means, errors = ranking_moments(score, histories, targets, batch_size=16)
    assert means == ranking_metrics(score, histories, targets, batch_size=16)
    history = torch.from_numpy(left_pad(histories, 2))
    values = batch_metric_values(mask_scores(score(history)), torch.from_numpy(targets))
    for name, per_user in values.items():
        spread = per_user.numpy()
        assert means[name] == pytest.approx(spread.mean())
        assert errors[name] == pytest.approx(spread.std(ddof=1) / np.sqrt(len(spread)))
    assert errors["ndcg@10"] > 0


def test_a_sampled_validation_is_named_in_the_history_and_the_metrics(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    result = train(_cfg(epochs=2, valid_users=200), RUN, tiny_prepared, tmp_path)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [row["valid_users"] for row in history] == [200, 200]
    assert all(0 < row["valid_ci95"]["ndcg@10"] < 0.2 for row in history)
    metrics = read_training_metrics(tmp_path)
    of = len(load_prepared(tiny_prepared).valid_target)
    assert metrics.best_valid_users is not None
    assert metrics.best_valid_users.model_dump() == {"users": 200, "of": of, "seed": RUN.seed}
    tests = len(load_prepared(tiny_prepared).test_target)
    assert metrics.test_users.model_dump() == {"users": tests, "of": tests, "seed": None}
    assert result.test == metrics.test.model_dump(by_alias=True)


def test_a_sample_as_large_as_the_split_changes_no_byte(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    """The default sample size leaves a run on fewer users than it unchanged: every user."""
    every = len(load_prepared(tiny_prepared).valid_target)
    for name, size in (("all", None), ("default", every)):
        train(_cfg(epochs=2, valid_users=size), RUN, tiny_prepared, tmp_path / name)
    for output in ("metrics.json", "history.jsonl", "checkpoints/best.pt"):
        assert sha256_file(tmp_path / "all" / output) == sha256_file(
            tmp_path / "default" / output
        ), output
    # model.pt differs only in the config it carries (the setting itself)
    saved = [
        torch.load(tmp_path / name / "model.pt", weights_only=True) for name in ("all", "default")
    ]
    assert saved[0]["config"] == {**saved[1]["config"], "valid_users": None}
    assert saved[0]["model"].keys() == saved[1]["model"].keys()
    assert all(torch.equal(saved[0]["model"][k], saved[1]["model"][k]) for k in saved[0]["model"])
