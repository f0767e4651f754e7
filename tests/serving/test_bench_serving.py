"""The serving benchmark's parts: request bodies, the summary and the README table, and both
load generators against a real server (wrk's closed loop skipped where wrk is absent)."""

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


def closed(rps: float, connections: int = 8, **extra: object) -> dict[str, object]:
    return {
        "mode": "concurrency",
        "loop": "closed",
        "connections": connections,
        "rps": rps,
        "non_2xx": 0,
        "p50_ms": 0.5,
        "p99_ms": 1.0,
        **extra,
    }


def open_loop(target: int, achieved: float, p99: float) -> dict[str, object]:
    return {
        "mode": "rate",
        "loop": "open",
        "target_rps": target,
        "achieved_rps": achieved,
        "sustained": achieved >= 0.98 * target,
        "p99_ms": p99,
    }


def test_summary_compares_closed_loop_rates_and_quotes_only_sustained_rates() -> None:
    results = {
        "recflow": {
            "points": [
                closed(900.0),
                closed(3000.0),
                open_loop(500, 499.0, 4.0),
                open_loop(2000, 1572.0, 20.9),
            ]
        },
        "naive": {"points": [closed(500.0), closed(100_000.0, non_2xx=5)]},
        "litserve": {"points": [closed(1500.0)]},
    }
    summary = bench_serving._summary(results)
    assert summary["recflow"]["max_rps"] == 3000.0
    assert summary["recflow"]["rates"] == {
        "500": {"achieved_rps": 499.0, "sustained": True, "p99_ms": 4.0},
        "2000": {"achieved_rps": 1572.0, "sustained": False, "p99_ms": None},
    }
    assert summary["recflow_over_naive"] == 6.0  # a point with failed requests does not count
    assert summary["recflow_over_litserve"] == 2.0


def test_the_readme_table_marks_rates_that_were_not_sustained() -> None:
    points = [
        closed(1700.0, connections=1, p50_ms=0.54, p99_ms=1.74),
        closed(8537.0, connections=32),
        open_loop(500, 499.5, 12.06),
        open_loop(2000, 1572.4, 20.9),
    ]
    report = {"schema_version": 2, "servers": {"recflow": {"points": points}}}
    assert bench_serving.table(report).splitlines()[2:] == [
        "| **recflow serve** (uvicorn, batching, cache off) | 8,537 (c=32) | 0.54 / 1.74 "
        "| 12.1 / not sustained (1,572/s) |"
    ]
    assert "p99 ms at 500 / 2,000 req/s (open loop)" in bench_serving.table(report)
    with pytest.raises(ValueError, match="schema 2"):
        bench_serving.table({"servers": {}})  # a file of the wrk-paced layout


def test_the_readme_quotes_the_recorded_results_file() -> None:
    """The README's serving table is the one ``--table`` prints from the committed results, so
    a new recording without the README (or a hand-edited figure) fails here."""
    root = Path(__file__).resolve().parents[2]
    report = json.loads((root / "benchmarks/results/serving.json").read_text())
    readme = (root / "README.md").read_text()
    assert bench_serving.table(report) in readme


@pytest.mark.slow
def test_an_open_loop_point_against_a_real_server(
    tiny_prepared: Path, served_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.serving.conftest import CLIENT

    monkeypatch.setattr(bench_serving, "TOKEN", CLIENT)
    bodies = tmp_path / "bodies.jsonl"
    bench_serving.write_bodies(tiny_prepared, served_folder, bodies, 200)
    unlimited = {"requests_per_s": 1e6, "burst": 100000}
    with live_server(
        tmp_path, "--model", str(served_folder), workers=1, rate_limit=unlimited
    ) as port:
        point = bench_serving.run_open_loop(port, bodies, 50, 1.0)
    assert point["requests"] == point["answered_2xx"] == 50 and point["target_rps"] == 50
    assert point["socket_errors"] == point["timeouts"] == point["non_2xx"] == 0
    assert 0 < point["p50_ms"] <= point["p99_ms"] <= point["p99_9_ms"] <= point["max_ms"]
    assert 0 < point["loadgen_cpu_share"] < 1


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
        result = bench_serving.run_wrk(port, bodies, 4, 1)
    assert result["requests"] > 50 and result["non_2xx"] == 0 and result["socket_errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert 0 < result["wrk_cpu_share"] < 1 and result["loop"] == "closed"
