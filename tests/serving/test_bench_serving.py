"""The serving benchmark's parts: request bodies, wrk with the request script against a real
server (skipped where wrk is absent), and the summary's ratios."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import bench_serving
from pipelines.core.io import read_parquet
from tests.serving.live import live_server


def test_bodies_are_valid_requests_of_catalog_items(
    tiny_prepared: Path, served_folder: Path, tmp_path: Path
) -> None:
    count = bench_serving.write_bodies(tiny_prepared, served_folder, tmp_path / "b.jsonl", 50)
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert count == len(lines) == 50
    first = json.loads(lines[0])
    assert set(first) == {"user_id", "history", "k"} and first["k"] == bench_serving.TOP_K
    assert 0 < len(first["history"]) <= 50
    catalog = set(
        read_parquet(served_folder / "items.parquet", "items").column("item_id").to_pylist()
    )
    assert all(set(json.loads(line)["history"]) <= catalog for line in lines)


def test_summary_compares_the_best_closed_loop_rates() -> None:
    def point(rps: float, **extra: object) -> dict[str, object]:
        return {"mode": "concurrency", "rps": rps, "non_2xx": 0, "p99_ms": 1.0, **extra}

    results = {
        "recflow": {"points": [point(900.0), point(3000.0), {**point(700.0), "mode": "rate",
                                                             "target_rps": 500, "p99_ms": 4.0}]},
        "naive": {"points": [point(500.0), point(100_000.0, non_2xx=5)]},
        "litserve": {"points": [point(1500.0)]},
    }  # fmt: skip
    summary = bench_serving._summary(results)
    assert summary["recflow"]["max_rps"] == 3000.0
    assert summary["recflow"]["p99_ms_at_500_rps"] == 4.0
    assert summary["recflow_over_naive"] == 6.0  # a point with failed requests does not count
    assert summary["recflow_over_litserve"] == 2.0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make wrk)")
def test_wrk_with_the_request_script_measures_a_real_server(
    tiny_prepared: Path, served_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.serving.conftest import CLIENT

    monkeypatch.setattr(bench_serving, "TOKEN", CLIENT)
    bodies = tmp_path / "bodies.jsonl"
    bench_serving.write_bodies(tiny_prepared, served_folder, bodies, 200)
    # as in the benchmark: the load generator's token is not rate limited
    unlimited = {"requests_per_s": 1e6, "burst": 100000}
    with live_server(
        tmp_path, "--model", str(served_folder), workers=1, rate_limit=unlimited
    ) as port:
        closed = bench_serving.run_wrk(port, bodies, 4, 1)
        paced = bench_serving.run_wrk(port, bodies, 4, 1, pause_ms=20)
    assert closed["requests"] > 50 and closed["non_2xx"] == 0 and closed["socket_errors"] == 0
    assert 0 < closed["p50_ms"] <= closed["p99_ms"] <= closed["max_ms"]
    assert 0 < closed["wrk_cpu_share"] < 1
    assert paced["rps"] < 4 / 0.020 * 1.1  # four connections, each pausing 20 ms
