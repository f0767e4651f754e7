"""Bad inputs of the trainer: config, prepared data and checkpoints, each with its message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InputError
from pipelines.core.params import ConfigError, TrainConfig
from pipelines.data.prepared import load_prepared
from pipelines.model.training.loop import train
from pipelines.stages.train import load_config, main
from tests.model.conftest import RUN

PARAMS = 'run:\n  logical_date: "2026-11-22"\n  seed: 7\n'


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS, encoding="utf-8")
    return path


def test_defaults_without_a_train_section(params: Path) -> None:
    cfg, run = load_config(params)
    assert cfg == TrainConfig()
    assert (cfg.hidden, cfg.layers, cfg.heads, cfg.max_len, cfg.epochs, cfg.patience) == (
        64,
        2,
        2,
        50,
        200,
        10,
    )
    assert (cfg.dropout, cfg.lr, cfg.batch_size, cfg.loss, cfg.seed) == (
        0.2,
        1e-3,
        256,
        "full_softmax",
        None,
    )
    assert run.seed == 7


def test_train_section_and_json_overrides(params: Path) -> None:
    params.write_text(PARAMS + "train:\n  hidden: 32\n  epochs: 5\n", encoding="utf-8")
    cfg, _ = load_config(params, '{"epochs": 3, "loss": "sampled_softmax", "dropout": 0}')
    assert (cfg.hidden, cfg.epochs, cfg.loss, cfg.dropout) == (32, 3, "sampled_softmax", 0.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ('{"hiden": 3}', "train.hiden: unknown key"),
        ('{"loss": "bpr"}', "train.loss: Input should be 'full_softmax' or 'sampled_softmax'"),
        ('{"epochs": 0}', "train.epochs: Input should be greater than or equal to 1"),
        # as strict as params.yaml: nothing is converted from another type
        ('{"epochs": "3"}', "train.epochs: Input should be a valid integer, got '3' (str)"),
        ('{"epochs": 3.0}', "train.epochs: Input should be a valid integer, got 3.0 (float)"),
        ('{"progress": "false"}', "train.progress: Input should be a valid boolean"),
        ('{"lr": "0.01"}', "train.lr: Input should be a valid number, got '0.01' (str)"),
        ('{"epochs": 3', "--config-json is not valid JSON"),
        ("[1, 2]", "--config-json must be a JSON object"),
    ],
)
def test_bad_overrides_are_rejected(params: Path, overrides: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid configuration|--config-json") as info:
        load_config(params, overrides)
    assert message in str(info.value)


def test_bad_run_section_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("run:\n  seed: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"run\.logical_date: Field required"):
        load_config(path)


def test_unknown_key_elsewhere_in_params_is_rejected(params: Path) -> None:
    params.write_text(PARAMS + "train:\n  hiden: 32\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train\.hiden: unknown key"):
        load_config(params)


def test_cli_reports_errors_without_traceback(
    params: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--params", str(params), "--prepared", str(tmp_path / "nope"), "--out", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: item_map.parquet not found" in err
    assert "Traceback" not in err
    assert main(["--params", str(params), "--config-json", '{"layers": -1}']) == 2
    assert "layers: Input should be greater than or equal to 1" in capsys.readouterr().err


@pytest.fixture
def prepared_copy(tiny_prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_prepared, tmp_path / "prepared"))


def test_missing_split_is_reported(prepared_copy: Path) -> None:
    (prepared_copy / "valid.parquet").unlink()
    with pytest.raises(
        InputError, match=r"valid.parquet not found: .* \(run the prepare stage first\)"
    ):
        load_prepared(prepared_copy)


def test_unreadable_parquet_is_reported(prepared_copy: Path) -> None:
    (prepared_copy / "train.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"train\.parquet .* is not a readable Parquet file"):
        load_prepared(prepared_copy)


def test_missing_column_is_reported(prepared_copy: Path) -> None:
    pq.write_table(pa.table({"user_idx": [1]}), prepared_copy / "test.parquet")
    with pytest.raises(InputError, match=r"test.parquet lacks the columns \['history', 'target'\]"):
        load_prepared(prepared_copy)


def test_item_outside_the_item_map_is_reported(prepared_copy: Path) -> None:
    table = pq.read_table(prepared_copy / "test.parquet")
    targets = pa.array([10_000] * table.num_rows, pa.int32())
    table = table.set_column(table.column_names.index("target"), "target", targets)
    pq.write_table(table, prepared_copy / "test.parquet")
    with pytest.raises(InputError, match=r"test.parquet has targets outside 1\.\.150"):
        load_prepared(prepared_copy)


def test_item_map_with_gaps_is_reported(prepared_copy: Path) -> None:
    items = pq.read_table(prepared_copy / "item_map.parquet").slice(1)
    pq.write_table(items, prepared_copy / "item_map.parquet")
    with pytest.raises(InputError, match=r"item_idx must be 1\.\.N without gaps"):
        load_prepared(prepared_copy)


def test_no_trainable_sequence_is_reported(prepared_copy: Path) -> None:
    table = pq.read_table(prepared_copy / "train.parquet")
    short = pa.array([[1]] * table.num_rows, pa.list_(pa.int32()))
    pq.write_table(table.set_column(1, "item_idx", short), prepared_copy / "train.parquet")
    with pytest.raises(InputError, match="has no sequence of two or more steps"):
        load_prepared(prepared_copy)


def test_checkpoint_of_another_model_is_not_resumed(tiny_prepared: Path, tmp_path: Path) -> None:
    base = {"hidden": 16, "threads": 1, "progress": False, "epochs": 1, "max_len": 10}
    train(TrainConfig.model_validate(base), RUN, tiny_prepared, tmp_path)
    other = TrainConfig.model_validate({**base, "hidden": 32, "epochs": 2})
    with pytest.raises(InputError, match=r"last\.pt was trained with other hidden; remove it"):
        train(other, RUN, tiny_prepared, tmp_path)
