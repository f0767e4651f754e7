"""recflow's SASRec trainer beside RecBole's on MovieLens-100k: same split, size and CPU.

    python -m benchmarks.bench_recbole --recbole-budget-min 20 --threads 2

1. runs ``benchmarks/recbole_side.py`` under RecBole's own interpreter (``.venv-recbole``, built
   by ``make recbole-env``): it dumps RecBole's preprocessed leave-one-out split and trains
   RecBole's SASRec epoch by epoch within the time budget;
2. turns that split into a prepared folder and trains recflow's SASRec on it in this process,
   with the same model size, thread count and evaluation protocol (full ranking, history items
   masked, as RecBole does);
3. writes ``benchmarks/results/recbole_sasrec_ml100k.json``: per side test NDCG@10 and
   Recall@10, best validation NDCG@10, seconds per epoch, and seconds until validation NDCG@10
   first reaches RecBole's best within its budget (time to quality), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.machine import machine_info
from pipelines.core.io import write_json
from pipelines.core.params import RunConfig, TrainConfig
from pipelines.core.project import PROJECT_ROOT
from pipelines.model.training.loop import train

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
RECBOLE_PYTHON = PROJECT_ROOT / ".venv-recbole" / "bin" / "python"

# recflow's side: the compared size, RecBole's evaluation protocol; training settings chosen on
# the validation split (the test split is read once, for the best epoch)
RECFLOW_TRAIN: dict[str, Any] = {
    "hidden": 64,
    "layers": 2,
    "heads": 2,
    "max_len": 50,
    "dropout": 0.2,
    "category_feature": False,
    "mask_history": True,
    "lr": 0.002,
    "batch_size": 64,
    "window_stride": 10,
    "epochs": 200,
    "patience": 10,
    "progress": False,
}


def write_prepared(split: dict[str, Any], out: Path) -> None:
    """RecBole's split as the prepare stage's folder (ids unchanged, no categories)."""
    out.mkdir(parents=True, exist_ok=True)
    n_items = int(split["n_items"])
    users = split["users"]
    ids = pa.array(range(1, n_items + 1), pa.int64())
    pq.write_table(
        pa.table({"item_idx": ids, "category_idx": pa.array([0] * n_items, pa.int64())}),
        out / "item_map.parquet",
    )
    user_idx = pa.array(range(len(users)), pa.int64())
    train_lists = [u["train"] for u in users]
    pq.write_table(
        pa.table({"user_idx": user_idx, "item_idx": pa.array(train_lists, pa.list_(pa.int64()))}),
        out / "train.parquet",
    )
    for name, history, target in (
        ("valid", train_lists, [u["valid"] for u in users]),
        ("test", [u["train"] + [u["valid"]] for u in users], [u["test"] for u in users]),
    ):
        table = pa.table(
            {
                "user_idx": user_idx,
                "history": pa.array(history, pa.list_(pa.int64())),
                "target": pa.array(target, pa.int64()),
            }
        )
        pq.write_table(table, out / f"{name}.parquet")


def seconds_to_quality(epochs: list[dict[str, Any]], bar: float) -> float | None:
    """Wall time at the end of the first epoch whose validation NDCG@10 reaches ``bar``."""
    for row in epochs:
        if row["valid_ndcg@10"] >= bar:
            return float(row["seconds_since_start"])
    return None


def seconds_per_epoch(epochs: list[dict[str, Any]]) -> float:
    """Mean wall time of an epoch, training and validation included."""
    return round(epochs[-1]["seconds_since_start"] / len(epochs), 3) if epochs else 0.0


def run_recbole(work: Path, budget_min: float, threads: int) -> dict[str, Any]:
    """RecBole's side, in its own interpreter."""
    if not RECBOLE_PYTHON.is_file():
        raise SystemExit("error: no .venv-recbole: run `make recbole-env` first")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONWARNINGS": "ignore"}
    command = [
        str(RECBOLE_PYTHON),
        str(PROJECT_ROOT / "benchmarks" / "recbole_side.py"),
        "--work",
        str(work),
        "--budget-min",
        str(budget_min),
        "--threads",
        str(threads),
    ]
    subprocess.run(command, check=True, env=env, cwd=work)
    result: dict[str, Any] = json.loads((work / "recbole.json").read_text())
    return result


def run_recflow(prepared: Path, out: Path, threads: int) -> dict[str, Any]:
    """recflow's side in this process; epochs timed from before data loading."""
    torch.set_num_threads(threads)
    cfg = TrainConfig.model_validate({**RECFLOW_TRAIN, "threads": threads})
    epochs: list[dict[str, Any]] = []
    started = time.perf_counter()

    def on_epoch(row: dict[str, Any]) -> None:
        valid = row.get("valid") or {}
        epochs.append(
            {
                "epoch": row["epoch"],
                "seconds_since_start": round(time.perf_counter() - started, 3),
                "valid_ndcg@10": valid.get("ndcg@10"),
                "valid_recall@10": valid.get("hr@10"),
            }
        )
        print(json.dumps(epochs[-1]), flush=True)

    result = train(cfg, RunConfig(logical_date="2026-11-22", seed=2020), prepared, out, on_epoch)
    return {
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "best_valid_ndcg@10": result.best_valid["ndcg@10"],
        "test_ndcg@10": result.test["ndcg@10"],
        "test_recall@10": result.test["hr@10"],
        "settings": cfg.model_dump(mode="json"),
    }


