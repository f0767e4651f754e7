"""The run overlay: the one path by which a run's trigger-form values reach the stages.

A run's form (Airflow's trigger form, rendered as JSON: data date, data source, epochs,
training processes per node) never edits ``params.yaml``. The DAG's first task,
``set_logical_date``, turns it into ``params.run.yaml`` beside ``params.yaml``, and
:func:`pipelines.core.params.load_params` reads that file over ``params.yaml``, so every stage
sees the run's values through the call it already makes.

The overlay holds a fixed set of keys (:data:`RUN_KEYS`), each ``null`` ("params.yaml's
value") unless the run's form gave a value that differs from ``params.yaml``'s. It is written
whole every run, so a run never inherits an earlier run's values: a form with ``epochs: 1`` and
then one without epochs leave ``train.epochs`` at ``params.yaml``'s value. The write takes a lock
file (``params.run.yaml.lock``) and replaces the file atomically: two first tasks at once leave
one complete overlay, never a mix, and a stage reading it meanwhile sees the old or the new one.

DVC stays honest because ``dvc.yaml`` lists, per stage, the overlay keys that stage reads
(``params: - params.run.yaml: [run.logical_date, ...]``): ``dvc.lock`` records both files' values,
so it records what the stage ran with, and ``dvc status`` after a run is clean. DVC needs every
listed key present in the file, hence the fixed shape with nulls (a missing key is an error in
``dvc repro``; the committed file has them all). DVC's own templating (``${...}`` in
``dvc.yaml``) reads ``params.yaml`` alone and refuses a second file that redefines a key, so no
overlay key is templated into a command: the trainer reads ``train.nproc_per_node`` from its
config (``--torchrun``) and ingest reads ``ingest.path`` from its config. Ingest depends on
``params.yaml``'s ``${ingest.path}`` as before and on the whole of :data:`SOURCE_ROOT`, where a
form's path must lie, so whatever a run ingests is hashed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pipelines.core.params.base import ConfigError
from pipelines.core.params.data import IngestConfig

log = logging.getLogger("recflow.run_form")

# The keys a run may set, by section. Each is null in the overlay unless the run's form set it
# to another value than params.yaml's; dvc.yaml lists the ones each stage reads.
RUN_KEYS: dict[str, tuple[str, ...]] = {
    "run": ("logical_date",),
    "generate": ("preset",),
    "ingest": ("source", "path"),
    "train": ("epochs", "nproc_per_node"),
}
# Where data sets live: ingest depends on this whole folder in dvc.yaml, so a path the form
# names is tracked by DVC only inside it.
SOURCE_ROOT = PurePosixPath("data/source")
# The synthetic presets the form's ``source`` may name (anything else is a path).
PRESETS: tuple[str, ...] = ("tiny", "default", "medium", "large", "huge")
# Form fields the DAG's tasks read themselves (rendered params), not written to the overlay.
DAG_FIELDS: tuple[str, ...] = ("execution", "skip_deploy", "require_approval", "force_retrain")
FORM_FIELDS: tuple[str, ...] = ("data_date", "source", "epochs", "nproc_per_node", *DAG_FIELDS)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_NPROC = 64

OVERLAY_HEADER = """\
# The run overlay: the values of the last run's trigger form that differ from params.yaml
# (null: params.yaml's value). The DAG's first task (set_logical_date) replaces it whole each
# run; every stage reads it over params.yaml (load_params), and dvc.yaml lists its keys as
# params, so dvc.lock records what each stage ran with. Edit params.yaml, not this file; to
# clear it: python -m pipelines.stages.set_logical_date --form '{}' --set-logical-date DATE
"""


def overlay_path(params_path: Path | str) -> Path:
    """The overlay beside a params file: ``params.yaml`` -> ``params.run.yaml``."""
    params_path = Path(params_path)
    return params_path.with_name(f"{params_path.stem}.run{params_path.suffix or '.yaml'}")


def read_overlay(path: Path) -> dict[str, Any]:
    """The values the overlay at ``path`` sets, as ``{"train.epochs": 1}`` (nulls left out).

    A missing or empty file sets nothing.

    Raises:
        ConfigError: The file is not YAML, not a mapping of sections, or holds a key a run may
            not set; the message names the file and the key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return read_values(text, path)


def read_values(text: str, path: Path) -> dict[str, Any]:
    """The values an overlay's ``text`` sets (see :func:`read_overlay`; ``path`` for messages)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"run overlay {path} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"run overlay {path} must be a mapping of sections")
    values: dict[str, Any] = {}
    for section, keys in raw.items():
        if section not in RUN_KEYS:
            raise ConfigError(f"run overlay {path}: {section}: {_not_a_run_key()}")
        if keys is None:
            continue
        if not isinstance(keys, dict):
            raise ConfigError(f"run overlay {path}: {section} must be a mapping of keys")
        for key, value in keys.items():
            if key not in RUN_KEYS[section]:
                raise ConfigError(f"run overlay {path}: {section}.{key}: {_not_a_run_key()}")
            if value is not None:
                values[f"{section}.{key}"] = value
    return values


def _not_a_run_key() -> str:
    allowed = ", ".join(f"{s}.{k}" for s, keys in RUN_KEYS.items() for k in keys)
    return f"not a key a run may set (allowed: {allowed}); edit params.yaml instead"


def apply_overlay(raw: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` (params.yaml as read) with the dotted ``values`` set; ``raw`` is not changed."""
    merged = dict(raw)
    for dotted, value in values.items():
        section, key = dotted.split(".", 1)
        current = merged.get(section)
        merged[section] = {**(current if isinstance(current, dict) else {}), key: value}
    return merged


