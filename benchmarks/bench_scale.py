"""The growth curve: generate, ingest, validate, prepare and one training epoch at about 1M, 10M
and 100M events, each stage's wall time, peak memory and events per second.

    python -m benchmarks.bench_scale                    # medium, large, huge (hours on 2 cores)
    python -m benchmarks.bench_scale --presets medium large
    python -m benchmarks.bench_scale --presets huge --work W --from train   # W kept by --work W

Each preset runs in its own folder: the stages run as the commands ``dvc.yaml`` runs, on a copy
of ``params.yaml`` with ``generate.preset`` set, ``validate.max_rows`` raised so the largest
batch is not refused for its size, and one epoch of ``train.loss: sampled_softmax`` (what a
catalogue of 50,000 items and more trains with). A stage's peak memory is the larger of its
process tree's summed resident memory, sampled every 0.1 s, and the largest resident memory of
any single process of the tree (the kernel's ``wait4`` record, which no sampling misses). The
train stage's wall time holds loading, one epoch, its validation on ``train.valid_users`` users
and the final test scoring; the epoch's own training seconds and the test scoring's seconds are
read from its log.

Results go to ``benchmarks/results/scale.json`` (a preset's entry is replaced when it runs
again, the others are kept) and the log-log plot ``benchmarks/results/scale.svg``. The JSON
also says, per stage, how its time and memory grow (the slope of the log-log fit over the
presets run) and the largest batch the machine's memory holds by it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.machine import machine_info
from pipelines.core.project import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
PRESETS = ("medium", "large", "huge")
STAGES = ("generate", "ingest", "validate", "prepare", "train")
GB = 1e9
# what each stage writes in a preset's folder (see stage_commands), its main output first
OUTPUTS = {
    "generate": ("source",),
    "ingest": ("raw",),
    "validate": ("validated", "reports", "validation.json", "quarantine"),
    "prepare": ("prepared", "prepare.json"),
    "train": ("model",),
}
# validate.max_rows for the runs: above the largest preset's batch
MAX_ROWS = 1_000_000_000

EPOCH_LINE = re.compile(r"epoch 1: loss [\d.]+, .*?, ([\d.]+) s \(")
TEST_LINE = re.compile(
    r"test: ([\d,]+) users scored in ([\d.]+) s \(model ([\d.]+) s, baselines ([\d.]+) s\)"
)


@dataclass(frozen=True)
class Measured:
    """One command's run: exit status, wall seconds, peak memory in bytes."""

    returncode: int
    wall_s: float
    peak_rss: int


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_measured(command: Sequence[str], log: Path, *, interval_s: float = 0.1) -> Measured:
    """Run ``command`` with its output in ``log``; its wall time and peak memory.

    The peak is the larger of the process tree's summed resident memory (sampled every
    ``interval_s``) and the largest resident memory of any one process of the tree, which the
    kernel records for every waited-for process (``wait4``'s ``ru_maxrss``).
    """
    started = time.perf_counter()
    with log.open("wb") as sink:
        child = subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT)
        sampled = [0]
        done = threading.Event()

        def sample() -> None:
            try:
                process = psutil.Process(child.pid)
                while not done.wait(interval_s):
                    sampled[0] = max(sampled[0], _tree_rss(process))
            except psutil.NoSuchProcess:
                return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    return Measured(child.returncode, wall, max(sampled[0], usage.ru_maxrss * 1024))


