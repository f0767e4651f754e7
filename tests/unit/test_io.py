"""Atomic writes leave either the old content or the new one, never a partial file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import io
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


@pytest.mark.parametrize("piece_rows", [1, 7, 300, 1000, 2500])
def test_parquet_written_in_pieces_has_the_bytes_of_one_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_rows: int
) -> None:
    monkeypatch.setattr(io, "ROW_GROUP_ROWS", 1000)
    rows = 2345
    table = pa.table(
        {
            "n": pa.array(range(rows), pa.int64()),
            "s": pa.array([f"u{i % 97:04d}" for i in range(rows)]),
        }
    )
    io.write_parquet(tmp_path / "whole.parquet", table)
    pieces = (table.slice(start, piece_rows) for start in range(0, rows, piece_rows))
    written = io.write_parquet_stream(tmp_path / "pieces.parquet", table.schema, pieces)
    assert written == rows
    assert pq.ParquetFile(tmp_path / "pieces.parquet").metadata.num_row_groups == 3
    whole = (tmp_path / "whole.parquet").read_bytes()
    assert (tmp_path / "pieces.parquet").read_bytes() == whole


def test_parquet_stream_of_nothing_is_the_empty_table(tmp_path: Path) -> None:
    schema = pa.schema([("n", pa.int64())])
    io.write_parquet(tmp_path / "whole.parquet", schema.empty_table())
    assert io.write_parquet_stream(tmp_path / "pieces.parquet", schema, []) == 0
    whole = (tmp_path / "whole.parquet").read_bytes()
    assert (tmp_path / "pieces.parquet").read_bytes() == whole


def test_parquet_stream_refuses_a_piece_of_another_schema_and_writes_nothing(
    tmp_path: Path,
) -> None:
    schema = pa.schema([("n", pa.int64())])
    other = pa.table({"n": pa.array([1.5])})
    with pytest.raises(ValueError, match="schema"):
        io.write_parquet_stream(tmp_path / "out.parquet", schema, [other])
    assert list(tmp_path.iterdir()) == []
