"""The gate's production model comes from the registry's alias, fetched and verified into a
local cache; with no alias the bootstrap rule applies."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.core.params import Params
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import ChecksumMismatch
from pipelines.registry.names import file_key
from pipelines.registry.production import fetch_production
from tests.registry.helpers import publish_and_roll_out

AT = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def test_no_production_means_the_bootstrap_rule(params: Params, tmp_path: Path) -> None:
    assert fetch_production(params, tmp_path / "cache", root=tmp_path) is None
    assert not (tmp_path / "cache").exists()


def test_production_is_fetched_verified_and_reused(
    params: Params, registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    version = publish_and_roll_out(registry, candidate, {"format": 1}, actor="t", at=AT).version.id
    cache = tmp_path / "cache"
    folder = fetch_production(params, cache, root=tmp_path)
    assert folder == cache / version
    for path in ("model.pt", "optimized/model.onnx", "evaluation/verdict.json", "metrics.json"):
        assert (folder / path).read_bytes() == (candidate / path).read_bytes()
    stamp = (folder / "model.pt").stat().st_mtime_ns
    assert fetch_production(params, cache, root=tmp_path) == folder
    assert (folder / "model.pt").stat().st_mtime_ns == stamp  # the verified copy was reused
    # a cached copy changed on disk is not trusted: it is fetched again
    (folder / "optimized" / "model.onnx").write_bytes(b"edited")
    assert fetch_production(params, cache, root=tmp_path) == folder
    assert (folder / "optimized" / "model.onnx").read_bytes() == (
        candidate / "optimized" / "model.onnx"
    ).read_bytes()


def test_a_tampered_production_is_never_served(
    params: Params, registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    version = publish_and_roll_out(registry, candidate, {"format": 1}, actor="t", at=AT).version.id
    (tmp_path / "private" / file_key(version, "model.pt")).write_bytes(b"swapped")
    with pytest.raises(ChecksumMismatch, match=r"model\.pt .* was changed or corrupted"):
        fetch_production(params, tmp_path / "cache", root=tmp_path)
    assert not (tmp_path / "cache" / version).exists()


def test_the_gate_may_read_the_public_cloud(
    registry: Registry, candidate: Path, tmp_path: Path, params: Params
) -> None:
    version = publish_and_roll_out(registry, candidate, {"format": 1}, actor="t", at=AT).version.id
    public = params.model_copy(
        update={"registry": params.registry.model_copy(update={"gate_cloud": "public"})}
    )
    folder = fetch_production(public, tmp_path / "cache", root=tmp_path)
    assert folder is not None and folder.name == version
