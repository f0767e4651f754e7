"""Peak memory and epoch time of the trainer on the ``default`` preset, under torchrun.

``python -m benchmarks.bench_train_memory`` trains for a few epochs on ``data/prepared`` (run
``make run`` first) with the ``train`` params of ``params.yaml``, in a temporary output folder,
and records the largest resident set of any process in the torchrun tree (Linux reports the
largest descendant in ``RUSAGE_CHILDREN``). Writes ``benchmarks/results/train_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine_info
from pipelines.core.params import load_params
from pipelines.core.project import PROJECT_ROOT, interpreter_env

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    prepared = PROJECT_ROOT / "data" / "prepared"
    if not (prepared / "train.parquet").is_file():
        print("error: no data/prepared: run `make run` first", file=sys.stderr)
        return 2
    train = load_params(PROJECT_ROOT / "params.yaml").train
    overrides = json.dumps({"epochs": args.epochs, "patience": args.epochs, "progress": False})
    with tempfile.TemporaryDirectory(prefix="recflow-train-bench-") as out:
        command = [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            f"--nproc_per_node={train.nproc_per_node}",
            "-m",
            "pipelines.stages.train",
            "--params",
            "params.yaml",
            "--prepared",
            str(prepared),
            "--out",
            out,
            "--config-json",
            overrides,
        ]
        started = time.perf_counter()
        subprocess.run(command, cwd=PROJECT_ROOT, env=interpreter_env(), check=True)
        seconds = time.perf_counter() - started
        history = [
            json.loads(line) for line in (Path(out) / "history.jsonl").read_text().splitlines()
        ]
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {
        "machine": machine_info(),
        "command": " ".join(["torchrun", *command[1:5]])
        + " ... (default preset, params.yaml train section)",
        "nproc_per_node": train.nproc_per_node,
        "threads_per_worker": train.threads,
        "epochs": args.epochs,
        "seconds": round(seconds, 2),
        "epochs_run": len(history),
        "seconds_per_epoch_with_startup": round(seconds / max(len(history), 1), 2),
        "peak_rss_mb_per_process": round(peak_kb / 1024, 1),
        "target_rss_mb_per_process": 4096,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds", "peak_rss_mb_per_process")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
