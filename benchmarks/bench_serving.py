"""Serving throughput and latency: ``recflow serve`` beside a naive server and LitServe.

``python -m benchmarks.bench_serving`` serves the default preset's trained model (top-20 over
its catalog) from ``models/candidate`` and ``data/prepared`` after ``make run`` (else it trains
one first, ``--preset`` picks the size) and loads each server in turn with request bodies built
from held-out test histories:

- ``recflow`` on uvicorn with one worker per core, dynamic batching on, and the same with
  batching off, and on granian instead of uvicorn, each with the recommendation cache off: the
  5,000 replayed bodies repeat, so with the cache on nearly every request after the first pass
  would be a cache hit, not a model call as in the other servers; ``recflow-cached`` (the
  configuration of ``params.yaml``, cache on) shows what the cache adds when requests repeat;
- ``naive``: FastAPI with pydantic models and torch eager per request
  (``benchmarks/serving_naive.py``);
- ``litserve``: LitServe with its own batching serving the same ONNX artifact
  (``benchmarks/serving_litserve.py``).

Each server gets fixed concurrencies, a closed loop measuring the most it answers (Debian's
``wrk``, one thread, with ``benchmarks/serving_wrk.lua``), and fixed rates, an open loop
(``benchmarks/loadgen.py`` in its own process): requests are sent on schedule whatever the
answers do, latency runs from each request's due time, and a point that achieved less than
98 % of its target is marked not sustained, its latency not quoted in the summary. The load
generators' CPU share of the cores is recorded per point. Then ``recflow`` is loaded (wrk)
while a new version is loaded, canaried, promoted and rolled back: every request must succeed.
Writes ``benchmarks/results/serving.json``; ``--quick`` runs a few seconds per point into a
temporary file, to check that the benchmark works; ``--table`` prints the README's table from a
results file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.machine import machine_info
from pipelines.core.project import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
LUA = PROJECT_ROOT / "benchmarks" / "serving_wrk.lua"
TOKEN = "bench-client-token"
ADMIN = "bench-admin-token"
CONCURRENCIES = (1, 8, 32, 64)
RATES = (500, 1000, 2000)
OPEN_LOOP_CONNECTIONS = 128  # the most the open loop opens; requests beyond wait
TOP_K = 20
SCHEMA_VERSION = 2  # 2: the rate points are open loop (1: wrk paced per connection)
NO_CACHE = {"enabled": False, "size": 1, "ttl_s": 1.0, "warm_items": 0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_bundle(work: Path, preset: str) -> tuple[Path, Path]:
    """The served folder (artifact, ``model.pt``, ``items.parquet``) and the prepared folder."""
    from pipelines.serving.items import write_item_table

    model = PROJECT_ROOT / "models" / "candidate" / "model.pt"
    optimized = PROJECT_ROOT / "models" / "candidate" / "optimized"
    prepared = PROJECT_ROOT / "data" / "prepared"
    bundle = work / "bundle"
    if model.is_file() and (optimized / "manifest.json").is_file() and prepared.is_dir():
        print(f"serving the trained model of {model.parent}", flush=True)
        shutil.copytree(optimized, bundle)
        shutil.copy(model, bundle / "model.pt")
        write_item_table(prepared, bundle)
        return bundle, prepared
    print(f"no trained model: training one on the {preset} preset first", flush=True)
    import datetime as dt

    from pipelines.core.params import (
        GenerateConfig,
        OptimizeConfig,
        PrepareConfig,
        RunConfig,
        TrainConfig,
    )
    from pipelines.data.preparation import prepare
    from pipelines.data.synthetic.generator import generate
    from pipelines.model.training.loop import train
    from pipelines.serving.artifacts import optimize

    run = RunConfig(logical_date=dt.date(2026, 11, 22), seed=42)
    generate(GenerateConfig(preset=preset), run, work / "source")
    prepare(PrepareConfig(), run, work / "source", work / "prepared")
    train(TrainConfig(epochs=3, threads=2, progress=False), run, work / "prepared", work / "model")
    cfg = OptimizeConfig.model_validate(
        {
            "top_k": TOP_K,
            "onnxruntime_int8": False,
            "parity": {"sequences": 64},
            "latency": {"batches": [1], "warmup": 1, "iterations": 2},
        }
    )
    optimize(cfg, work / "model" / "model.pt", work / "prepared", bundle)
    shutil.copy(work / "model" / "model.pt", bundle / "model.pt")
    write_item_table(work / "prepared", bundle)
    return bundle, work / "prepared"


def write_bodies(prepared: Path, bundle: Path, out: Path, count: int = 5000) -> int:
    """Request bodies from held-out test histories (item ids, newest last), one per line."""
    from pipelines.data.prepared import load_prepared
    from pipelines.serving.items import ItemTable

    data = load_prepared(prepared)
    items = ItemTable.read(bundle, data.n_items)
    rng = np.random.default_rng(7)
    rows = rng.choice(len(data.test_history), size=min(count, len(data.test_history)))
    with out.open("w") as handle:
        for n, row in enumerate(rows):
            history = [str(items.ids[i]) for i in data.test_history[row][-50:]]
            body = {"user_id": f"user-{row}-{n % 7}", "history": history, "k": TOP_K}
            handle.write(json.dumps(body) + "\n")
    return len(rows)


@contextlib.contextmanager
def running(
    name: str, command: list[str], port: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until it answers a request, stop its process group at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            body = json.dumps({"user_id": "warm", "history": [], "k": TOP_K}).encode()
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/recommend",
                    body,
                    {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                )
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(request, timeout=5) as answer,
                ):
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer in 180 s")
                time.sleep(0.3)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)


def run_wrk(port: int, bodies: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One closed-loop wrk run; its results, and its CPU time as a share of all cores."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:.0f}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        str(bodies),
        TOKEN,
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    line = [x for x in output.splitlines() if x.startswith("{")]
    if process.returncode != 0 or not line:
        raise RuntimeError(
            f"wrk failed: {output} {process.stderr.read().decode() if process.stderr else ''}"
        )
    raw = json.loads(line[-1])
    duration = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {
        "loop": "closed",
        "connections": connections,
        "requests": raw["requests"],
        "rps": round(raw["requests"] / duration, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "socket_errors": errors,
        "non_2xx": raw["status_errors"],
        "wrk_cpu_share": round(
            (usage.ru_utime + usage.ru_stime) / (wall * (os.cpu_count() or 1)), 3
        ),
    }


def run_open_loop(port: int, bodies: Path, rate: int, seconds: float) -> dict[str, Any]:
    """One open-loop point at ``rate`` requests/s, the generator in its own process."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--port",
        str(port),
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--bodies",
        str(bodies),
        "--token",
        TOKEN,
        "--connections",
        str(OPEN_LOOP_CONNECTIONS),
    ]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    line = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not line:
        raise RuntimeError(f"the load generator failed: {done.stdout} {done.stderr}")
    return {**json.loads(line[-1]), "target_rps": rate}


