"""Contracts: the JSON documents one stage writes and other programs read, as typed models.

A contract is a frozen, strict pydantic model with a ``schema_version`` field. It is written
with its JSON schema beside it (``manifest.json`` and ``manifest.schema.json``), both
atomically and with the same bytes on every run, and read back through the model, so a reader
gets typed fields or a message naming what is wrong, never a half-checked dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines.core.errors import InputError
from pipelines.core.io import write_json, write_text

SCHEMA_SUFFIX = ".schema.json"


class Contract(BaseModel):
    """Base of every contract: unknown fields are refused, nothing is coerced, nothing changes.

    The docstring under each field becomes its description in the JSON schema.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True
    )


C = TypeVar("C", bound=Contract)


def schema_path(document: Path) -> Path:
    """Where the schema of ``document`` is written: ``x.json`` -> ``x.schema.json``."""
    return document.with_name(document.stem + SCHEMA_SUFFIX)


def schema_text(model: type[Contract]) -> str:
    """The JSON schema of ``model`` as stable text (sorted keys, trailing newline)."""
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def write_contract(path: Path, document: Contract) -> None:
    """Write ``document`` to ``path`` and its model's JSON schema beside it, each atomically."""
    write_json(path, document.model_dump(mode="json", by_alias=True))
    write_text(schema_path(path), schema_text(type(document)))


def problems(exc: ValidationError) -> str:
    """The problems of a validation error on one line: ``field.sub: message; ...``."""
    parts = []
    for err in exc.errors():
        if err["type"] == "json_invalid":
            parts.append(f"not JSON ({err.get('ctx', {}).get('error', err['msg'])})")
            continue
        loc = ".".join(str(part) for part in err["loc"]) or "(document)"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_contract(text: str | bytes, model: type[C]) -> C:
    """Validate JSON ``text`` as ``model``.

    Raises:
        ValueError: The text is not JSON, or does not match the model; the message names the
            fields and, for another schema version, says which version it is.
    """
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        expected = model.model_fields["schema_version"].annotation
        found = _version_of(text)
        if found is not None and not _is_version(found, expected):
            raise ValueError(
                f"schema version {found!r}, but this code reads {_versions(expected)}"
            ) from exc
        raise ValueError(problems(exc)) from exc


def read_contract(
    path: Path,
    model: type[C],
    what: str,
    *,
    stage: str,
    error: type[InputError] = InputError,
) -> C:
    """The contract in the file ``path``, checked against ``model``.

    Args:
        path: The JSON file.
        model: Its contract.
        what: What it is, for messages ("gate verdict").
        stage: The stage that writes it, for the message when it is missing.
        error: The error to raise (a subclass of ``InputError``).

    Raises:
        InputError: (or ``error``) It is missing, unreadable, of another schema version, or
            does not match ``model``; the message names the file and the fields.
    """
    if not path.is_file():
        raise error(f"{path} not found (run the {stage} stage first)")
    try:
        return parse_contract(path.read_bytes(), model)
    except OSError as exc:
        raise error(f"{path} is not readable: {exc}") from exc
    except ValueError as exc:
        raise error(f"{path} is not a valid {what}: {exc}") from exc


def _version_of(text: str | bytes) -> object:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    return raw.get("schema_version") if isinstance(raw, dict) else None


def _is_version(found: object, expected: object) -> bool:
    return found in getattr(expected, "__args__", ())


def _versions(expected: object) -> str:
    return " or ".join(f"version {v}" for v in getattr(expected, "__args__", ()))
