"""The gate's production model, fetched from the registry into a verified local cache."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pipelines.core.errors import InputError
from pipelines.core.io import write_json
from pipelines.core.params import Params
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import open_registry
from pipelines.registry.stores.base import sha256_of
from pipelines.registry.versions import Version, fetch_version, read_lineage, read_version

log = logging.getLogger("recflow.registry.production")

# where the chain keeps the production version its gate compares against (see write_pin)
PIN_FILE = Path("models/production.json")


def _intact(folder: Path, version: Version) -> bool:
    return all(
        (folder / item.path).is_file() and sha256_of(folder / item.path)[0] == item.sha256
        for item in version.files
    )


def production_pin(params: Params, *, root: Path) -> dict[str, str | None]:
    """The version the gate's alias names now: ``{"alias", "cloud", "version"}`` (None: none)."""
    registry = open_registry(params, root)
    alias, cloud = params.registry.gate_alias, params.registry.gate_cloud
    state = read_alias(registry.store(cloud), alias)
    return {"alias": alias, "cloud": cloud, "version": state.version if state else None}


def _trained_for(params: Params, version: str, *, root: Path) -> str | None:
    """The logical date ``version`` was trained for, from its checked lineage (None: unknown)."""
    registry = open_registry(params, root)
    store = registry.store(params.registry.gate_cloud)
    date = read_lineage(store, read_version(store, version)).get("logical_date")
    return date if isinstance(date, str) else None


def read_pin(pin_file: Path) -> dict[str, Any]:
    """The pin file's document, unchecked against the registry.

    Raises:
        InputError: The pin file is missing or malformed.
    """
    try:
        pin = json.loads(pin_file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(
            f"production pin {pin_file} not found (recflow pin_production writes it)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"production pin {pin_file} is not readable JSON: {exc}") from exc
    if not isinstance(pin, dict) or not {"cloud", "version"} <= set(pin):
        raise InputError(f"production pin {pin_file} lacks 'cloud' or 'version'")
    return pin


def write_pin(params: Params, pin_file: Path, *, root: Path) -> dict[str, str | None]:
    """Pin the gate's production version in ``pin_file`` (same bytes while it is unchanged).

    The evaluate stage depends on this file in ``dvc.yaml``: a new production version makes
    DVC judge the candidate again, and a run judges against exactly the pinned version even
    if the alias moves while it runs (the run's own promotion, for one).

    A rerun of a date whose own model already serves keeps the pin the date's first run
    judged against: judging the model against itself would make a new verdict, a new version
    and a second rollout of the same model. So a rerun of the same logical date is a no-op
    (every stage up to date, the same version, nothing rolled out again).
    """
    pin = production_pin(params, root=root)
    try:
        kept: dict[str, Any] | None = read_pin(pin_file)
    except InputError:  # no pin yet, or one to replace
        kept = None
    today = params.run.logical_date.isoformat()
    if (
        pin["version"] is not None
        and kept is not None
        and kept["version"] != pin["version"]
        and (kept.get("alias"), kept["cloud"]) == (pin["alias"], pin["cloud"])
        and _trained_for(params, pin["version"], root=root) == today
    ):
        log.info(
            "production %s was trained for %s, this run's date: the gate keeps the pin of the "
            "date's first run (%s)",
            pin["version"],
            today,
            kept["version"] or "none",
        )
        return kept
    write_json(pin_file, pin)
    return pin


def fetch_pinned(params: Params, pin_file: Path, cache_dir: Path, *, root: Path) -> Path | None:
    """The production folder ``pin_file`` names, fetched and verified; None: none is pinned.

    Raises:
        InputError: The pin file is missing or malformed.
        BadName: Its cloud is not a cloud, or its version not a version id.
        UnknownVersion, ChecksumMismatch, ObjectMissing: The pinned version is not in the
            store, or is corrupt there.
    """
    pin = read_pin(pin_file)
    if pin["version"] is None:
        return None
    registry = open_registry(params, root)
    store = registry.store(str(pin["cloud"]))
    version = read_version(store, str(pin["version"]))
    folder = cache_dir / version.id
    if folder.is_dir() and _intact(folder, version):
        log.info("production %s: verified cached copy %s", version.id, folder)
        return folder
    if folder.is_dir():
        shutil.rmtree(folder)
    fetch_version(store, version, folder)
    log.info("production %s: fetched and verified into %s", version.id, folder)
    return folder