def measure(port: int, bodies: Path, seconds: float, quick: bool) -> list[dict[str, Any]]:
    """Every concurrency and rate point of one server."""
    points = []
    run_wrk(port, bodies, 8, 1 if quick else 3)  # warm-up, not recorded
    for connections in CONCURRENCIES:
        point = run_wrk(port, bodies, connections, seconds)
        points.append({"mode": "concurrency", **point})
        print(
            f"  c={connections:3d}: {point['rps']:8.0f} req/s  p50 {point['p50_ms']:.2f} ms  "
            f"p99 {point['p99_ms']:.2f} ms",
            flush=True,
        )
    for rate in RATES:
        point = run_open_loop(port, bodies, rate, seconds)
        points.append(point)
        held = "" if point["sustained"] else "  NOT SUSTAINED"
        print(
            f"  {rate:5d}/s: {point['achieved_rps']:8.0f} req/s  p50 {point['p50_ms']} ms  "
            f"p99 {point['p99_ms']} ms  p99.9 {point['p99_9_ms']} ms{held}",
            flush=True,
        )
    return points


def _recflow_params(work: Path, name: str, **serve: Any) -> Path:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["serve"] = {
        **params["serve"],
        "run_dir": str(work / name / "run"),
        "workers": 2,
        "request_log": {**params["serve"]["request_log"], "dir": str(work / name / "requests")},
        "rate_limit": {"requests_per_s": 1e6, "burst": 100000},
        **serve,
    }
    path = work / f"{name}.params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _admin(port: int, path: str, body: object = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        json.dumps(body).encode() if body is not None else b"{}",
        {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def swap_under_load(
    work: Path, bundle: Path, bodies: Path, env: dict[str, str], seconds: float
) -> dict[str, Any]:
    """wrk on recflow while v2 is loaded, canaried, promoted and rolled back."""
    from pipelines.serving.server.sources import VersionFolder

    versions = VersionFolder(work / "registry")
    for version in ("v1", "v2"):
        versions.publish(bundle, version)
    port = _free_port()
    params = _recflow_params(work, "swap", port=port)
    command = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "serve",
        "--params",
        str(params),
        "--registry",
        str(work / "registry"),
        "--version",
        "v1",
    ]
    steps: list[str] = []
    with running("recflow-swap", command, port, env, work / "swap.log"):
        result: dict[str, Any] = {}
        load = threading.Thread(
            target=lambda: result.update(run_wrk(port, bodies, 32, seconds)), daemon=True
        )
        load.start()
        time.sleep(seconds / 6)
        for path, body in (
            ("/admin/load", {"version": "v2"}),
            ("/admin/canary", {"version": "v2", "weight": 0.5}),
            ("/admin/promote", {}),
            ("/admin/rollback", None),
        ):
            state = _admin(port, path, body)
            steps.append(f"{path}: stable {state['desired']['stable']}")
            time.sleep(seconds / 8)
        load.join(seconds + 60)
    return {**result, "steps": steps, "failed": result["socket_errors"] + result["non_2xx"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each point")
    parser.add_argument("--quick", action="store_true", help="2 s points, a temporary result")
    parser.add_argument("--preset", default="default", help="preset to train on without a model")
    parser.add_argument("--only", nargs="*", default=None, help="servers to measure")
    parser.add_argument("--out", type=Path, default=None, help="the results file")
    parser.add_argument(
        "--table", action="store_true", help="print the README's table of the results file"
    )
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads((args.out or RESULTS / "serving.json").read_text())))
        return 0
    if shutil.which("wrk") is None:
        print("skipped: wrk is not installed (make wrk, or apt-get install wrk)", file=sys.stderr)
        return 2
    seconds = 2.0 if args.quick else args.seconds
    work = Path(tempfile.mkdtemp(prefix="recflow-bench-serving-"))
    try:
        bundle, prepared = build_bundle(work, args.preset)
        bodies = work / "bodies.jsonl"
        write_bodies(prepared, bundle, bodies)
        # the servers' tokens; granian's run folder is prepared in this process, so here too
        os.environ.update(
            RECFLOW_API_TOKENS=TOKEN,
            RECFLOW_ADMIN_TOKEN=ADMIN,
            RECFLOW_PSEUDONYM_KEY="bench-pseudonym-key-0123456789",
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        servers = _servers(work, bundle, env)
        results: dict[str, Any] = {}
        for name, (description, command_for) in servers.items():
            if args.only and name not in args.only:
                continue
            port = _free_port()
            print(f"== {name}: {description}", flush=True)
            with running(name, command_for(port), port, env, work / f"{name}.log"):
                results[name] = {
                    "description": description,
                    "points": measure(port, bodies, seconds, args.quick),
                }
        swap = None
        if not args.only or "swap" in args.only:
            print("== hot swap and rollback under load", flush=True)
            swap = swap_under_load(work, bundle, bodies, env, max(6.0, 3 * seconds))
            print(f"  {swap['requests']} requests, {swap['failed']} failed", flush=True)
        report = {
            "benchmark": "serving throughput and latency (POST /recommend, top-20)",
            "schema_version": SCHEMA_VERSION,
            "quick": args.quick,
            "seconds_per_point": seconds,
            "load_generator": {
                "concurrency": "closed loop: wrk, 1 thread, benchmarks/serving_wrk.lua",
                "rate": "open loop: benchmarks/loadgen.py, 1 process, latency from due time",
            },
            "machine": machine_info(),
            "servers": results,
            "swap_under_load": swap,
            "summary": _summary(results),
        }
        out = args.out or (
            Path(tempfile.gettempdir()) / "serving-quick.json"
            if args.quick
            else RESULTS / "serving.json"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _servers(work: Path, bundle: Path, env: dict[str, str]) -> dict[str, Any]:
    def recflow(name: str, **serve: Any) -> Any:
        def command(port: int) -> list[str]:
            params = _recflow_params(work, name, port=port, **serve)
            return [
                sys.executable,
                "-m",
                "pipelines.cli",
                "serve",
                "--params",
                str(params),
                "--model",
                str(bundle),
            ]

        return command

    def granian(port: int) -> list[str]:
        # the same app under granian: the run folder is prepared here as the launcher does
        from pipelines.core.params import ServeConfig
        from pipelines.serving.server.launch import prepare_run

        params = yaml.safe_load(
            _recflow_params(work, "granian", port=port, cache=NO_CACHE).read_text()
        )
        cfg = ServeConfig.model_validate(params["serve"])
        prepare_run(cfg, model=bundle, versions=None, version=None, workers=2)
        env["RECFLOW_SERVE_RUN"] = str(cfg.run_dir.resolve())
        env["PROMETHEUS_MULTIPROC_DIR"] = str(cfg.run_dir.resolve() / "metrics")
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
            "pipelines.serving.server.app:create_app",
        ]

    def naive(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.serving_naive",
            "--folder",
            str(bundle),
            "--port",
            str(port),
            "--workers",
            "2",
        ]

    def litserve(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.serving_litserve",
            "--folder",
            str(bundle),
            "--port",
            str(port),
        ]

    # the replayed bodies repeat (5,000 of them), so the compared servers run with the
    # recommendation cache off: every request is a model call, as in the naive server and
    # LitServe; "recflow-cached" shows what the cache adds when requests repeat
    return {
        "recflow": (
            "recflow serve: Starlette + msgspec on uvicorn, 2 workers, batching, cache off",
            recflow("recflow", cache=NO_CACHE),
        ),
        "recflow-no-batching": (
            "the same with dynamic batching off",
            recflow("nobatch", batching={"enabled": False}, cache=NO_CACHE),
        ),
        "recflow-granian": ("the same application on granian, 2 workers", granian),
        "recflow-cached": (
            "recflow serve as configured in params.yaml: batching and the cache on (the replayed "
            "bodies repeat, so nearly every request after the first pass is a cache hit)",
            recflow("cached"),
        ),
        "naive": ("FastAPI + pydantic + torch eager per request, uvicorn, 2 workers", naive),
        "litserve": ("LitServe with its batching, the same ONNX artifact", litserve),
    }


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """Each server's best closed-loop rate and, per target rate, the open loop's p99: quoted
    only where the rate was sustained; recflow's best rate over the others'."""

    def best(name: str) -> float | None:
        points = results.get(name, {}).get("points", [])
        rates = [p["rps"] for p in points if p["mode"] == "concurrency" and not p["non_2xx"]]
        return max(rates) if rates else None

    def at_rates(name: str) -> dict[str, Any]:
        return {
            str(p["target_rps"]): {
                "achieved_rps": p["achieved_rps"],
                "sustained": p["sustained"],
                "p99_ms": p["p99_ms"] if p["sustained"] else None,
            }
            for p in results.get(name, {}).get("points", [])
            if p["mode"] == "rate"
        }

    out: dict[str, Any] = {
        name: {"max_rps": best(name), "rates": at_rates(name)} for name in results
    }
    recflow = best("recflow")
    for other in ("naive", "litserve", "recflow-no-batching", "recflow-granian"):
        theirs = best(other)
        if recflow and theirs:
            out[f"recflow_over_{other}"] = round(recflow / theirs, 2)
    return out


# the README table's rows, in its order
LABELS = {
    "recflow": "**recflow serve** (uvicorn, batching, cache off)",
    "recflow-no-batching": "recflow serve, batching off, cache off",
    "recflow-granian": "recflow serve on granian, cache off",
    "litserve": "LitServe (its batching, the same ONNX artifact)",
    "naive": "naive: FastAPI + pydantic + torch eager",
    "recflow-cached": "recflow serve as configured (cache on; bodies repeat)",
}


def table(report: dict[str, Any]) -> str:
    """The README's table of a results file: best closed-loop rate, latency at one
    connection, and the open loop's p99 per target rate, or the rate achieved where it fell
    short."""
    if report.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"a results file of schema {SCHEMA_VERSION} is needed")
    first = next(iter(report["servers"].values()))["points"]  # every server has the same rates
    rates = [p["target_rps"] for p in first if p["mode"] == "rate"]
    lines = [
        "| server | max req/s (closed loop) | p50 / p99 ms at c=1 | p99 ms at "
        + " / ".join(f"{r:,}" for r in rates)
        + " req/s (open loop) |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in LABELS.items():
        points = report["servers"].get(name, {}).get("points")
        if not points:
            continue
        closed = [p for p in points if p["mode"] == "concurrency" and not p["non_2xx"]]
        top = max(closed, key=lambda p: p["rps"])
        one = next(p for p in points if p["mode"] == "concurrency" and p["connections"] == 1)
        cells = [
            f"{p['p99_ms']:.1f}"
            if p["sustained"]
            else f"not sustained ({p['achieved_rps']:,.0f}/s)"
            for p in points
            if p["mode"] == "rate"
        ]
        lines.append(
            f"| {label} | {top['rps']:,.0f} (c={top['connections']}) | "
            f"{one['p50_ms']:.2f} / {one['p99_ms']:.2f} | {' / '.join(cells)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
