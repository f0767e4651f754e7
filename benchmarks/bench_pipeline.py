"""Wall time of the main job and of a no-op ``dvc repro``.

``python -m benchmarks.bench_pipeline`` copies the project into a temporary folder, runs the
main job there cold (the Airflow DAG, then ``dvc repro``), times each stage run alone through
DVC in a second fresh copy, then times ``dvc repro`` when everything is up to date.
Writes ``benchmarks/results/make_run.json`` and ``benchmarks/results/dvc_noop.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine_info
from pipelines.core.project import copy_project, interpreter_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("generate", "ingest", "validate", "prepare", "train", "optimize", "evaluate")


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=interpreter_env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="no-op dvc repro repetitions")
    args = parser.parse_args(argv)
    python = sys.executable
    machine = machine_info()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recflow-bench-") as tmp:
        cold = copy_project(Path(tmp) / "cold")
        total = timed([python, "-m", "pipelines.main_job", "--no-push"], cold)
        staged = copy_project(Path(tmp) / "staged")
        per_stage = {
            stage: round(timed([python, "-m", "dvc", "repro", "--single-item", stage], staged), 2)
            for stage in STAGES
        }
        noop = [timed([python, "-m", "dvc", "repro"], staged) for _ in range(args.repeats)]
        events = json.loads((staged / "metrics" / "validation.json").read_text()).get("rows")
    make_run = {
        "machine": machine,
        "command": (
            "python -m pipelines.main_job --no-push (what make run runs after setup: the "
            "Airflow DAG run, then dvc repro) on a fresh copy, default preset"
        ),
        "seconds": round(total, 2),
        "stage_seconds_dvc": per_stage,
        "events": events,
    }
    dvc_noop = {
        "machine": machine,
        "command": "dvc repro with every stage up to date (default preset)",
        "seconds": round(statistics.median(noop), 3),
        "runs": [round(x, 3) for x in noop],
        "target_seconds": 3.0,
    }
    (RESULTS / "make_run.json").write_text(json.dumps(make_run, indent=2) + "\n")
    (RESULTS / "dvc_noop.json").write_text(json.dumps(dvc_noop, indent=2) + "\n")
    print(json.dumps({"make_run_s": make_run["seconds"], "dvc_noop_s": dvc_noop["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
