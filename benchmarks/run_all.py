"""``make bench``: rerun every benchmark; each writes one JSON file in benchmarks/results/."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "benchmarks.bench_generator",
    "benchmarks.bench_validation",
    "benchmarks.bench_pipeline",
    "benchmarks.bench_train_memory",  # trains on data/prepared: after `make run`
    "benchmarks.bench_epoch_validation",  # one epoch on the large preset, sampled validation
    "benchmarks.bench_inference",  # times models/candidate/model.pt: after `make run`
    "benchmarks.bench_serving",  # serves models/candidate/optimized: after `make run`
    "benchmarks.bench_request_log",  # a request-log window written beside an event loop
    "benchmarks.bench_monitoring",  # the monitor on 1M request-log rows, beside DataDriftPreset
    "benchmarks.bench_registry",  # the registry through the loopback S3 server
    "benchmarks.bench_synthetic_ceiling",  # SASRec, baselines and the oracle on the preset
    "benchmarks.bench_airflow_overhead",  # the DAG on a tiny copy: scheduler and dags test
)


def main() -> int:
    for module in BENCHMARKS:
        print(f"== {module}", flush=True)
        subprocess.run([sys.executable, "-m", module], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
