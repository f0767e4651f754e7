"""A server's source of versions is its cloud's registry store: a version fetched file by file,
each checked against the sha256 its marker records; a public fleet never reads the private
store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.names import BadVersionName
from pipelines.registry.names import file_key
from pipelines.registry.registration import register
from pipelines.rollout.fleet.source import StoreSource, open_source, store_settings
from pipelines.serving.server.sources import SourceError
from tests.rollout.conftest import PROJECT_ROOT, Project


def test_a_version_is_fetched_verified_and_reused(
    make_project: Any, served_folder: Path, tmp_path: Path
) -> None:
    project: Project = make_project()
    version = project.version(served_folder, "v1")
    source = StoreSource(project.registry().store("public"))
    folder = source.fetch(version, tmp_path / "versions")
    assert folder == tmp_path / "versions" / version
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in served_folder.iterdir()
    )
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    assert source.fetch(version, tmp_path / "versions") == folder
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp  # intact: reused


def test_a_tampered_object_is_refused_and_nothing_is_left(
    make_project: Any, served_folder: Path, tmp_path: Path
) -> None:
    project: Project = make_project()
    version = project.version(served_folder, "v1")
    onnx = project.root / "stores" / "public" / file_key(version, "optimized/model.onnx")
    onnx.write_bytes(onnx.read_bytes()[:-4] + b"evil")
    with pytest.raises(SourceError, match=f"version {version} refused: .*model.onnx"):
        StoreSource(project.registry().store("public")).fetch(version, tmp_path / "versions")
    assert not (tmp_path / "versions" / version).exists()


def test_a_public_fleet_never_reads_the_private_store(
    make_project: Any, served_folder: Path, tmp_path: Path
) -> None:
    project: Project = make_project()
    registry = project.registry()
    candidate = project.root / "only-private"
    (candidate / "evaluation").mkdir(parents=True)
    (candidate / "optimized").mkdir()
    for path in served_folder.iterdir():
        (candidate / "optimized" / path.name).write_bytes(path.read_bytes())
    (candidate / "model.pt").write_bytes(project.model.read_bytes())
    (candidate / "evaluation" / "verdict.json").write_text(
        json.dumps({"outcome": "pass", "verdict": "pass", "blocked": False})
    )
    version = register(registry.record, candidate, {"format": 1}, lambda: b"k" * 32, ()).version.id
    assert StoreSource(registry.store("private")).fetch(version, tmp_path / "a").is_dir()
    with pytest.raises(SourceError, match=r"is not in the registry .*'public'"):
        StoreSource(registry.store("public")).fetch(version, tmp_path / "b")
    settings = store_settings(project.params_file, project.root, "public")
    assert open_source(settings).store.name == "public"


def test_bad_version_names_never_reach_a_store(make_project: Any, tmp_path: Path) -> None:
    project: Project = make_project()
    source = StoreSource(project.registry().store("private"))
    for name in ("../etc", "", "a" * 80):
        with pytest.raises(BadVersionName, match="is not a version name"):
            source.fetch(name, tmp_path)


@pytest.mark.parametrize(
    "args",
    [["--cloud", "public", "--model", "x"], ["--cloud", "public", "--registry", "x"]],
)
def test_serving_from_a_cloud_takes_no_folder(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", *args, "--version", "0123456789abcdef"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--cloud serves from the model registry" in done.stderr