def form_date(value: Any) -> dt.date | None:
    """The form's ``data_date``: None for null.

    Raises:
        ConfigError: Not ``YYYY-MM-DD`` or not a calendar date; the message names the field.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ConfigError(f"--form: data_date: expected YYYY-MM-DD or null, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"--form: data_date: {value!r} is not a calendar date ({exc})") from exc


def _form_int(form: Mapping[str, Any], field: str, high: int | None) -> int | None:
    value = form.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"--form: {field}: expected a whole number or null, got {value!r}")
    if value < 1 or (high is not None and value > high):
        bounds = f"1..{high}" if high is not None else ">= 1"
        raise ConfigError(f"--form: {field}: must be {bounds}, got {value}")
    return value


def _form_source(value: Any, root: Path) -> dict[str, Any]:
    """The overlay keys a form's ``source`` sets: a synthetic preset, or a path to ingest."""
    if value is None:
        return {}
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"--form: source: expected a preset or a path, got {value!r}")
    if value in PRESETS:
        # a preset means: generate that preset and ingest what the generator writes
        synthetic = IngestConfig()
        return {
            "generate.preset": value,
            "ingest.source": synthetic.source,
            "ingest.path": synthetic.path,
        }
    path = PurePosixPath(value)
    inside = not path.is_absolute() and ".." not in path.parts and path != SOURCE_ROOT
    if not inside or path.parts[: len(SOURCE_ROOT.parts)] != SOURCE_ROOT.parts:
        raise ConfigError(
            f"--form: source: {value!r} is neither a preset ({' | '.join(PRESETS)}) nor a path "
            f"under {SOURCE_ROOT}/ (ingest's input that DVC tracks)"
        )
    if not (root / path).exists():
        raise ConfigError(f"--form: source: no file or folder {value!r} in the project")
    return {"ingest.path": str(path)}


def run_values(
    form: Mapping[str, Any],
    base: Mapping[str, Any],
    logical_date: dt.date | None,
    root: Path,
) -> dict[str, Any]:
    """The overlay values of a run: the form's values that differ from ``base``.

    Args:
        form: The trigger form, parsed from JSON (fields :data:`FORM_FIELDS`; null or absent:
            params.yaml's value). The DAG's own fields (:data:`DAG_FIELDS`) are ignored.
        base: ``params.yaml`` alone, without an overlay, as validated and dumped by its keys
            (``Params.model_dump(by_alias=True)``).
        logical_date: The run's date when the form's ``data_date`` is null (the DAG run's
            date); None: the form must give one.
        root: The project root, where a form's source path must exist.

    Returns:
        Dotted key to value, only where the run differs from ``base``.

    Raises:
        ConfigError: A field is unknown or has a bad value; the message names the field.
    """
    unknown = sorted(set(form) - set(FORM_FIELDS))
    if unknown:
        raise ConfigError(f"--form: {unknown[0]}: unknown field (fields: {', '.join(FORM_FIELDS)})")
    date = form_date(form.get("data_date"))
    date = date or logical_date
    if date is None:
        raise ConfigError("--form: data_date: null and the run has no logical date to use")
    wanted: dict[str, Any] = {
        "run.logical_date": date,
        **_form_source(form.get("source"), root),
        "train.epochs": _form_int(form, "epochs", None),
        "train.nproc_per_node": _form_int(form, "nproc_per_node", _MAX_NPROC),
    }
    values = {}
    for dotted, value in wanted.items():
        section, key = dotted.split(".", 1)
        if value is not None and base[section][key] != value:
            values[dotted] = value
    return values


def overlay_text(values: Mapping[str, Any]) -> str:
    """The overlay file's text: every key of :data:`RUN_KEYS`, null where ``values`` lacks it."""
    extra = sorted(set(values) - {f"{s}.{k}" for s, keys in RUN_KEYS.items() for k in keys})
    if extra:
        raise ConfigError(f"run overlay: {extra[0]}: {_not_a_run_key()}")
    shape = {
        section: {key: _plain(values.get(f"{section}.{key}")) for key in keys}
        for section, keys in RUN_KEYS.items()
    }
    return OVERLAY_HEADER + yaml.safe_dump(shape, sort_keys=False, default_flow_style=False)


def _plain(value: Any) -> Any:
    # a date as quoted text, as params.yaml writes it (and as dvc.lock then records it)
    return value.isoformat() if isinstance(value, dt.date) else value


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a new file beside ``path`` and rename it over ``path`` (atomic).

    Not ``pipelines.core.io.atomic_path``: that module loads pyarrow, and the params (with this
    module) are loaded by DAG files, which must stay light to parse.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(name, 0o644)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def overlay_lock(path: Path) -> Iterator[None]:
    """Hold the overlay's lock file (``<overlay>.lock``) for the block; waits for another holder."""
    lock = path.with_name(f"{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def replace_overlay(path: Path, text: str, values: Mapping[str, Any], source: str) -> bool:
    """Replace the overlay at ``path`` with ``text`` (checked by the caller: ``loading``'s
    ``write_overlay``), under its lock and atomically; the same content writes nothing.

    Args:
        path: The overlay file.
        text: Its new text (:func:`overlay_text` of ``values``).
        values: The values it sets, for the log line.
        source: The params file's name, for the log line.

    Returns:
        True when the file changed.
    """
    with overlay_lock(path):
        try:
            if path.read_text(encoding="utf-8") == text:
                log.info("run overlay %s already holds this run's values", path)
                return False
        except FileNotFoundError:
            pass
        _replace(path, text)
    shown = ", ".join(f"{k}={_plain(v)}" for k, v in values.items()) or "none"
    log.info("run overlay %s: %s (all else from %s)", path, shown, source)
    return True
