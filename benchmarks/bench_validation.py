"""Throughput of the validate stage's Great Expectations suite.

``python -m benchmarks.bench_validation [--rows 1000000 5000000]`` builds valid batches of each
size with numpy (beside a previous batch, so the unseen-share checks run too), then times

* ``seconds``: the whole suite on the batch: reading the Parquet files, building the frames and
  batch metrics, running the three suites (no Data Docs), as ``check_batch`` does;
* ``stage_seconds``: the stage end to end (``validate_batch``: the suite, Data Docs, the reports,
  the validated copy with its sha256s, the metrics).

GX is imported and warmed up on a small batch first (``import_seconds`` records the import);
each size is timed ``--repeats`` times and the fastest run is kept. Writes
``benchmarks/results/validation_throughput.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "benchmarks" / "results" / "validation_throughput.json"
LOGICAL_DATE = dt.date(2026, 11, 22)
WINDOW_DAYS = 28

log = logging.getLogger("recflow.bench")


def _machine() -> dict[str, Any]:
    try:
        from benchmarks.machine import machine_info
    except ImportError:
        return _fallback_machine()
    return dict(machine_info())


def _fallback_machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    memory_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _write_store(root: Path, rows: int) -> Path:
    """A store holding a batch of ``rows`` events and a tenth-size previous batch."""
    from tests.data.batches import make_batch, write_batch

    previous_day = LOGICAL_DATE - dt.timedelta(days=1)
    users, items = max(rows // 20, 1), max(rows // 50, 1)
    previous = make_batch(max(rows // 10, 1000), previous_day, seed=1, users=users, items=items)
    write_batch(root / previous_day.isoformat(), *previous, previous_day)
    write_batch(
        root / LOGICAL_DATE.isoformat(), *make_batch(rows, LOGICAL_DATE, seed=2), LOGICAL_DATE
    )
    return root


def _time_size(rows: int, repeats: int, work: Path) -> dict[str, Any]:
    from pipelines.core.params import RunConfig, ValidateConfig
    from pipelines.data.validation.batch import validate_batch
    from pipelines.data.validation.check import check_batch
    from pipelines.data.validation.inputs import resolve_batch

    cfg, run = ValidateConfig(), RunConfig(logical_date=LOGICAL_DATE)
    started = time.perf_counter()
    store = _write_store(work / f"raw-{rows}", rows)
    log.info("built a %d-event batch in %.1f s", rows, time.perf_counter() - started)
    batch = resolve_batch(store, LOGICAL_DATE)
    suite_times, stage_times = [], []
    outcome = None
    for _ in range(repeats):
        started = time.perf_counter()
        _, results, _ = check_batch(cfg, batch, WINDOW_DAYS)
        suite_times.append(time.perf_counter() - started)
        assert all(r.success for r in results), "the benchmark batch must be valid"
        started = time.perf_counter()
        outcome = validate_batch(
            cfg,
            run,
            store,
            window_days=WINDOW_DAYS,
            out=work / "validated",
            reports=work / "reports",
            metrics=work / "metrics.json",
        )
        stage_times.append(time.perf_counter() - started)
    assert outcome is not None
    seconds = min(suite_times)
    log.info("%d events: suite %.2f s, stage %.2f s", rows, seconds, min(stage_times))
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "stage_seconds": round(min(stage_times), 3),
        "expectations": outcome.statistics["evaluated_expectations"],
        "success": outcome.success,
        "repeats": repeats,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per size (best kept)")
    parser.add_argument("--out", type=Path, default=RESULT_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    started = time.perf_counter()
    import pipelines.data.validation.runner  # noqa: F401  (imports great_expectations)

    import_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="recflow-bench-validation-") as tmp:
        work = Path(tmp)
        _time_size(2_000, 1, work / "warmup")
        results = [_time_size(rows, args.repeats, work / str(rows)) for rows in args.rows]
    write_json(
        args.out,
        {
            "benchmark": "validate: Great Expectations suite over one event batch",
            "machine": _machine(),
            "import_seconds": round(import_seconds, 3),
            "results": results,
        },
    )
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