def bench_params(preset: str, folder: Path) -> Path:
    """A copy of ``params.yaml`` for one preset's run (see the module doc)."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["generate"]["preset"] = preset
    params["validate"]["max_rows"] = MAX_ROWS
    params["train"].update(epochs=1, loss="sampled_softmax", progress=False)
    target = folder / "params.yaml"
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    return target


def stage_commands(params: Path, folder: Path) -> dict[str, list[str]]:
    """The five commands, as ``dvc.yaml`` runs them, with paths inside ``folder``."""

    def command(module: str, *args: str | Path) -> list[str]:
        return [sys.executable, "-m", f"pipelines.stages.{module}", *map(str, args)]

    return {
        "generate": command("generate", "--params", params, "--out", folder / "source"),
        "ingest": command(
            "ingest", "--params", params, "--source", folder / "source", "--out", folder / "raw"
        ),
        "validate": command(
            "validate",
            folder / "raw",
            "--params",
            params,
            "--out",
            folder / "validated",
            "--reports",
            folder / "reports",
            "--quarantine",
            folder / "quarantine",
            "--metrics",
            folder / "validation.json",
        ),
        "prepare": command(
            "prepare",
            "--params",
            params,
            "--validated",
            folder / "validated",
            "--out",
            folder / "prepared",
            "--metrics",
            folder / "prepare.json",
        ),
        "train": command(
            "train",
            "--torchrun",
            "--params",
            params,
            "--prepared",
            folder / "prepared",
            "--out",
            folder / "model",
        ),
    }


def _events(folder: Path, stage: str) -> int:
    import pyarrow.parquet as pq

    if stage == "generate":
        return int(pq.ParquetFile(folder / "source" / "events.parquet").metadata.num_rows)
    (manifest,) = (folder / "raw").glob("*/manifest.json")
    return int(json.loads(manifest.read_text())["rows"])


def train_details(log: str) -> dict[str, Any]:
    """The epoch's training seconds and the final test scoring's, read from the train log."""
    details: dict[str, Any] = {}
    epoch = EPOCH_LINE.search(log)
    if epoch:
        details["epoch_train_s"] = float(epoch.group(1))
    test = TEST_LINE.search(log)
    if test:
        details["test_users"] = int(test.group(1).replace(",", ""))
        details["test_scoring_s"] = float(test.group(2))
        details["test_model_s"] = float(test.group(3))
        details["test_baselines_s"] = float(test.group(4))
    return details


def run_preset(
    preset: str,
    folder: Path,
    progress: Any = print,
    only: Sequence[str] = STAGES,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the stages (``only``: the first ones of the chain) on ``preset`` in ``folder``; one
    entry of ``scale.json``.

    ``earlier``: the stages already run in ``folder`` by an earlier call, with their entries;
    they are not run again and the later stages read their outputs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    params = bench_params(preset, folder)
    stages: dict[str, Any] = dict(earlier or {})
    for stage, command in stage_commands(params, folder).items():
        if stage not in only:
            break
        if stage in stages:
            continue
        for name in OUTPUTS[stage]:
            # a stage run again starts afresh (the trainer would resume a finished run)
            if (folder / name).is_dir():
                shutil.rmtree(folder / name)
            (folder / name).unlink(missing_ok=True)
        log = folder / f"{stage}.log"
        measured = run_measured(command, log)
        text = log.read_text(errors="replace")
        if measured.returncode != 0:
            stages[stage] = {
                "failed": f"exit {measured.returncode}",
                "wall_s": round(measured.wall_s, 1),
                "peak_rss_gb": round(measured.peak_rss / GB, 3),
                "log_tail": text[-1500:],
            }
            progress(f"{preset}: {stage} failed (exit {measured.returncode}), see {log}")
            break
        events = _events(folder, stage)
        entry: dict[str, Any] = {
            "events": events,
            "wall_s": round(measured.wall_s, 1),
            "peak_rss_gb": round(measured.peak_rss / GB, 3),
            "events_per_s": round(events / max(measured.wall_s, 1e-9)),
        }
        if stage == "train":
            entry.update(train_details(text))
            if "epoch_train_s" in entry:
                entry["events_per_s"] = round(events / max(entry["epoch_train_s"], 1e-9))
                entry["events_per_s_of"] = "the epoch's training seconds"
        stages[stage] = entry
        progress(
            f"{preset}: {stage} {entry['wall_s']:.0f} s, peak {entry['peak_rss_gb']:.2f} GB, "
            f"{entry['events_per_s']:,} events/s"
        )
    batch = stages.get("ingest", {}).get("events")
    entry = {"preset": preset, "batch_events": batch, "stages": stages}
    if earlier:
        entry["stages_from_an_earlier_run"] = list(earlier)
    return entry


def earlier_stages(out: Path, preset: str, start: str, folder: Path) -> dict[str, Any]:
    """The recorded entries of the stages before ``start`` for ``preset`` (from ``out``), whose
    outputs ``folder`` must still hold.

    Raises:
        SystemExit: ``out`` has no such entries, or ``folder`` lacks a stage's output.
    """
    before = STAGES[: STAGES.index(start)]
    runs = json.loads(out.read_text()).get("runs", []) if out.is_file() else []
    stages = next((run["stages"] for run in runs if run["preset"] == preset), {})
    missing = [stage for stage in before if "events" not in stages.get(stage, {})]
    if missing:
        raise SystemExit(f"{out} has no recorded {', '.join(missing)} of {preset}: run it whole")
    absent = [OUTPUTS[stage][0] for stage in before if not (folder / OUTPUTS[stage][0]).exists()]
    if absent:
        raise SystemExit(f"{folder} lacks {', '.join(absent)}: run {preset} whole")
    return {stage: stages[stage] for stage in before}


def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares ``log y = a + b log x``: ``(a, b)``; None for fewer than two sizes."""
    if len({x for x, _ in points}) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(max(y, 1e-9)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope


def growth(runs: list[dict[str, Any]], memory_gb: float) -> dict[str, Any]:
    """Per stage: the log-log slopes of wall time and peak memory over the batch's events (1: in
    proportion, 0: flat), the memory each further event costs between the two largest batches,
    and the batch at which that line reaches ``memory_gb``; the smallest of those is the largest
    batch the machine holds."""
    per_stage: dict[str, Any] = {}
    for stage in STAGES:
        rows = [
            (run["batch_events"], run["stages"][stage])
            for run in runs
            if stage in run["stages"] and "failed" not in run["stages"][stage]
        ]
        wall = _fit([(events, row["wall_s"]) for events, row in rows])
        memory = _fit([(events, row["peak_rss_gb"]) for events, row in rows])
        if wall is None or memory is None:
            continue
        entry: dict[str, Any] = {
            "largest_batch": max(events for events, _ in rows),
            "wall_slope": round(wall[1], 3),
            "memory_slope": round(memory[1], 3),
        }
        # memory = fixed + per event x events, from the two largest batches: where it meets
        # the machine's memory (a fixed or shrinking cost never does)
        (small, small_row), (big, big_row) = sorted(rows, key=lambda pair: pair[0])[-2:]
        per_event = (big_row["peak_rss_gb"] - small_row["peak_rss_gb"]) / (big - small or 1)
        entry["bytes_per_event"] = round(per_event * GB, 1)
        if per_event * GB > 1.0:
            entry["events_at_memory_limit"] = round(
                big + (memory_gb - big_row["peak_rss_gb"]) / per_event
            )
        per_stage[stage] = entry
    limits = {
        stage: entry["events_at_memory_limit"]
        for stage, entry in per_stage.items()
        if "events_at_memory_limit" in entry
    }
    every_stage = [
        run["batch_events"]
        for run in runs
        if all(stage in run["stages"] and "failed" not in run["stages"][stage] for stage in STAGES)
    ]
    summary: dict[str, Any] = {"memory_gb": memory_gb, "stages": per_stage}
    summary["largest_batch_every_stage"] = max(every_stage, default=None)
    if limits:
        stage = min(limits, key=lambda name: limits[name])
        summary["largest_batch_by_fit"] = {"events": limits[stage], "bound_by": stage}
    return summary


_COLOURS = {
    "generate": "#4e79a7",
    "ingest": "#f28e2b",
    "validate": "#59a14f",
    "prepare": "#e15759",
    "train": "#76b7b2",
}


def _count_label(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _log_ticks(low: float, high: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def _panel(runs: list[dict[str, Any]], key: str, title: str, unit: str, left: float) -> list[str]:
    width, height, pad = 380.0, 260.0, 50.0
    series = {
        stage: sorted(
            (run["batch_events"], run["stages"][stage][key])
            for run in runs
            if stage in run["stages"] and "failed" not in run["stages"][stage]
        )
        for stage in STAGES
    }
    points = [p for values in series.values() for p in values]
    if not points:
        return []
    xs = _log_ticks(min(x for x, _ in points), max(x for x, _ in points))
    ys = _log_ticks(min(y for _, y in points), max(y for _, y in points))

    def px(x: float) -> float:
        span = math.log10(xs[-1]) - math.log10(xs[0]) or 1.0
        return left + pad + (math.log10(x) - math.log10(xs[0])) / span * (width - pad)

    def py(y: float) -> float:
        span = math.log10(ys[-1]) - math.log10(ys[0]) or 1.0
        return 20 + height - (math.log10(max(y, 1e-9)) - math.log10(ys[0])) / span * height

    out = [
        f'<text x="{left + pad + (width - pad) / 2}" y="14" text-anchor="middle" '
        f'font-weight="bold">{title}</text>',
        f'<rect x="{left + pad}" y="20" width="{width - pad}" height="{height}" fill="none" '
        'stroke="#999"/>',
    ]
    for x in xs:
        out.append(
            f'<text x="{px(x):.1f}" y="{height + 36}" text-anchor="middle">{_count_label(x)}</text>'
        )
    out.append(
        f'<text x="{left + pad + (width - pad) / 2}" y="{height + 52}" text-anchor="middle">'
        "events in the batch</text>"
    )
    for y in ys:
        out.append(f'<text x="{left + pad - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        out.append(
            f'<line x1="{left + pad}" x2="{left + width}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            'stroke="#eee"/>'
        )
    out.append(
        f'<text x="{left + 12}" y="{20 + height / 2}" transform="rotate(-90 {left + 12} '
        f'{20 + height / 2})" text-anchor="middle">{unit}</text>'
    )
    for stage, values in series.items():
        if not values:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in values)
        colour = _COLOURS[stage]
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.extend(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in values
        )
    return out


def render_svg(runs: list[dict[str, Any]]) -> str:
    """The log-log plot: wall time and peak memory of each stage against the batch's events."""
    body = _panel(runs, "wall_s", "wall time per stage", "seconds", 0.0)
    body += _panel(runs, "peak_rss_gb", "peak memory per stage", "GB", 420.0)
    for i, stage in enumerate(STAGES):
        x = 60 + i * 150
        body.append(f'<rect x="{x}" y="330" width="12" height="12" fill="{_COLOURS[stage]}"/>')
        body.append(f'<text x="{x + 16}" y="340">{stage}</text>')
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="840" height="350" '
        'font-family="sans-serif" font-size="11">\n' + "\n".join(body) + "\n</svg>\n"
    )


def write_results(runs: list[dict[str, Any]], out: Path, memory_gb: float) -> dict[str, Any]:
    """Merge ``runs`` into ``out`` (a preset run again replaces its entry) and draw the plot."""
    kept: list[dict[str, Any]] = []
    if out.is_file():
        kept = [
            run
            for run in json.loads(out.read_text()).get("runs", [])
            if run["preset"] not in {r["preset"] for r in runs}
        ]
    merged = sorted([*kept, *runs], key=lambda run: run["batch_events"] or 0)
    report = {
        "machine": machine_info(),
        "command": "make bench-scale",
        "protocol": (
            "each stage run as its dvc.yaml command in its own process; peak memory: the larger "
            "of the process tree's summed RSS sampled every 0.1 s and the largest single "
            "process's ru_maxrss; train: one epoch of sampled_softmax with its validation "
            "sample and the final scoring of every test user"
        ),
        "runs": merged,
        "growth": growth(merged, memory_gb),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".svg").write_text(render_svg(merged))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (kept)")
    parser.add_argument(
        "--stages",
        type=int,
        choices=range(1, len(STAGES) + 1),
        default=len(STAGES),
        help="run the first N stages of " + ", ".join(STAGES) + " (default: all)",
    )
    parser.add_argument(
        "--from",
        dest="start",
        choices=STAGES,
        default=STAGES[0],
        help="start at this stage in the --work folder of an earlier run, whose outputs and "
        "recorded entries of the earlier stages it keeps",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument(
        "--memory-gb",
        type=float,
        default=round(psutil.virtual_memory().total / GB, 1),
        help="memory the largest batch must fit in (default: this machine's)",
    )
    args = parser.parse_args(argv)
    if args.start != STAGES[0] and args.work is None:
        parser.error("--from needs the --work folder of the earlier run")
    work = args.work or Path(tempfile.mkdtemp(prefix="recflow-scale-"))
    earlier = {
        preset: earlier_stages(args.out, preset, args.start, work / preset)
        for preset in args.presets
        if args.start != STAGES[0]
    }
    runs = []
    for preset in args.presets:
        folder = work / preset
        if preset not in earlier:
            shutil.rmtree(folder, ignore_errors=True)
        runs.append(
            run_preset(
                preset,
                folder,
                lambda line: print(line, file=sys.stderr),
                STAGES[: args.stages],
                earlier.get(preset),
            )
        )
        if args.work is None:
            shutil.rmtree(folder, ignore_errors=True)
        write_results(runs, args.out, args.memory_gb)
    report = json.loads(args.out.read_text())
    print(json.dumps(report["growth"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
