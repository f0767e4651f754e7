"""The prepare-engine benchmark on the tiny preset: every engine gives the same order."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from benchmarks.bench_prepare_engines import ENGINES, main
from pipelines.core.params import GenerateConfig, RunConfig
from pipelines.data.synthetic.generator import generate


def test_every_engine_sorts_the_batch_into_the_same_order(tmp_path: Path) -> None:
    run = RunConfig(logical_date=dt.date(2026, 11, 22), seed=3)
    generate(GenerateConfig(preset="tiny"), run, tmp_path / "batch")
    out = tmp_path / "engines.json"
    assert main(["--validated", str(tmp_path / "batch"), "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [result["engine"] for result in results] == list(ENGINES)
    assert len({result["checksum"] for result in results}) == 1
    assert len({result["rows"] for result in results}) == 1 and results[0]["rows"] > 1000
    assert all(result["peak_rss_mb"] > 0 for result in results)
