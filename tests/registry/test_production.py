"""The gate's production model is the version pinned in ``models/production.json``
(``write_pin``), fetched and verified into a local cache (``fetch_pinned``, what the evaluate
stage runs); with nothing pinned the first-model rule applies, and a bad pin is refused with a
message naming what is wrong."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipelines.core.errors import InputError
from pipelines.core.params import Params
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import (
    BadName,
    ChecksumMismatch,
    ObjectMissing,
    RegistryError,
    UnknownVersion,
)
from pipelines.registry.names import file_key
from pipelines.registry.production import fetch_pinned, write_pin
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from tests.registry.helpers import make_candidate, publish_and_roll_out

AT = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def _pin(tmp_path: Path, document: object) -> Path:
    pin_file = tmp_path / "models" / "production.json"
    pin_file.parent.mkdir(parents=True, exist_ok=True)
    pin_file.write_text(json.dumps(document))
    return pin_file


def _fetch(params: Params, pin_file: Path, tmp_path: Path) -> Path | None:
    return fetch_pinned(params, pin_file, tmp_path / "cache", root=tmp_path)


def test_nothing_pinned_means_the_first_model_rule(params: Params, tmp_path: Path) -> None:
    pin_file = tmp_path / "models" / "production.json"
    assert write_pin(params, pin_file, root=tmp_path)["version"] is None
    assert _fetch(params, pin_file, tmp_path) is None
    assert not (tmp_path / "cache").exists()


def test_the_pinned_version_is_fetched_verified_and_reused(
    params: Params, registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    version = publish_and_roll_out(registry, candidate, {"format": 1}, actor="t", at=AT).version.id
    pin_file = tmp_path / "models" / "production.json"
    assert write_pin(params, pin_file, root=tmp_path)["version"] == version
    folder = _fetch(params, pin_file, tmp_path)
    assert folder == tmp_path / "cache" / version
    for path in ("model.pt", "optimized/model.onnx", "evaluation/verdict.json", "metrics.json"):
        assert (folder / path).read_bytes() == (candidate / path).read_bytes()
    stamp = (folder / "model.pt").stat().st_mtime_ns
    assert _fetch(params, pin_file, tmp_path) == folder
    assert (folder / "model.pt").stat().st_mtime_ns == stamp  # the verified copy was reused
    # a cached copy changed on disk is not trusted: it is fetched again
    (folder / "optimized" / "model.onnx").write_bytes(b"edited")
    assert _fetch(params, pin_file, tmp_path) == folder
    assert (folder / "optimized" / "model.onnx").read_bytes() == (
        candidate / "optimized" / "model.onnx"
    ).read_bytes()


def test_the_pin_holds_while_the_alias_moves(
    params: Params, registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    first = publish_and_roll_out(registry, candidate, {"format": 1}, actor="t", at=AT).version.id
    pin_file = tmp_path / "models" / "production.json"
    write_pin(params, pin_file, root=tmp_path)
    second = publish_and_roll_out(
        registry, make_candidate(tmp_path / "c2", seed=2), {"format": 1}, actor="t", at=AT
    ).version.id
    assert second != first
    folder = _fetch(params, pin_file, tmp_path)
    assert folder is not None and folder.name == first


def test_a_rerun_of_the_date_keeps_the_pin_its_first_run_judged_against(
    params: Params, registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    """Once the date's own model serves, a rerun of that date keeps the earlier pin (the model
    is not judged against itself); the next date pins the new production version."""
    today = params.run.logical_date
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    first = publish_and_roll_out(
        registry, candidate, {"format": 1, "logical_date": yesterday}, actor="t", at=AT
    ).version.id
    pin_file = tmp_path / "models" / "production.json"
    assert write_pin(params, pin_file, root=tmp_path)["version"] == first
    kept = pin_file.read_bytes()
    second = publish_and_roll_out(
        registry,
        make_candidate(tmp_path / "c2", seed=2),
        {"format": 1, "logical_date": today.isoformat()},
        actor="t",
        at=AT,
    ).version.id
    assert write_pin(params, pin_file, root=tmp_path)["version"] == first
    assert pin_file.read_bytes() == kept
    tomorrow = params.model_copy(
        update={"run": params.run.model_copy(update={"logical_date": today + dt.timedelta(days=1)})}
    )
    assert write_pin(tomorrow, pin_file, root=tmp_path)["version"] == second


def test_the_gate_may_read_the_public_cloud(
    registry: Registry, candidate: Path, tmp_path: Path, params: Params
) -> None:
    version = publish_and_roll_out(registry, candidate, {"format": 1}, actor="t", at=AT).version.id
    public = params.model_copy(
        update={"registry": params.registry.model_copy(update={"gate_cloud": "public"})}
    )
    pin_file = tmp_path / "models" / "production.json"
    assert write_pin(public, pin_file, root=tmp_path)["cloud"] == "public"
    folder = _fetch(public, pin_file, tmp_path)
    assert folder is not None and folder.name == version


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, InputError, r"production pin .*production\.json not found"),
        ("{not json", InputError, r"production\.json is not readable JSON"),
        ('["private", "0123456789abcdef"]', InputError, "lacks 'cloud' or 'version'"),
        ('{"cloud": "private"}', InputError, "lacks 'cloud' or 'version'"),
        (
            '{"cloud": "azure", "version": "0123456789abcdef"}',
            BadName,
            "'azure' is not a cloud",
        ),
        ('{"cloud": "private", "version": "../x"}', BadName, "is not a version id"),
        (
            '{"cloud": "private", "version": "0123456789abcdef"}',
            UnknownVersion,
            "no version 0123456789abcdef in store 'private'",
        ),
    ],
    ids=["missing", "corrupt", "not-an-object", "no-version", "cloud", "version-id", "unknown"],
)
def test_a_bad_pin_is_refused_naming_the_problem(
    params: Params,
    tmp_path: Path,
    content: str | None,
    error: type[Exception],
    message: str,
) -> None:
    pin_file = tmp_path / "models" / "production.json"
    if content is not None:
        pin_file.parent.mkdir(parents=True)
        pin_file.write_text(content)
    with pytest.raises(error, match=message):
        _fetch(params, pin_file, tmp_path)
    assert not (tmp_path / "cache").exists()


def test_a_version_pinned_in_a_cloud_that_lacks_it_is_refused(
    params: Params, registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    # registered in the record, never replicated
    version = register(
        registry.record, candidate, {"format": 1}, lambda: pseudonym_key(registry.record), ()
    ).version
    pin_file = _pin(tmp_path, {"alias": "production", "cloud": "public", "version": version.id})
    with pytest.raises(UnknownVersion, match=f"no version {version.id} in store 'public'"):
        _fetch(params, pin_file, tmp_path)


@pytest.mark.parametrize("damage", ["tampered", "deleted"])
def test_a_damaged_pinned_version_is_never_served(
    params: Params, registry: Registry, candidate: Path, tmp_path: Path, damage: str
) -> None:
    version = publish_and_roll_out(registry, candidate, {"format": 1}, actor="t", at=AT).version.id
    pin_file = tmp_path / "models" / "production.json"
    write_pin(params, pin_file, root=tmp_path)
    stored = tmp_path / "private" / file_key(version, "model.pt")
    error: type[RegistryError]
    if damage == "tampered":
        stored.write_bytes(b"swapped")
        error, message = ChecksumMismatch, r"model\.pt .* was changed or corrupted"
    else:
        stored.unlink()
        error, message = ObjectMissing, r"model\.pt in store .private. .* is missing"
    with pytest.raises(error, match=message):
        _fetch(params, pin_file, tmp_path)
    assert not (tmp_path / "cache" / version).exists()
