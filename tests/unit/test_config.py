"""The typed config rejects unknown keys and wrong types with messages naming them.

Parsing is strict: nothing is converted from another type, except an integer for a float,
``YYYY-MM-DD`` text (or a YAML date) for a date, a list for a tuple and text for a path.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import get_args

import pytest
import yaml

from pipelines.core.params import (
    NEVER_CROSS,
    ConfigError,
    CrossingConfig,
    CrossingKind,
    ObjectKind,
    PrivateKind,
    ValidateConfig,
    load_params,
    with_overrides,
)


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_project_params_load(project_root: Path) -> None:
    params = load_params(project_root / "params.yaml")
    assert isinstance(params.run.logical_date, dt.date)
    assert params.generate.preset in {"tiny", "default", "medium", "large", "huge"}


def test_each_section_is_its_typed_config(project_root: Path) -> None:
    # "validate" is a method name of pydantic models: the section is read into validate_
    cfg = load_params(project_root / "params.yaml").validate_
    assert isinstance(cfg, ValidateConfig)
    assert cfg.price_min > 0


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"run": {"logical_date": "2026-01-01"}, "generate": {"presett": "tiny"}}
    )
    with pytest.raises(ConfigError, match=r"generate\.presett: unknown key"):
        load_params(path)


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, {"run": {"logical_date": "2026-01-01"}, "trian": {}})
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        load_params(path)


def test_wrong_type_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"run": {"logical_date": "2026-01-01"}, "validate": {"min_rows": "many"}}
    )
    with pytest.raises(ConfigError, match=r"validate\.min_rows"):
        load_params(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a string for an int, even one that reads as a number
        (
            'validate: {min_rows: "250"}',
            "validate.min_rows: Input should be a valid integer, got '250' (str)",
        ),
        # a string for a bool: YAML 1.1's yes is a bool, quoted it is text
        (
            'train: {progress: "yes"}',
            "train.progress: Input should be a valid boolean, got 'yes' (str)",
        ),
        ("train: {epochs: 2.5}", "train.epochs: Input should be a valid integer, got 2.5 (float)"),
        # a float that happens to be whole is still not an int
        ("validate: {min_rows: 250.0}", "validate.min_rows: Input should be a valid integer"),
        ('train: {lr: "0.003"}', "train.lr: Input should be a valid number, got '0.003' (str)"),
        # YAML 1.1 reads 1e-3 (no dot) as text: the message says how to write it
        ("train: {lr: 1e-3}", "train.lr: Input should be a valid number, got '1e-3' (str); YAML"),
        ("train: {lr: true}", "train.lr: Input should be a valid number, got True (bool)"),
        (
            "ingest: {default_category: 7}",
            "ingest.default_category: Input should be a valid string",
        ),
        ("airflow: {tags: recflow}", "airflow.tags: Input should be a valid tuple, got 'recflow'"),
        ("optimize: {latency: {batches: [1, '32']}}", "optimize.latency.batches.1: Input should"),
        ('run: {logical_date: "2026-13-01"}', "run.logical_date: Value error, '2026-13-01' is not"),
        ('run: {logical_date: "22.11.2026"}', "run.logical_date: Value error, expected a date as"),
        ("run: {logical_date: 20261122}", "run.logical_date: Value error, expected a date as"),
        (
            "run: {logical_date: 2026-11-22 10:00:00}",
            "run.logical_date: Value error, expected a date",
        ),
        (
            "generate: {drift: 0.5}",
            "generate.drift: Input should be a valid dictionary or instance",
        ),
        ("optimize: {parity: {thresholds: {fp32: 0.1}}}", "optimize.parity.thresholds.fp32: Input"),
        ("evaluate: {quality: {min_absolute: {ndcg@10: low}}}", "evaluate.quality.min_absolute"),
        (
            'registry: {cache: ""}',
            "registry.cache: Value error, a path must not be empty",
        ),
        ("validate: {min_rowz: 3}", "validate.min_rowz: unknown key"),
        ("train: {drift: {category_shift: 0.1}}", "train.drift: unknown key"),
    ],
)
def test_each_kind_of_wrong_value_is_an_error_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "params.yaml"
    run = "run: {logical_date: '2026-01-01'}\n" if not text.startswith("run:") else ""
    path.write_text(run + text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert message in str(info.value)


def test_conversions_that_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        "run: {logical_date: 2026-11-22}\n"  # unquoted: YAML makes it a date
        "validate: {min_timestamp: '1999-12-31', price_max: 500}\n"  # an int for a float
        "optimize: {latency: {batches: [1, 8]}, ship_order: [onnxruntime-fp32]}\n"
        "registry: {cache: stores/other-cache}\n",
        encoding="utf-8",
    )
    params = load_params(path)
    assert params.run.logical_date == dt.date(2026, 11, 22)
    assert params.validate_.min_timestamp == dt.date(1999, 12, 31)
    assert params.validate_.price_max == 500.0 and isinstance(params.validate_.price_max, float)
    assert params.optimize.latency.batches == (1, 8)
    assert params.optimize.ship_order == ("onnxruntime-fp32",)
    assert params.registry.cache == Path("stores/other-cache")


def test_overrides_are_as_strict_as_the_file(project_root: Path) -> None:
    params = load_params(project_root / "params.yaml")
    changed = with_overrides(params, "train", {"epochs": 3, "dropout": 0}, "--config-json")
    assert (changed.train.epochs, changed.train.dropout) == (3, 0.0)
    assert changed.run == params.run and changed.optimize == params.optimize
    for overrides, message in (
        ({"epochs": "3"}, "train.epochs: Input should be a valid integer"),
        ({"progress": 1}, "train.progress: Input should be a valid boolean"),
        ({"hiden": 3}, "train.hiden: unknown key"),
    ):
        with pytest.raises(ConfigError, match="invalid configuration in --config-json") as info:
            with_overrides(params, "train", overrides, "--config-json")
        assert message in str(info.value)


def test_out_of_range_value_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, {"run": {"logical_date": "2026-01-01"}, "validate": {"price_min": -1}})
    with pytest.raises(ConfigError, match=r"validate\.price_min"):
        load_params(path)


def test_bad_date_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, {"run": {"logical_date": "yesterday"}})
    with pytest.raises(ConfigError, match=r"run\.logical_date"):
        load_params(path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_params(scalar)


def test_config_is_frozen(project_root: Path) -> None:
    cfg = load_params(project_root / "params.yaml").validate_
    with pytest.raises(Exception, match="frozen"):
        cfg.min_rows = 1  # type: ignore[misc]


def test_each_object_kind_lies_in_one_group() -> None:
    # a kind listed both as crossing by default and as private would cross by default
    crossing, private = set(get_args(CrossingKind)), set(get_args(PrivateKind))
    assert not crossing & private
    assert frozenset(private) == NEVER_CROSS
    assert set(get_args(ObjectKind)) == crossing | private | {"ledger", "backup_manifest"}
    assert CrossingConfig().allow == get_args(CrossingKind)
