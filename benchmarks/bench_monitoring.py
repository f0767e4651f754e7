"""The whole monitor on 1,000,000 request-log rows, beside Evidently's plain ``DataDriftPreset``.

``python -m benchmarks.bench_monitoring`` writes a day of request log, ``--rows`` rows (default
1,000,000) in Parquet files of 100,000 rows as the servers write them, over a 2,000-item
catalog in 40 categories (histories of 0–60 known items, popularity-skewed, top-10 answers),
and a featurized reference of ``monitor.reference_rows`` (20,000) requests from the same
distribution. Then, in this one process and after Evidently is imported (its import is timed
apart, in a fresh interpreter):

* **recflow** (the monitor's own steps, as ``recflow monitor`` runs them): read the window from
  Parquet (``traffic.read_request_log``), featurize every row, judge the drift with Evidently on a
  seeded sample of ``monitor.sample_rows`` (50,000) current rows against the stored reference,
  with recflow's item-popularity divergence and unseen share over all rows, write Evidently's
  HTML, and join the rows with their users' next events (online quality);
* **plain Evidently**: ``Report([DataDriftPreset()])`` on the same featurized rows, all of them,
  against the same reference rows, with its HTML (Evidently's default methods: no sampling,
  its own choice of test per column);
* the effect of sampling: each feature's score from the sample against the score from all rows
  (the same ``ValueDrift`` methods, ``sample_rows: 0``);
* the online-quality join alone: rows per second.

Each side runs ``--repeats`` times (default 3) and the best is kept. Writes
``benchmarks/results/monitoring.json`` with the machine's CPU and its flags.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.machine import machine_info
from pipelines.core.io import write_json, write_parquet
from pipelines.core.params import MonitorConfig
from pipelines.monitoring.drift import drift_report, save_html
from pipelines.monitoring.features import Profile, featurize, item_counts
from pipelines.monitoring.quality import online_quality
from pipelines.monitoring.requests import REQUEST_SCHEMA
from pipelines.monitoring.traffic import read_request_log
from pipelines.serving.server.requestlog import SCHEMA_VERSION, SCHEMA_VERSION_KEY

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "benchmarks" / "results" / "monitoring.json"
ITEMS = 2_000
CATEGORIES = 40
FILE_ROWS = 100_000
K = 10
DAY = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def catalog(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Item ids, categories, prices and Zipf-like interaction shares of the catalog."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{i:05d}" for i in range(ITEMS)], dtype=object)
    categories = np.array([f"c{i % CATEGORIES:02d}" for i in range(ITEMS)], dtype=object)
    prices = np.round(rng.lognormal(3.0, 0.8, ITEMS), 2)
    share = 1.0 / np.arange(1, ITEMS + 1) ** 0.9
    return ids, categories, prices, share / share.sum()


def requests(rows: int, seed: int, start_ms: int) -> pa.Table:
    """``rows`` answered requests in the request log's schema, one millisecond apart."""
    rng = np.random.default_rng(seed)
    ids, categories, prices, share = catalog()
    lengths = rng.integers(0, 61, rows)
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    history = rng.choice(ITEMS, size=int(offsets[-1]), p=share)
    answers = rng.choice(ITEMS, size=rows * K, p=share)
    answer_offsets = np.arange(0, (rows + 1) * K, K, dtype=np.int32)

    def lists(values: np.ndarray, at: np.ndarray, kind: pa.DataType) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(at), pa.array(values, kind))

    times = start_ms + np.arange(rows, dtype=np.int64)
    return pa.table(
        {
            "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "user": pa.array([f"u{u:07d}" for u in rng.integers(0, rows // 4, rows)]),
            "model_version": pa.array(["0123456789abcdef"] * rows),
            "arm": pa.array(["stable"] * rows),
            "history_items": lists(ids[history], offsets, pa.string()),
            "history_categories": lists(categories[history], offsets, pa.string()),
            "history_prices": lists(prices[history], offsets, pa.float64()),
            "items": lists(ids[answers], answer_offsets, pa.string()),
            "item_categories": lists(categories[answers], answer_offsets, pa.string()),
            "latency_ms": pa.array(rng.gamma(2.0, 2.0, rows)),
            "fallback": pa.array(np.zeros(rows, dtype=bool)),
            "cache_hit": pa.array(np.zeros(rows, dtype=bool)),
            "unknown_items": pa.array(np.zeros(rows, dtype=np.int32)),
        },
        schema=REQUEST_SCHEMA,
    )


def write_log(folder: Path, rows: int) -> None:
    """The day's request log: files of FILE_ROWS rows, with the schema version servers write."""
    start = int(DAY.timestamp() * 1000)
    for part, first in enumerate(range(0, rows, FILE_ROWS)):
        table = requests(min(FILE_ROWS, rows - first), seed=100 + part, start_ms=start + first)
        table = table.replace_schema_metadata({SCHEMA_VERSION_KEY: SCHEMA_VERSION})
        write_parquet(folder / f"date={DAY:%Y-%m-%d}" / f"requests-{part:04d}-w0.parquet", table)


