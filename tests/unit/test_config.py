"""The typed config rejects unknown keys and wrong types with messages naming them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from pipelines.core.params import (
    ConfigError,
    GenerateConfig,
    ValidateConfig,
    load_params,
    load_section,
)


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_project_params_load(project_root: Path) -> None:
    params = load_params(project_root / "params.yaml")
    assert isinstance(params.run.logical_date, dt.date)
    assert params.generate.preset in {"tiny", "default", "large"}


def test_load_section_returns_the_typed_section(project_root: Path) -> None:
    cfg = load_section("validate", ValidateConfig, project_root / "params.yaml")
    assert isinstance(cfg, ValidateConfig)
    assert cfg.price_min > 0


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"run": {"logical_date": "2026-01-01"}, "generate": {"presett": "tiny"}}
    )
    with pytest.raises(ConfigError, match=r"generate\.presett: unknown key"):
        load_section("generate", GenerateConfig, path)


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
    cfg = load_section("validate", ValidateConfig, project_root / "params.yaml")
    with pytest.raises(Exception, match="frozen"):
        cfg.min_rows = 1  # type: ignore[misc]
