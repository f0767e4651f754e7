"""The whole of ``params.yaml``: :class:`Params`, reading it, its error messages, overrides.

:func:`load_params` reads ``params.yaml`` and, over it, the run overlay ``params.run.yaml``
beside it: the values of the current run's trigger form (:mod:`pipelines.core.params.run_form`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError

from pipelines.core.params.base import ConfigError, StrictModel
from pipelines.core.params.data import (
    GenerateConfig,
    IngestConfig,
    PrepareConfig,
    RunConfig,
    ValidateConfig,
)
from pipelines.core.params.deploy import DeployConfig
from pipelines.core.params.execution import AirflowConfig, ExecutionConfig
from pipelines.core.params.gate import EvaluateConfig
from pipelines.core.params.monitor import MonitorConfig
from pipelines.core.params.registry import RegistryConfig, StoresConfig
from pipelines.core.params.run_form import (
    apply_overlay,
    overlay_path,
    overlay_text,
    read_overlay,
    read_values,
    replace_overlay,
    run_values,
)
from pipelines.core.params.serving import OptimizeConfig, ServeConfig
from pipelines.core.params.training import TrainConfig

DEFAULT_PARAMS = Path("params.yaml")

# text that YAML 1.1 leaves a string although it reads as a number, e.g. 1e-3 (no dot)
_NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class Params(StrictModel):
    """The whole of ``params.yaml``: unknown sections are an error."""

    run: RunConfig
    generate: GenerateConfig = GenerateConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    airflow: AirflowConfig = AirflowConfig()
    execution: ExecutionConfig = ExecutionConfig()
    serve: ServeConfig = ServeConfig()
    stores: StoresConfig = StoresConfig()
    registry: RegistryConfig = RegistryConfig()
    deploy: DeployConfig = DeployConfig()
    monitor: MonitorConfig = MonitorConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def read_params_file(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read ``params.yaml`` as a mapping, with a clear error when it is missing or malformed."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"params file {path} must be a mapping of sections")
    return raw


def format_errors(exc: ValidationError, where: str) -> str:
    """A config error for a person: one line per problem, naming its key (``train.hiden``)."""
    lines = [f"invalid configuration in {where}:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(section)"
        lines.append(f"  {loc}: {_message(err)}")
    return "\n".join(lines)


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    message = str(err["msg"])
    value = err.get("input")
    if err["type"].endswith("_type"):
        # a wrong type: say what was given, since strict parsing never converts it
        message += f", got {value!r} ({type(value).__name__})"
        if err["type"] == "float_type" and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
            message += "; YAML reads a number without a dot as text: write e.g. 1.0e-3"
    return message


def _validate(raw: Mapping[str, Any], where: str) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from exc


def load_params(path: Path | str = DEFAULT_PARAMS, *, overlay: bool = True) -> Params:
    """Load and check the whole of ``params.yaml``, with the run overlay beside it on top.

    Args:
        path: The params file.
        overlay: Read the run overlay (``params.run.yaml`` beside ``path``; a missing one sets
            nothing). False: ``params.yaml`` alone, e.g. to parse a DAG, whose tasks must not
            depend on the last run's form.

    Raises:
        ConfigError: Either file is missing (the params file), malformed or invalid; the
            message names the file and the key.
    """
    raw = read_params_file(path)
    params = _validate(raw, str(path))
    if not overlay:
        return params
    where = overlay_path(path)
    values = read_overlay(where)
    return _validate(apply_overlay(raw, values), f"{where} over {path}") if values else params


def params_with(path: Path | str, values: Mapping[str, Any], where: str) -> Params:
    """``params.yaml`` at ``path`` with the run values ``values`` (``{"train.epochs": 1}``) on top.

    Raises:
        ConfigError: The file or a value is invalid; a bad value is named as coming from
            ``where``.
    """
    raw = read_params_file(path)
    _validate(raw, str(path))
    return _validate(apply_overlay(raw, values), f"{where} over {path}")


def with_overrides(
    params: Params, section: str, overrides: Mapping[str, Any], where: str
) -> Params:
    """``params`` with the keys of one section replaced, checked as strictly as the file.

    Args:
        params: The checked params.
        section: The section the overrides go to (``train``).
        overrides: New values of its keys, e.g. parsed from ``--config-json``.
        where: Where the overrides come from, for the message.

    Raises:
        ConfigError: An override names an unknown key or has a wrong type or value; the
            message names it as ``section.key``.
    """
    # python-mode dump: dates, tuples and paths stay objects the strict models accept
    values = params.model_dump(by_alias=True)
    if not isinstance(values.get(section), dict):
        raise ConfigError(f"params have no section {section!r}")
    values[section] = {**values[section], **overrides}
    try:
        return Params.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from exc


def with_json_overrides(params: Params, section: str, text: str, flag: str, where: str) -> Params:
    """``params`` with one section's keys replaced by the JSON object ``text``, given as ``flag``.

    Raises:
        ConfigError: ``text`` is not JSON or not an object (the message names ``flag``), or an
            override is invalid as in :func:`with_overrides`.
    """
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(extra, dict):
        raise ConfigError(f"{flag} must be a JSON object")
    return with_overrides(params, section, extra, f"{flag} over {where}")


def set_run(
    params_path: Path | str, form: Mapping[str, Any], logical_date: dt.date | None
) -> dict[str, Any]:
    """Write the overlay of a run: the form's values over ``params.yaml`` (see
    :func:`pipelines.core.params.run_form.run_values`).

    Returns:
        The values the overlay now sets.

    Raises:
        ConfigError: The params file, a form field or the resulting params are invalid.
    """
    params_path = Path(params_path)
    base = load_params(params_path, overlay=False)
    values = run_values(
        form, base.model_dump(by_alias=True), logical_date, params_path.resolve().parent
    )
    write_overlay(params_path, values)
    return values


def write_overlay(params_path: Path | str, values: Mapping[str, Any]) -> bool:
    """Replace the overlay beside ``params_path`` with one that sets exactly ``values``.

    Under the overlay's lock, atomically; the same content writes nothing.

    Returns:
        True when the file changed.

    Raises:
        ConfigError: ``values`` names a key a run may not set, or the params file with the new
            overlay does not pass the strict checks (nothing is written then).
    """
    params_path = Path(params_path)
    path = overlay_path(params_path)
    text = overlay_text(values)
    params_with(params_path, read_values(text, path), str(path))
    return replace_overlay(path, text, values, params_path.name)
