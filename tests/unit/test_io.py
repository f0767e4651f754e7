"""Atomic writes leave either the old content or the new one, never a partial file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.io import atomic_dir, atomic_path, sha256_file, write_json, write_parquet


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_swaps_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    target.mkdir()
    (target / "stale.txt").write_text("stale")
    with atomic_dir(target) as tmp:
        (tmp / "fresh.txt").write_text("fresh")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_atomic_dir_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "partial.txt").write_text("x")
        raise ValueError("fail")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_and_parquet_writes_are_deterministic(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1, 2], "b": 1}
    table = pa.table({"x": list(range(1000)), "y": [str(i) for i in range(1000)]})
    write_parquet(tmp_path / "one.parquet", table)
    write_parquet(tmp_path / "two.parquet", table)
    assert sha256_file(tmp_path / "one.parquet") == sha256_file(tmp_path / "two.parquet")
