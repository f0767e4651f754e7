"""The ``ingest`` stage: window, manifest, immutability of raw batches, command line."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.core.errors import ImmutableDataError
from pipelines.core.io import sha256_file
from pipelines.core.params import GenerateConfig, IngestConfig, RunConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA
from pipelines.data.batch_window import batch_window
from pipelines.data.ingest import ingest
from pipelines.data.synthetic.generator import generate
from pipelines.stages.ingest import main

DAY = dt.date(2026, 11, 22)
RUN = RunConfig(logical_date=DAY, seed=5)
WEEK = IngestConfig(window_days=7)
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("source") / "synthetic"
    generate(GenerateConfig(preset="tiny", days=14), RUN, out)
    return out


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` with its sha256 and modification time."""
    return {
        str(p.relative_to(folder)): (sha256_file(p), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_batch_window_bounds() -> None:
    window = batch_window(DAY, 7)
    assert window.start == dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
    assert window.end == dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def test_keeps_exactly_the_window_sorted(source: Path, tmp_path: Path) -> None:
    result = ingest(WEEK, RUN, source, tmp_path)
    assert result.batch == tmp_path / "2026-11-22"
    assert result.written
    events = pq.read_table(result.batch / "events.parquet")
    assert events.schema.equals(EVENT_SCHEMA)
    assert pq.read_table(result.batch / "catalog.parquet").schema.equals(CATALOG_SCHEMA)
    frame = events.to_pandas()

    everything = pq.read_table(source / "events.parquet").to_pandas()
    window = batch_window(DAY, 7)
    start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    expected = everything[(everything["timestamp"] >= start) & (everything["timestamp"] < end)]
    assert 0 < len(expected) < len(everything)
    assert sorted(frame["event_id"]) == sorted(expected["event_id"])
    assert frame["timestamp"].min() >= start
    assert frame["timestamp"].max() < end
    key = list(zip(frame["timestamp"], frame["event_id"], strict=True))
    assert key == sorted(key)
    assert (result.rows, result.users, result.items) == (
        len(expected),
        expected["user_id"].nunique(),
        expected["item_id"].nunique(),
    )


def test_manifest_describes_the_batch(source: Path, tmp_path: Path) -> None:
    result = ingest(WEEK, RUN, source, tmp_path)
    manifest = json.loads((result.batch / "manifest.json").read_text())
    assert manifest["logical_date"] == "2026-11-22"
    assert manifest["window"] == {
        "start": "2026-11-16T00:00:00+00:00",
        "end": "2026-11-23T00:00:00+00:00",
        "days": 7,
    }
    assert manifest["source"] == "synthetic"
    assert (manifest["rows"], manifest["users"], manifest["items"]) == (
        result.rows,
        result.users,
        result.items,
    )
    for name in ("events.parquet", "catalog.parquet"):
        path = result.batch / name
        assert manifest["files"][name] == {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }


def test_rerun_with_same_content_is_a_no_op(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest(WEEK, RUN, source, tmp_path)
    before = _snapshot(tmp_path)
    with caplog.at_level(logging.INFO, logger="recflow.ingest"):
        again = ingest(WEEK, RUN, source, tmp_path)
    assert not again.written
    assert "already ingested, unchanged" in caplog.text
    assert _snapshot(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["2026-11-22"]


def test_a_source_generated_later_gives_the_same_batch(source: Path, tmp_path: Path) -> None:
    ingest(WEEK, RUN, source, tmp_path / "raw")
    later_run = RunConfig(logical_date=DAY + dt.timedelta(days=2), seed=RUN.seed)
    later = generate(GenerateConfig(preset="tiny", days=14), later_run, tmp_path / "later").out
    assert not ingest(WEEK, RUN, later, tmp_path / "raw").written


def test_different_content_for_the_same_date_is_refused(source: Path, tmp_path: Path) -> None:
    ingest(WEEK, RUN, source, tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(ImmutableDataError) as error:
        ingest(IngestConfig(window_days=3), RUN, source, tmp_path)
    message = str(error.value)
    assert "2026-11-22" in message
    assert "already exists with different content" in message
    assert "never overwritten" in message
    assert _snapshot(tmp_path) == before  # original batch untouched, no temporary left


def test_other_dates_are_never_touched(source: Path, tmp_path: Path) -> None:
    other = tmp_path / "2026-11-01"
    other.mkdir()
    (other / "events.parquet").write_bytes(b"an older batch")
    ingest(WEEK, RUN, source, tmp_path)
    next_day = RunConfig(logical_date=DAY - dt.timedelta(days=1), seed=RUN.seed)
    ingest(WEEK, next_day, source, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-11-01", "2026-11-21", "2026-11-22"]
    assert (other / "events.parquet").read_bytes() == b"an older batch"


def test_empty_window_writes_an_empty_batch_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = IngestConfig(source="table", window_days=7)
    with caplog.at_level(logging.WARNING, logger="recflow.ingest"):
        result = ingest(cfg, RUN, FIXTURES / "table" / "minimal.csv", tmp_path)
    assert result.rows == 0 and result.written
    assert "writing an empty batch" in caplog.text
    assert pq.read_table(result.batch / "events.parquet").num_rows == 0
    assert json.loads((result.batch / "manifest.json").read_text())["rows"] == 0


def test_align_moves_the_newest_event_onto_the_logical_date(tmp_path: Path) -> None:
    cfg = IngestConfig(source="movielens", window_days=3650, align_to_logical_date=True)
    result = ingest(cfg, RUN, FIXTURES / "movielens" / "ml-1m", tmp_path)
    events = pq.read_table(result.batch / "events.parquet").to_pandas()
    assert events["timestamp"].max().date() == DAY
    manifest = json.loads((result.batch / "manifest.json").read_text())
    newest = pd.Timestamp(978824291, unit="s", tz="UTC")  # 2001-01-06 23:38:11
    assert manifest["time_shift_days"] == (DAY - newest.date()).days
    assert events["timestamp"].max() == newest + pd.Timedelta(days=manifest["time_shift_days"])
    assert result.rows == 20


def test_without_align_historic_data_falls_outside_the_window(tmp_path: Path) -> None:
    cfg = IngestConfig(source="movielens", window_days=28)
    assert ingest(cfg, RUN, FIXTURES / "movielens" / "ml-1m", tmp_path).rows == 0


# ---------------------------------------------------------------- command line


def _params(tmp_path: Path, **ingest_section: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "run": {"logical_date": DAY.isoformat(), "seed": RUN.seed},
                "ingest": {"window_days": 7, **ingest_section},
            }
        )
    )
    return path


def test_cli_writes_then_is_idempotent(source: Path, tmp_path: Path) -> None:
    params, out = _params(tmp_path), tmp_path / "raw"
    argv = ["--params", str(params), "--source", str(source), "--out", str(out)]
    assert main(argv) == 0
    before = _snapshot(out)
    assert main(argv) == 0
    assert _snapshot(out) == before


def test_cli_reads_the_source_path_from_params(source: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, path=str(source))
    assert main(["--params", str(params), "--out", str(tmp_path / "raw")]) == 0
    assert (tmp_path / "raw" / "2026-11-22" / "manifest.json").is_file()


def test_cli_refuses_to_overwrite(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "raw"
    assert (
        main(["--params", str(_params(tmp_path)), "--source", str(source), "--out", str(out)]) == 0
    )
    capsys.readouterr()
    other = _params(tmp_path, window_days=2)
    assert main(["--params", str(other), "--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: raw batch") and "never overwritten" in err
    assert "Traceback" not in err


def test_cli_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--params", str(_params(tmp_path)), "--source", str(tmp_path / "none")]
    assert main([*argv, "--out", str(tmp_path / "raw")]) == 2
    assert "error: synthetic source" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()


def test_cli_bad_params(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = _params(tmp_path, window_days=0)
    assert main(["--params", str(params), "--source", str(source), "--out", str(tmp_path)]) == 2
    assert "ingest.window_days" in capsys.readouterr().err