def feedback(table: pa.Table, seed: int) -> pa.Table:
    """One next event per user, a second after their first request, popularity-skewed."""
    rng = np.random.default_rng(seed)
    ids, _, _, share = catalog()
    users = np.unique(table.column("user").to_numpy(zero_copy_only=False))
    first = int(DAY.timestamp() * 1000) + 1000
    return pa.table(
        {
            "user": pa.array(users, pa.string()),
            "item_id": pa.array(ids[rng.choice(ITEMS, size=len(users), p=share)], pa.string()),
            "time": pa.array(
                first + rng.integers(0, table.num_rows, len(users)), pa.timestamp("ms", tz="UTC")
            ),
        }
    )


def best(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest of ``repeats`` runs of ``run``, in seconds, and its last result."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return min(seconds), result


def import_seconds() -> float:
    """Seconds a fresh interpreter takes to import Evidently's Report and presets."""
    code = (
        "import time; t = time.perf_counter(); "
        "from evidently import Report, Dataset, DataDefinition; "
        "from evidently.presets import DataDriftPreset; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def plain_preset(reference: Any, current: Any, html: Path) -> dict[str, float]:
    """Evidently's DataDriftPreset on every current row, with its HTML; the drift scores."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical = [c for c in current.columns if current[c].dtype.kind in "if"]
    categorical = [c for c in current.columns if c not in numerical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    snapshot.save_html(str(html))
    return {
        str(m["config"].get("column")): float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"].get("column") is not None and isinstance(m["value"], int | float)
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="request-log rows")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; the best is kept")
    parser.add_argument("--out", type=Path, default=RESULT_FILE, help="the results file")
    args = parser.parse_args(argv)
    cfg = MonitorConfig()
    evidently_import_s = import_seconds()
    import evidently  # noqa: F401  (both sides run after the import, timed apart above)

    ids, categories, _, share = catalog()
    profile = Profile.from_counts(
        ids.tolist(), share.tolist(), categories.tolist(), cfg.popularity_buckets
    )
    reference_requests = requests(cfg.reference_rows, seed=1, start_ms=0)
    reference = featurize(reference_requests, profile)
    reference_counts = item_counts(reference_requests)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "requests"
        write_log(folder, args.rows)
        since, until = DAY, DAY + dt.timedelta(days=1)

        def read() -> pa.Table:
            return read_request_log(folder, since, until).table

        table = read()
        later = feedback(table, seed=7)
        steps: dict[str, float] = {}

        def monitor() -> Any:
            started = time.perf_counter()
            current_table = read()
            steps["read_s"] = time.perf_counter() - started
            started = time.perf_counter()
            current = featurize(current_table, profile)
            steps["featurize_s"] = time.perf_counter() - started
            started = time.perf_counter()
            result = drift_report(
                reference,
                current,
                cfg,
                seed=42,
                predictions=True,
                reference_counts=reference_counts,
                current_requests=current_table,
                profile=profile,
            )
            steps["drift_s"] = time.perf_counter() - started
            started = time.perf_counter()
            save_html(result, Path(scratch) / "report.html")
            steps["html_s"] = time.perf_counter() - started
            started = time.perf_counter()
            online_quality(current_table, later, window_s=86_400.0, k=K, confidence=0.95)
            steps["quality_s"] = time.perf_counter() - started
            return result

        recflow_s, sampled = best(monitor, args.repeats)
        recflow_steps = {name: round(value, 3) for name, value in steps.items()}
        current = featurize(table, profile)
        plain_s, plain_scores = best(
            lambda: plain_preset(reference, current, Path(scratch) / "plain.html"), args.repeats
        )
        full = drift_report(
            reference,
            current,
            cfg.model_copy(update={"sample_rows": 0}),
            seed=42,
            predictions=True,
        )
        join_s, _ = best(
            lambda: online_quality(table, later, window_s=86_400.0, k=K, confidence=0.95),
            args.repeats,
        )

    sampled_scores = {f.feature: f.score for f in sampled.features}
    full_scores = {f.feature: f.score for f in full.features}
    result = {
        "benchmark": "monitoring",
        "machine": machine_info(),
        "rows": args.rows,
        "reference_rows": cfg.reference_rows,
        "sample_rows": cfg.sample_rows,
        "features": list(reference.columns),
        "repeats": args.repeats,
        "evidently_import_s": round(evidently_import_s, 2),
        "recflow": {
            "seconds": round(recflow_s, 2),
            "steps_of_last_run_s": recflow_steps,
            "verdict": sampled.verdict,
            "what": "read 1M rows from Parquet, featurize all, Evidently ValueDrift per feature on "
            "a seeded 50k sample against the stored 20k reference, item-popularity JS and unseen "
            "share on all rows, Evidently HTML, online-quality join",
        },
        "plain_evidently": {
            "seconds": round(plain_s, 2),
            "what": "DataDriftPreset on all featurized rows against the same 20k reference rows, "
            "with its HTML; Evidently's default method per column; reading and featurizing "
            "not counted",
            "scores": {k: round(v, 6) for k, v in sorted(plain_scores.items())},
        },
        "speedup": round(plain_s / recflow_s, 2),
        "sampling_effect": {
            name: {
                "sampled": round(sampled_scores[name], 6),
                "all_rows": round(full_scores[name], 6),
                "difference": round(abs(sampled_scores[name] - full_scores[name]), 6),
            }
            for name in sorted(sampled_scores)
            if name in full_scores
        },
        "quality_join": {
            "rows": args.rows,
            "seconds": round(join_s, 3),
            "rows_per_s": round(args.rows / join_s),
        },
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1), flush=True)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
