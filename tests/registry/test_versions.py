"""Versions are immutable and content-addressed; a half-written one is never seen; every file
is verified before it is used; a server finds the artifact that fits its hardware."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.core.errors import InputError
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import (
    BadName,
    ChecksumMismatch,
    RegistryError,
    UnknownVersion,
)
from pipelines.registry.names import file_key, marker_key
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import Registration, register
from pipelines.registry.versions import (
    fetch_version,
    find_artifact,
    list_versions,
    read_version,
    verify_version,
)
from tests.registry.helpers import make_candidate, snapshot


def _register(registry: Registry, candidate: Path, lineage: dict | None = None) -> Registration:
    return register(
        registry.record,
        candidate,
        lineage or {"format": 1, "run": "a"},
        lambda: pseudonym_key(registry.record),
        ("user_id", "session_id"),
    )


def test_registering_twice_is_a_no_op_returning_the_same_version(
    registry: Registry, candidate: Path
) -> None:
    first = _register(registry, candidate)
    assert first.created
    before = snapshot(registry.record)
    second = _register(registry, candidate, {"format": 1, "run": "another run"})
    assert not second.created and second.version == first.version
    assert snapshot(registry.record) == before  # the first lineage stays
    assert list_versions(registry.record) == [first.version.id]


def test_the_id_is_the_content(registry: Registry, tmp_path: Path) -> None:
    one = _register(registry, make_candidate(tmp_path / "one", seed=1)).version
    same = _register(registry, make_candidate(tmp_path / "same", seed=1)).version
    other = _register(registry, make_candidate(tmp_path / "other", seed=2)).version
    assert one.id == same.id != other.id
    assert sorted(list_versions(registry.record)) == sorted({one.id, other.id})
    paths = {f.path for f in one.files}
    assert "checkpoints/last.pt" not in paths and ".gitignore" not in paths
    assert {
        "model.pt",
        "optimized/manifest.json",
        "evaluation/verdict.json",
        "lineage.json",
    } <= paths


def test_the_marker_is_written_last_so_a_partial_version_is_invisible(
    registry: Registry, candidate: Path
) -> None:
    version = _register(registry, candidate).version
    registry.record.delete(marker_key(version.id))
    assert list_versions(registry.record) == []
    with pytest.raises(UnknownVersion, match=f"no version {version.id} in store 'private'"):
        read_version(registry.record, version.id)
    # rerunning completes it
    again = _register(registry, candidate)
    assert again.created and again.version.id == version.id
    assert verify_version(registry.record, version.id) == []


def test_fetch_gives_a_verified_candidate_shaped_folder(
    registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    version = _register(registry, candidate).version
    folder = fetch_version(registry.record, version, tmp_path / "fetched")
    for path in ("model.pt", "optimized/model.onnx", "evaluation/verdict.json", "metrics.json"):
        assert (folder / path).read_bytes() == (candidate / path).read_bytes()
    assert json.loads((folder / "lineage.json").read_text()) == {"format": 1, "run": "a"}


def test_a_tampered_file_fails_fetch_and_verify(
    registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    version = _register(registry, candidate).version
    root = registry.record.root  # type: ignore[attr-defined]
    (root / file_key(version.id, "optimized/model.onnx")).write_bytes(b"not the model")
    with pytest.raises(ChecksumMismatch, match=r"optimized/model\.onnx .* was not used"):
        fetch_version(registry.record, version, tmp_path / "fetched")
    assert not (tmp_path / "fetched").exists()
    problems = verify_version(registry.record, version.id)
    assert len(problems) == 1 and "optimized/model.onnx" in problems[0]


def test_a_missing_file_is_reported(registry: Registry, candidate: Path, tmp_path: Path) -> None:
    version = _register(registry, candidate).version
    registry.record.delete(file_key(version.id, "model.pt"))
    with pytest.raises(RegistryError, match=r"model\.pt in store 'private' .* is missing"):
        fetch_version(registry.record, version, tmp_path / "fetched")
    assert any(
        "model.pt" in p and "missing" in p for p in verify_version(registry.record, version.id)
    )


def test_a_tampered_marker_is_detected(registry: Registry, candidate: Path) -> None:
    version = _register(registry, candidate).version
    store = registry.record
    document = json.loads(store.read(marker_key(version.id))[0])
    document["files"][0]["sha256"] = "0" * 64
    # rewritten through the store (valid metadata), as an attacker with write access could
    store.put_bytes(marker_key(version.id), json.dumps(document).encode(), "version_marker")
    with pytest.raises(ChecksumMismatch, match="but its files make"):
        read_version(store, version.id)


@pytest.mark.parametrize("name", ["../aliases/production", "0123456789abcde/", "abc\x1b[2J"])
def test_bad_version_names_reach_no_store(registry: Registry, name: str) -> None:
    before = snapshot(registry.record)
    with pytest.raises(BadName, match="is not a version id"):
        read_version(registry.record, name)
    assert snapshot(registry.record) == before


def test_unknown_version_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(UnknownVersion, match="`recflow registry list` shows them"):
        read_version(registry.record, "0123456789abcdef")


def test_the_artifact_that_fits_the_hardware(registry: Registry, candidate: Path) -> None:
    version = _register(registry, candidate).version
    assert find_artifact(version, "onnxruntime")["name"] == "onnxruntime-fp32"  # shipped first
    assert find_artifact(version, "onnxruntime", "int8")["path"] == "optimized/model.int8.onnx"
    engine = find_artifact(version, "tensorrt", "fp16", compute_capability="8.9", tensorrt="10.3.0")
    assert engine["path"] == "optimized/model.fp16.sm89.plan"
    with pytest.raises(
        RegistryError, match=r"no tensorrt artifact in fp16 for compute capability 9\.0"
    ):
        find_artifact(version, "tensorrt", "fp16", compute_capability="9.0", tensorrt="10.3.0")
    with pytest.raises(RegistryError, match=r"tensorrt-fp16 \(sm 8.9, TensorRT 10.3.0\)"):
        find_artifact(version, "tensorrt", "fp16", compute_capability="8.9", tensorrt="10.4.0")
    assert all(a["name"] != "tensorrt-int8" for a in version.artifacts)  # rejected: not kept


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: (c / "model.pt").unlink(), "has no model.pt"),
        (lambda c: shutil.rmtree(c / "evaluation"), "has no evaluation/verdict.json"),
        (lambda c: (c / "notes.txt").write_text("x"), "notes.txt is of no kind"),
        (lambda c: (c / "optimized" / "model.onnx").write_bytes(b"rebuilt"), "changed after it"),
        (lambda c: (c / "optimized" / "model.onnx").unlink(), "which the candidate does not have"),
        (lambda c: (c / "evaluation" / "verdict.json").write_text("{oops"), "not readable JSON"),
        (lambda c: (c / "evaluation" / "verdict.json").write_text("{}"), "holds no gate verdict"),
        (
            lambda c: (c / "evaluation" / "events.parquet").write_bytes(b"PAR1....PAR1"),
            "is a Parquet data file",
        ),
        (
            lambda c: (c / "evaluation" / "extra.md").symlink_to("/etc/hostname"),
            "is a symbolic link",
        ),
    ],
    ids=[
        "no-model",
        "no-verdict",
        "stray",
        "manifest-mismatch",
        "no-artifact",
        "bad-json",
        "no-verdict-fields",
        "data-file",
        "symlink",
    ],
)
def test_a_bad_candidate_is_refused_and_nothing_is_written(
    registry: Registry, candidate: Path, edit: object, message: str
) -> None:
    edit(candidate)  # type: ignore[operator]
    with pytest.raises(InputError, match=message):
        _register(registry, candidate)
    assert snapshot(registry.record) == {}


def test_a_missing_candidate_folder(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"candidate folder .* not found"):
        _register(registry, tmp_path / "nowhere")
