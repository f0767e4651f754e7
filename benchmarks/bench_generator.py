"""Throughput and memory of the synthetic clickstream generator.

``python -m benchmarks.bench_generator [--preset large] [--quick]`` times ``synthesize`` for
the ``default`` and ``large`` presets (35 days; ``--quick`` skips ``large``). Each preset runs
in a fresh process, so that ``peak_rss_mb`` (the process's peak resident memory, interpreter
and imports included) is that preset's alone. It is timed ``--repeats`` times:

* ``seconds``: the fastest run, and ``events_per_s`` from it;
* ``first_run_seconds``: the first run, which also pays for fresh memory pages.

Writes ``benchmarks/results/generator_throughput.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info
from pipelines.core.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "benchmarks" / "results" / "generator_throughput.json"
END_DATE = dt.date(2026, 11, 22)
PRESETS = ("default", "large")


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(preset: str, days: int, seed: int, repeats: int) -> dict[str, Any]:
    """Time ``synthesize`` for one preset in this process.

    Args:
        preset: Name in ``pipelines.data.synthetic.presets.PRESETS``.
        days: Days of history.
        seed: Seed of the shop and its traffic.
        repeats: Number of timed runs.

    Returns:
        ``events``, ``seconds`` (fastest run), ``events_per_s``, ``first_run_seconds``,
        ``runs`` and ``peak_rss_mb``.
    """
    from pipelines.core.params import DriftConfig
    from pipelines.data.synthetic.presets import PRESETS as SYNTHETIC_PRESETS
    from pipelines.data.synthetic.tables import synthesize

    before = _peak_rss_mb()
    runs = []
    events = 0
    for _ in range(repeats):
        started = time.perf_counter()
        table, _ = synthesize(
            SYNTHETIC_PRESETS[preset], seed=seed, end_date=END_DATE, days=days, drift=DriftConfig()
        )
        runs.append(time.perf_counter() - started)
        events = table.num_rows
        del table
    best = min(runs)
    return {
        "events": events,
        "seconds": round(best, 3),
        "events_per_s": round(events / best),
        "first_run_seconds": round(runs[0], 3),
        "runs": [round(r, 3) for r in runs],
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_mb": round(before, 1),
    }


def _in_child(preset: str, days: int, seed: int, repeats: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_generator",
        "--child",
        preset,
        "--days",
        str(days),
        "--seed",
        str(seed),
        "--repeats",
        str(repeats),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write its results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, action="append", help="only this preset")
    parser.add_argument("--quick", action="store_true", help="skip the large preset")
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=PRESETS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.days, args.seed, args.repeats)))
        return 0

    presets = args.preset or [p for p in PRESETS if not (args.quick and p == "large")]
    results = {}
    for preset in presets:
        results[preset] = _in_child(preset, args.days, args.seed, args.repeats)
        print(
            f"{preset}: {results[preset]['events']} events in {results[preset]['seconds']} s, "
            f"{results[preset]['events_per_s']:,} events/s, "
            f"peak RSS {results[preset]['peak_rss_mb']} MB",
            flush=True,
        )
    write_json(
        RESULT_FILE,
        {
            "machine": machine_info(),
            "benchmark": "pipelines.data.synthetic.tables.synthesize, one process per preset",
            "days": args.days,
            "seed": args.seed,
            "repeats": args.repeats,
            **results,
        },
    )
    print(f"wrote {RESULT_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