def side(result: dict[str, Any], bar: float) -> dict[str, Any]:
    """The fields the comparison reports for one side."""
    return {
        "test_ndcg@10": round(result["test_ndcg@10"], 4),
        "test_recall@10": round(result["test_recall@10"], 4),
        "best_valid_ndcg@10": round(result["best_valid_ndcg@10"], 4),
        "sec_per_epoch": seconds_per_epoch(result["epochs"]),
        "sec_to_quality": seconds_to_quality(result["epochs"], bar),
        "epochs": len(result["epochs"]),
        "best_epoch": result["best_epoch"],
    }


def compare(recbole: dict[str, Any], recflow: dict[str, Any]) -> dict[str, Any]:
    """Both sides against RecBole's best validation NDCG@10 within its budget."""
    bar = float(recbole["best_valid_ndcg@10"])
    ours, theirs = side(recflow, bar), side(recbole, bar)
    ratio = None
    if ours["sec_to_quality"] and theirs["sec_to_quality"]:
        ratio = round(theirs["sec_to_quality"] / ours["sec_to_quality"], 1)
    return {
        "quality_bar_valid_ndcg@10": round(bar, 4),
        "recbole": theirs,
        "recflow": ours,
        "time_to_quality_ratio": ratio,
        "ndcg_target_met": ours["test_ndcg@10"] >= theirs["test_ndcg@10"],
        "speed_target_met": ratio is not None and ratio >= 20,
    }


def convergence(budget_min: float, threads: int) -> int:
    """RecBole alone with early stopping (stopping_step 10) within ``budget_min``."""
    with tempfile.TemporaryDirectory(prefix="recflow-recbole-") as tmp:
        recbole = run_recbole(Path(tmp), budget_min, threads)
    converged = recbole["stopped_by"] == "early stopping"
    result = {
        "machine": machine_info(),
        "command": f"python -m benchmarks.bench_recbole --convergence --recbole-budget-min "
        f"{budget_min:g} --threads {threads}",
        "converged": converged,
        "note": "stopped by RecBole's early stopping (10 epochs without a gain)"
        if converged
        else f"NOT converged: stopped by the {budget_min:g}-minute budget after "
        f"{len(recbole['epochs'])} epochs; its numbers are a lower bound of RecBole's quality",
        **{k: recbole[k] for k in ("best_epoch", "best_valid_ndcg@10", "test_ndcg@10")},
        "test_recall@10": recbole["test_recall@10"],
        "budget_seconds": recbole["budget_seconds"],
        "epochs": recbole["epochs"],
    }
    write_json(RESULTS / "recbole_sasrec_ml100k_convergence.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recbole-budget-min", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--convergence",
        action="store_true",
        help="only RecBole, until its early stopping or the budget: its quality at convergence",
    )
    args = parser.parse_args(argv)
    if args.convergence:
        return convergence(args.recbole_budget_min, args.threads)
    with tempfile.TemporaryDirectory(prefix="recflow-recbole-") as tmp:
        work = Path(tmp)
        load = {"recbole_start": os.getloadavg()}
        recbole = run_recbole(work, args.recbole_budget_min, args.threads)
        load["recbole_end"] = os.getloadavg()
        split = json.loads((work / "split.json").read_text())
        write_prepared(split, work / "prepared")
        load["recflow_start"] = os.getloadavg()
        recflow = run_recflow(work / "prepared", work / "recflow", args.threads)
        load["recflow_end"] = os.getloadavg()
    result = {
        "machine": machine_info(),
        "command": f"python -m benchmarks.bench_recbole --recbole-budget-min "
        f"{args.recbole_budget_min:g} --threads {args.threads}",
        "data": {
            "set": "MovieLens-100k as shipped in the recbole wheel",
            "users": len(split["users"]),
            "items": split["n_items"],
            "split": "leave-one-out by RecBole (its preprocessing and timestamp order), "
            "full ranking, history items masked",
        },
        "model": "SASRec, hidden 64, 2 layers, 2 heads, max length 50, dropout 0.2",
        "threads": args.threads,
        "recbole_budget_seconds": args.recbole_budget_min * 60,
        "recbole_stopped_by": recbole["stopped_by"],
        "recbole_settings": {
            "version": recbole["recbole"],
            "anomaly_detection": recbole["anomaly_detection"],
            "train_batch_size": recbole["train_batch_size"],
            "learning_rate": recbole["learning_rate"],
            "loss": "CE (full softmax)",
        },
        "recflow_settings": recflow["settings"],
        "loadavg": {k: [round(x, 2) for x in v] for k, v in load.items()},
        **compare(recbole, recflow),
        "epochs": {"recbole": recbole["epochs"], "recflow": recflow["epochs"]},
    }
    write_json(RESULTS / "recbole_sasrec_ml100k.json", result)
    summary = {k: result[k] for k in ("recbole", "recflow", "time_to_quality_ratio")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
