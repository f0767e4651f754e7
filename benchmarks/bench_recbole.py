"""recflow's SASRec beside RecBole's on MovieLens-100k, like for like.

    python -m benchmarks.bench_recbole [--work DIR] [--threads 2] all   # or one step at a time:
    python -m benchmarks.bench_recbole tune-recbole        # RecBole's grid, first epochs
    python -m benchmarks.bench_recbole converge-recbole    # its choice to convergence (~1 h)
    python -m benchmarks.bench_recbole tune-recflow        # recflow's grid
    python -m benchmarks.bench_recbole final               # 3 recflow seeds, RecBole to the bar
    python -m benchmarks.bench_recbole report              # the results file and README table
    python -m benchmarks.bench_recbole progress            # validation so far, no comparison
    python -m benchmarks.bench_recbole restore-recbole     # instead of the two RecBole steps

``restore-recbole`` takes RecBole's tuning and converged run from the results file of an earlier
``report`` (``--record``) instead of running them again (about 1.5 hours on 2 cores): RecBole is
deterministic here (same seed, threads and wheel), which the step checks by running RecBole's
chosen setting for one epoch and comparing its loss and validation NDCG@10 with the record's,
and ``report`` checks again on the timed run of ``final``, which retraces the converged run's
curve to the bar.

A step reuses the finished runs of earlier calls in ``--work`` (``build/bench-recbole``), so the
steps can run one at a time and an interrupted one continues.

RecBole runs in its own interpreter (``.venv-recbole``, ``make recbole-env``) through
``benchmarks/recbole_side.py``; recflow runs in a child process of this environment
(``run-recflow``), so both sides are separate processes launched the same way, with the same
thread count, and both clocks start when the benchmark launches the process (imports and data
loading count).

The rules (see ``PROTOCOL`` and ``TUNING``, written into the results file):

1. One protocol, RecBole's: its own leave-one-out split (its preprocessing and timestamp
   order, dumped by ``recbole_side.py`` and checked against its test loader), full ranking
   over every item, history items *not* excluded, the padding item never ranked, metrics at 10
   read from ``torch.topk(scores, 10)`` as RecBole's evaluator does (recflow's ranking with
   ``ties="topk"``). RecBole's scores are ranked by the same recflow code, and its unmasked
   numbers must equal RecBole's own evaluator's (checked). Both sides are also reported with
   history masked, labelled as such, never compared with an unmasked number.
2. Each side picks its settings on the validation split from a grid of the same size; the test
   split is never read while tuning (recflow's tuning runs train on a prepared folder whose test
   file repeats validation; RecBole's run with ``--no-test``).
3. RecBole's chosen setting runs once to its own early stopping (``converge-recbole``, about an
   hour on 2 cores): its best validation NDCG@10 is the quality bar. recflow's chosen setting
   runs with three seeds (``final``), each test split read once.
4. Time to quality: wall seconds from process launch until validation NDCG@10 first reaches the
   bar; the ratio is RecBole's over recflow's mean. ``final`` also reruns RecBole's converged
   setting until the bar, right after recflow's seeds on the same cores, so both clocks run under
   the same conditions; each time carries the process CPU seconds and the load average.

``report`` writes ``benchmarks/results/recbole_sasrec_ml100k.json`` from the step outputs in
``--work``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.machine import machine_info
from pipelines.core.io import write_json
from pipelines.core.project import PROJECT_ROOT

log = logging.getLogger("recflow.bench_recbole")

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
RESULT_FILE = RESULTS / "recbole_sasrec_ml100k.json"
PROGRESS_FILE = RESULTS / "recbole_sasrec_ml100k_progress.json"
RECBOLE_PYTHON = PROJECT_ROOT / ".venv-recbole" / "bin" / "python"
RECBOLE_SIDE = PROJECT_ROOT / "benchmarks" / "recbole_side.py"
METRICS = ("ndcg@10", "recall@10", "mrr@10")
SEEDS = (2020, 2021, 2022)
TUNING_SEED = 2020

# The compared size, the same on both sides.
MODEL = {"hidden": 64, "layers": 2, "heads": 2, "max_len": 50, "dropout": 0.2}

# RecBole: its SASRec at the compared size (inner size 256, dropout 0.2 on hidden and attention),
# CE loss over all items, Adam at its default learning rate, early stopping after 10 epochs
# without a gain. The grid is its batch size; the choice is the best validation NDCG@10 within
# the first RECBOLE_TUNING_EPOCHS epochs (one run to convergence takes about an hour on 2 cores).
RECBOLE_GRID: tuple[dict[str, Any], ...] = tuple(
    {"train_batch_size": batch, "learning_rate": 1e-3} for batch in (256, 2048)
)
RECBOLE_TUNING_EPOCHS = 5

# recflow: the compared size, RecBole's protocol (no masking, torch.topk ties), and the training
# changes the development trials on the validation split kept (development_trials in the
# results): overlapping windows (stride 10) whose targets are each trained once per epoch in the
# window that gives them the most context, batch 32, lr 0.002, label smoothing 0.1. The grid,
# as large as RecBole's, is the repeat term (pipelines/model/sasrec.py: a learned score offset
# for items already in the history, which RecBole's SASRec does not have) off and on, so the
# results show what it adds under the same training; each setting trains to its early stopping.
RECFLOW_BASE: dict[str, Any] = {
    **MODEL,
    "category_feature": False,
    "mask_history": False,
    "ties": "topk",
    "window_stride": 10,
    "window_targets": "newest",
    "batch_size": 32,
    "lr": 0.002,
    "label_smoothing": 0.1,
    "epochs": 200,
    "patience": 10,
    "progress": False,
}
RECFLOW_GRID: tuple[dict[str, Any], ...] = tuple(
    {"repeat_term": repeat} for repeat in (False, True)
)

STEPS = {
    "tune-recbole": "RecBole's grid, first epochs of each, on validation",
    "converge-recbole": "RecBole's chosen setting to its early stopping (about an hour)",
    "tune-recflow": "recflow's grid on validation",
    "final": "recflow's chosen setting on three seeds, then RecBole's until the bar",
    "report": "write the results file from the step outputs",
    "progress": "write what the steps measured so far (validation only, no comparison)",
    "restore-recbole": "RecBole's two steps from an earlier results file, checked by one epoch",
    "all": "every step above, in order",
}


def write_prepared(split: dict[str, Any], out: Path, *, tuning: bool = False) -> None:
    """RecBole's split as the prepare stage's folder (ids unchanged, no categories).

    With ``tuning`` the test file holds the validation rows again, so a tuning run cannot read
    the test targets even by accident.
    """
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
    valid = (train_lists, [u["valid"] for u in users])
    test = (
        valid
        if tuning
        else ([u["train"] + [u["valid"]] for u in users], [u["test"] for u in users])
    )
    pq.write_table(
        pa.table({"user_idx": user_idx, "item_idx": pa.array(train_lists, pa.list_(pa.int64()))}),
        out / "train.parquet",
    )
    for name, (history, target) in (("valid", valid), ("test", test)):
        table = pa.table(
            {
                "user_idx": user_idx,
                "history": pa.array(history, pa.list_(pa.int64())),
                "target": pa.array(target, pa.int64()),
            }
        )
        pq.write_table(table, out / f"{name}.parquet")


def _launch(command: Sequence[str], log_path: Path, cwd: Path) -> float:
    """Run ``command`` in ``cwd`` with its output in ``log_path``; returns the launch time."""
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONWARNINGS": "ignore"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as stream:
        launched = time.time()
        subprocess.run(
            [*command[:1], *command[1:], "--started-at", repr(launched)],
            check=True,
            env=env,
            cwd=cwd,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    return launched


def _finished(folder: Path, output: str, request: dict[str, Any]) -> bool:
    """A run in ``folder`` already finished for the same request (the benchmark resumes)."""
    done = folder / "request.json"
    if not ((folder / output).is_file() and done.is_file()):
        return False
    return bool(json.loads(done.read_text()) == request)


def run_recbole(
    work: Path,
    threads: int,
    *,
    settings: dict[str, Any],
    max_epochs: int = 1000,
    stop_at_ndcg: float | None = None,
    test: bool = True,
    seed: int = TUNING_SEED,
) -> dict[str, Any]:
    """One RecBole run in its own interpreter; returns its ``recbole.json``."""
    if not RECBOLE_PYTHON.is_file():
        raise SystemExit("error: no .venv-recbole: run `make recbole-env` first")
    command = [
        str(RECBOLE_PYTHON),
        str(RECBOLE_SIDE),
        "--work",
        str(work),
        "--threads",
        str(threads),
        "--seed",
        str(seed),
        "--batch-size",
        str(settings["train_batch_size"]),
        "--lr",
        str(settings["learning_rate"]),
        "--max-epochs",
        str(max_epochs),
    ]
    if stop_at_ndcg is not None:
        command += ["--stop-at-ndcg", repr(stop_at_ndcg)]
    if not test:
        command.append("--no-test")
    request = {"command": command[2:], "settings": settings}
    if _finished(work, "recbole.json", request):
        log.info("reusing the finished run in %s", work)
    else:
        # RecBole writes its logs and tensorboard files into its working folder
        _launch(command, work / "log.txt", cwd=work)
        write_json(work / "request.json", request)
    result: dict[str, Any] = json.loads((work / "recbole.json").read_text())
    return result


def _settings_name(settings: dict[str, Any]) -> str:
    return "-".join(f"{key}={value}" for key, value in sorted(settings.items()))


def tune_recbole(work: Path, threads: int) -> dict[str, Any]:
    """Every RecBole grid setting for its first epochs, test never read; the best on validation."""
    runs = []
    for settings in RECBOLE_GRID:
        folder = work / "tune-recbole" / _settings_name(settings)
        result = run_recbole(
            folder, threads, settings=settings, max_epochs=RECBOLE_TUNING_EPOCHS, test=False
        )
        runs.append({"settings": settings, **_curve_summary(result)})
        log.info("recbole %s: best valid ndcg@10 %.4f", settings, result["best_valid_ndcg@10"])
    chosen = max(runs, key=lambda run: run["best_valid_ndcg@10"])
    tuning = {
        "grid": list(RECBOLE_GRID),
        "epochs_per_setting": RECBOLE_TUNING_EPOCHS,
        "seed": TUNING_SEED,
        "rule": f"best validation NDCG@10 within the first {RECBOLE_TUNING_EPOCHS} epochs",
        "runs": runs,
        "chosen": chosen["settings"],
    }
    write_json(work / "tune-recbole.json", tuning)
    return tuning


def _curve_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "best_epoch": result["best_epoch"],
        "best_valid_ndcg@10": round(result["best_valid_ndcg@10"], 4),
        "stopped_by": result["stopped_by"],
        "valid_ndcg@10_by_epoch": [round(row["valid_ndcg@10"], 4) for row in result["epochs"]],
        "seconds_per_epoch": seconds_per_epoch(result["epochs"]),
    }


def seconds_per_epoch(epochs: list[dict[str, Any]]) -> float:
    """Mean wall time of an epoch (training and validation), data loading excluded."""
    if len(epochs) < 2:
        return float(epochs[0]["seconds_since_start"]) if epochs else 0.0
    span = epochs[-1]["seconds_since_start"] - epochs[0]["seconds_since_start"]
    return round(span / (len(epochs) - 1), 3)


def seconds_to_quality(epochs: list[dict[str, Any]], bar: float) -> dict[str, Any] | None:
    """Wall and CPU seconds at the end of the first epoch whose validation NDCG@10 reaches bar."""
    for row in epochs:
        if row["valid_ndcg@10"] >= bar:
            return {
                "epoch": row["epoch"],
                "seconds": float(row["seconds_since_start"]),
                "cpu_seconds": row.get("cpu_seconds"),
                "loadavg": row.get("loadavg"),
            }
    return None


# ---------------------------------------------------------------------------------------------
# recflow's side


def _clock(started_at: float) -> dict[str, Any]:
    """Wall seconds since launch, this process's CPU seconds (all threads) and the load."""
    return {
        "seconds_since_start": round(time.time() - started_at, 3),
        "cpu_seconds": round(time.process_time(), 3),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def recflow_child(args: argparse.Namespace) -> int:
    """One recflow training run, in its own process (the ``run-recflow`` step).

    Writes ``recflow.json`` into ``args.out``: per epoch the clock and validation metrics, the
    best epoch and, unless ``--tuning``, the test metrics of the best model under both protocols.
    """
    # imported here so that their import time falls inside the measured process
    from pipelines.core.params import RunConfig, TrainConfig
    from pipelines.model.ranking import ranking_metrics
    from pipelines.model.saved import load_model
    from pipelines.model.training.loop import train

    started_at = float(args.started_at)
    split = json.loads(Path(args.split).read_text())
    prepared = args.out / "prepared"
    write_prepared(split, prepared, tuning=args.tuning)
    data_loaded = _clock(started_at)
    settings = {**json.loads(args.settings), "threads": args.threads, "seed": args.seed}
    cfg = TrainConfig.model_validate(settings)
    epochs: list[dict[str, Any]] = []

    def on_epoch(row: dict[str, Any]) -> None:
        valid = row.get("valid") or {}
        epochs.append(
            {
                "epoch": row["epoch"],
                "loss": row["loss"],
                **_clock(started_at),
                "valid_ndcg@10": valid.get("ndcg@10"),
                "valid_recall@10": valid.get("hr@10"),
                "valid_mrr@10": valid.get("mrr@10"),
            }
        )
        print(json.dumps(epochs[-1]), flush=True)

    run = RunConfig(logical_date="2026-11-22", seed=args.seed)
    result = train(cfg, run, prepared, args.out / "train", on_epoch)
    best = max(epochs, key=lambda row: row["valid_ndcg@10"])
    summary: dict[str, Any] = {
        "seed": args.seed,
        "settings": cfg.model_dump(mode="json"),
        "data_loaded": data_loaded,
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "best_valid_ndcg@10": best["valid_ndcg@10"],
        "stopped_by": "early stopping" if result.stopped_early else f"{cfg.epochs} epochs",
    }
    if not args.tuning:
        # the test split, read once for the best model: both protocols from one pass each
        model = load_model(args.out / "train" / "model.pt")
        users = split["users"]
        histories = [u["train"] + [u["valid"]] for u in users]
        targets = [u["test"] for u in users]
        summary["test"] = {
            name: _named(
                ranking_metrics(
                    model.score, histories, targets, ks=(10,), ties="topk", mask_history=mask
                )
            )
            for name, mask in (("unmasked", False), ("masked", True))
        }
        summary["test_of_train_stage"] = _named(result.test)
    write_json(args.out / "recflow.json", summary)
    return 0


def _named(metrics: dict[str, float]) -> dict[str, float]:
    """recflow's metric names as RecBole's (hr@10 is recall@10 with one target per user)."""
    renamed = {name.replace("hr@", "recall@"): value for name, value in metrics.items()}
    return {name: round(renamed[name], 6) for name in METRICS}


def run_recflow(
    out: Path,
    split: Path,
    threads: int,
    *,
    settings: dict[str, Any],
    seed: int,
    tuning: bool,
) -> dict[str, Any]:
    """One recflow run in a child process launched like RecBole's; returns its summary."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_recbole",
        "--work",
        str(out.parent),
        "--threads",
        str(threads),
        "run-recflow",
        "--out",
        str(out),
        "--split",
        str(split),
        "--settings",
        json.dumps(settings),
        "--seed",
        str(seed),
    ]
    if tuning:
        command.append("--tuning")
    out.mkdir(parents=True, exist_ok=True)
    request = {"command": command[2:], "settings": settings}
    if _finished(out, "recflow.json", request):
        log.info("reusing the finished run in %s", out)
    else:
        _launch(command, out / "log.txt", cwd=PROJECT_ROOT)
        write_json(out / "request.json", request)
    result: dict[str, Any] = json.loads((out / "recflow.json").read_text())
    return result


def _split_path(work: Path) -> Path:
    """RecBole's dumped split (written by every RecBole run; the tuning runs come first)."""
    for candidate in sorted(work.glob("*/**/split.json")):
        return candidate
    raise SystemExit(f"error: no split.json under {work}: run tune-recbole first")


def tune_recflow(work: Path, threads: int) -> dict[str, Any]:
    """Every recflow grid setting to its early stopping, test never read; the best on validation."""
    split = _split_path(work)
    runs = []
    for overrides in RECFLOW_GRID:
        settings = {**RECFLOW_BASE, **overrides}
        folder = work / "tune-recflow" / _settings_name(overrides)
        result = run_recflow(
            folder, split, threads, settings=settings, seed=TUNING_SEED, tuning=True
        )
        runs.append({"settings": overrides, **_curve_summary(result)})
        log.info("recflow %s: best valid ndcg@10 %.4f", overrides, result["best_valid_ndcg@10"])
    chosen = max(runs, key=lambda run: run["best_valid_ndcg@10"])
    tuning = {
        "fixed": RECFLOW_BASE,
        "grid": list(RECFLOW_GRID),
        "seed": TUNING_SEED,
        "rule": "best validation NDCG@10, each setting trained to its early stopping",
        "runs": runs,
        "chosen": chosen["settings"],
    }
    write_json(work / "tune-recflow.json", tuning)
    return tuning


# ---------------------------------------------------------------------------------------------
# RecBole's converged run, and scoring both sides' saved scores under both protocols


def _read_json(path: Path, step: str) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: run the {step} step first")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def restore_recbole(work: Path, threads: int, record: Path) -> dict[str, Any]:
    """RecBole's tuning and converged run from the results file ``record`` of an earlier report.

    A fresh one-epoch run of the chosen setting (which also dumps the split) must reproduce the
    record's first epoch exactly, else the record is not reused.
    """
    recorded = _read_json(record, "report")["recbole"]
    tuning, converged = recorded["tuning"], recorded["converged"]
    check = run_recbole(
        work / "restore-recbole" / "first-epoch",
        threads,
        settings=tuning["chosen"],
        max_epochs=1,
        test=False,
        seed=int(recorded["settings"]["seed"]),
    )
    fresh, old = check["epochs"][0], converged["curve"][0]
    for key in ("loss", "valid_ndcg@10", "valid_recall@10", "valid_mrr@10"):
        if abs(float(fresh[key]) - float(old[key])) > 1e-9:
            raise SystemExit(
                f"error: RecBole's first epoch gives {key} {fresh[key]}, the record {old[key]}: "
                "not the same run, so the record cannot stand in for it; run tune-recbole and "
                "converge-recbole"
            )
    write_json(work / "tune-recbole.json", tuning)
    scored = {
        "recbole": recorded["version"],
        "seed": recorded["settings"]["seed"],
        "epochs": converged["curve"],
        "best_epoch": converged["best_epoch"],
        "best_valid_ndcg@10": converged["best_valid_ndcg@10"],
        "stopped_by": converged["stopped_by"],
        "data_loaded": converged["data_loaded"],
        "own_evaluator": recorded["own_evaluator"],
        "ranked_by_recflow": {"test": recorded["test"], "valid": recorded["valid_of_best_model"]},
        "restored": {
            "from": str(
                record.relative_to(PROJECT_ROOT) if record.is_relative_to(PROJECT_ROOT) else record
            ),
            "first_epoch_reproduced": {key: fresh[key] for key in ("loss", "valid_ndcg@10")},
        },
    }
    (work / "converge-recbole").mkdir(parents=True, exist_ok=True)
    write_json(work / "converge-recbole" / "scored.json", scored)
    return scored


def converge_recbole(work: Path, threads: int) -> dict[str, Any]:
    """RecBole's chosen setting to its own early stopping; test read once for its best model."""
    chosen = _read_json(work / "tune-recbole.json", "tune-recbole")["chosen"]
    folder = work / "converge-recbole"
    result = run_recbole(folder, threads, settings=chosen, test=True)
    return score_recbole(folder, result)


def score_recbole(folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """RecBole's saved best-model scores ranked by recflow's code under both protocols.

    The unmasked numbers must equal those of RecBole's own evaluator: that is the check that
    both sides are measured the same way.
    """
    split = json.loads((folder / "split.json").read_text())
    saved = np.load(folder / "scores.npz")
    by_user = {u["user"]: u for u in split["users"]}
    scored: dict[str, dict[str, dict[str, float]]] = {}
    for part in ("valid", "test"):
        users = [by_user[int(user)] for user in saved[f"{part}_users"]]
        if part == "valid":
            histories = [u["train"] for u in users]
        else:
            histories = [u["train"] + [u["valid"]] for u in users]
        targets = [u[part] for u in users]
        scores = saved[f"{part}_scores"]
        scored[part] = {
            name: ranked_metrics(scores, histories, targets, mask_history=mask)
            for name, mask in (("unmasked", False), ("masked", True))
        }
    own = result["own_evaluator"]
    for part in ("valid", "test"):
        for name in METRICS:
            ours, theirs = scored[part]["unmasked"][name], own[part][name]
            if abs(ours - theirs) > 1e-4:
                raise SystemExit(
                    f"error: recflow's ranking of RecBole's {part} scores gives {name} {ours}, "
                    f"RecBole's evaluator {theirs}: the protocols differ"
                )
    summary = {**result, "ranked_by_recflow": scored}
    write_json(folder / "scored.json", summary)
    return summary


def ranked_metrics(
    scores: np.ndarray,
    histories: Sequence[Sequence[int]],
    targets: Sequence[int],
    *,
    mask_history: bool,
) -> dict[str, float]:
    """Metrics at 10 of a ``[users, n_items + 1]`` score matrix under the shared protocol."""
    import torch

    from pipelines.data.sequences import left_pad
    from pipelines.model.ranking import batch_metric_sums, mask_scores

    matrix = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    history = None
    if mask_history:
        history = torch.from_numpy(left_pad(histories, max(1, max(len(h) for h in histories))))
    masked = mask_scores(matrix, history)
    target = torch.tensor(list(targets), dtype=torch.long)
    sums = batch_metric_sums(masked, target, ks=(10,), ties="topk")
    return _named({name: value / max(len(targets), 1) for name, value in sums.items()})


# ---------------------------------------------------------------------------------------------
# The final, timed runs


def final(work: Path, threads: int) -> dict[str, Any]:
    """recflow's chosen setting on three seeds, then RecBole's until the bar, back to back."""
    converged = _read_json(work / "converge-recbole" / "scored.json", "converge-recbole")
    chosen = _read_json(work / "tune-recflow.json", "tune-recflow")["chosen"]
    recbole_chosen = _read_json(work / "tune-recbole.json", "tune-recbole")["chosen"]
    bar = float(converged["best_valid_ndcg@10"])
    split = _split_path(work)
    for seed in SEEDS:
        run_recflow(
            work / "final" / f"recflow-seed-{seed}",
            split,
            threads,
            settings={**RECFLOW_BASE, **chosen},
            seed=seed,
            tuning=False,
        )
    # the same setting and seed as the converged run: it retraces that run up to the bar
    timed = run_recbole(
        work / "final" / "recbole-to-bar",
        threads,
        settings=recbole_chosen,
        max_epochs=converged["best_epoch"] + 10,
        stop_at_ndcg=bar,
        test=False,
    )
    return timed


# ---------------------------------------------------------------------------------------------
# The results file and its README table

PROTOCOL = {
    "shared": {
        "mask_history": False,
        "ranking": "full ranking over every item of the catalogue; the user's history items stay "
        "in the ranking (RecBole's full-sort evaluation of sequential models passes no history "
        "index); the padding item is never ranked",
        "ties": "metrics at 10 read the target's position in torch.topk(scores, 10), the list "
        "RecBole's evaluator ranks by (topk: [10]); equal scores come out in torch.topk's order "
        "(the same torch 2.13 CPU build on both sides). recflow ranks RecBole's saved scores "
        "with the same code, and its unmasked numbers are checked equal to RecBole's own",
        "split": "RecBole's leave-one-out split from its own preprocessing of ml-100k (timestamp "
        "order, TO; LS valid_and_test): the second-to-last item of each user is validation, "
        "the last one test; recflow trains on exactly the training items RecBole uses",
    },
    "masked": {
        "mask_history": True,
        "ranking": "as the shared protocol, with the user's history items (training items for "
        "validation, training and validation items for test) removed from the ranking; "
        "reported beside it, never compared with an unmasked number",
    },
}

TUNING = (
    "Each side picks its settings on the validation split from a grid of the same size; the test "
    "split is read once per final model (RecBole's tuning runs pass --no-test, recflow's train on "
    "a prepared folder whose test file repeats validation). RecBole picks on its first "
    f"{RECBOLE_TUNING_EPOCHS} epochs (one run to convergence takes about an hour on 2 cores); "
    "recflow's settings each train to their early stopping."
)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
    }


def _run_summary(result: dict[str, Any], bar: float) -> dict[str, Any]:
    """What the results file keeps of one run: its curve, its speed and its time to quality."""
    epochs = result["epochs"]
    return {
        "best_epoch": result["best_epoch"],
        "epochs": len(epochs),
        "stopped_by": result["stopped_by"],
        "best_valid_ndcg@10": round(result["best_valid_ndcg@10"], 4),
        "sec_per_epoch": seconds_per_epoch(epochs),
        "data_loaded": result["data_loaded"],
        "to_quality": seconds_to_quality(epochs, bar),
        "curve": epochs,
    }


def compare(recbole: dict[str, Any], recflow: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: test quality under each protocol, and time to quality.

    Args:
        recbole: ``{"test": {protocol: metrics}, "to_quality": {...} | None}`` of RecBole's run.
        recflow: ``{"seeds": [{"test": ..., "to_quality": ...}, ...]}`` of recflow's runs.
    """
    quality: dict[str, Any] = {}
    for protocol in ("unmasked", "masked"):
        theirs = recbole["test"][protocol]["ndcg@10"]
        ours = _mean_std([seed["test"][protocol]["ndcg@10"] for seed in recflow["seeds"]])
        quality[protocol] = {
            "recbole": round(theirs, 4),
            "recflow": ours,
            "ratio": round(ours["mean"] / theirs, 2) if theirs else None,
        }
    reached = [seed["to_quality"] for seed in recflow["seeds"]]
    speed: dict[str, Any] = {"recbole": recbole["to_quality"], "recflow": reached}
    if recbole["to_quality"] and all(reached):
        for unit in ("seconds", "cpu_seconds"):
            ours_mean = statistics.fmean(r[unit] for r in reached if r is not None)
            speed[f"recflow_mean_{unit}"] = round(ours_mean, 1)
            speed[f"ratio_{unit}"] = round(recbole["to_quality"][unit] / ours_mean, 1)
    ratio = speed.get("ratio_seconds")
    unmasked = quality["unmasked"]
    return {
        "test_ndcg@10": quality,
        "time_to_quality": speed,
        "targets": {
            "ndcg_at_least_recbole": unmasked["recflow"]["mean"] >= unmasked["recbole"],
            "ndcg_1.2x_recbole": unmasked["recflow"]["mean"] >= 1.2 * unmasked["recbole"],
            "time_to_quality_20x": ratio is not None and ratio >= 20,
        },
    }


def _retraces(timed: list[dict[str, Any]], converged: list[dict[str, Any]]) -> bool:
    """Whether the timed run's validation curve equals the converged run's, epoch by epoch."""
    pairs = list(zip(timed, converged, strict=False))
    return bool(pairs) and all(
        abs(float(a["valid_ndcg@10"]) - float(b["valid_ndcg@10"])) <= 1e-9 for a, b in pairs
    )


def report(work: Path, threads: int) -> dict[str, Any]:
    """The results file from the outputs of the steps in ``work``."""
    tune_rb = _read_json(work / "tune-recbole.json", "tune-recbole")
    tune_rf = _read_json(work / "tune-recflow.json", "tune-recflow")
    converged = _read_json(work / "converge-recbole" / "scored.json", "converge-recbole")
    bar = float(converged["best_valid_ndcg@10"])
    seeds = [
        _read_json(work / "final" / f"recflow-seed-{seed}" / "recflow.json", "final")
        for seed in SEEDS
    ]
    timed = _read_json(work / "final" / "recbole-to-bar" / "recbole.json", "final")
    split = json.loads(_split_path(work).read_text())
    converged_run = _run_summary(converged, bar)
    timed_run = _run_summary(timed, bar)
    recbole = {
        "version": converged["recbole"],
        "settings": {
            "fixed": "SASRec, hidden 64, inner 256, 2 layers, 2 heads, max length 50, hidden and "
            "attention dropout 0.2, CE loss over all items, Adam, stopping_step 10",
            **tune_rb["chosen"],
            "seed": converged["seed"],
        },
        "tuning": tune_rb,
        "converged": converged_run,
        "test": converged["ranked_by_recflow"]["test"],
        "valid_of_best_model": converged["ranked_by_recflow"]["valid"],
        "own_evaluator": converged["own_evaluator"],
        # back to back with recflow's final runs: the time to quality the ratio uses
        "timed_to_bar": timed_run,
        # the timed run is the converged run's setting and seed: its curve must be the same
        "timed_run_retraces_converged": _retraces(timed["epochs"], converged["epochs"]),
        **({"restored": converged["restored"]} if "restored" in converged else {}),
        "to_quality": timed_run["to_quality"] or converged_run["to_quality"],
    }
    recflow_seeds = []
    for result in seeds:
        recflow_seeds.append(
            {"seed": result["seed"], "test": result["test"], **_run_summary(result, bar)}
        )
    recflow = {
        "settings": seeds[0]["settings"],
        "tuning": tune_rf,
        "seeds": recflow_seeds,
        "test_mean_std": {
            protocol: {
                name: _mean_std([seed["test"][protocol][name] for seed in recflow_seeds])
                for name in METRICS
            }
            for protocol in ("unmasked", "masked")
        },
    }
    loads = [r["to_quality"]["loadavg"] for r in recflow_seeds if r["to_quality"]]
    trials = work / "development_trials.json"
    return {
        "command": f"python -m benchmarks.bench_recbole --threads {threads} all",
        "machine": machine_info(),
        "threads": threads,
        "data": {
            "set": "MovieLens-100k as shipped in the recbole wheel",
            "users": len(split["users"]),
            "items": split["n_items"],
        },
        "protocol": PROTOCOL,
        "tuning": TUNING,
        "conditions": (
            "One 2-core machine shared with other work, so wall times are noisy: both sides ran "
            f"as separate processes with {threads} torch threads, launched the same way, their "
            "clocks starting at launch (imports and data loading count). recflow's three seeds "
            "and RecBole's timed run to the bar ran back to back; every wall time carries the "
            "process CPU seconds and the 1/5/15-minute load average at that moment. "
            + (
                "RecBole's tuning and converged runs are those of an earlier run of this benchmark "
                f"({converged['restored']['from']} of that time, step restore-recbole): a fresh "
                "first epoch reproduced the record exactly, and the timed run retraced the "
                "converged curve (timed_run_retraces_converged); the converged run's wall times "
                "are those of that earlier run, on the same kind of machine."
                if "restored" in converged
                else "RecBole's converged run ran alone in the background while other work "
                "shared the cores; its time to quality is kept beside the timed run's."
            )
        ),
        "quality_bar_valid_ndcg@10": round(bar, 4),
        "recbole": recbole,
        "recflow": recflow,
        **compare(recbole, recflow),
        "loadavg_at_recflow_quality": loads,
        # the one-at-a-time trials of training options that led to recflow's grid (validation
        # only, never the test split), if the work folder keeps them
        "development_trials": json.loads(trials.read_text()) if trials.is_file() else None,
    }


def _curve_so_far(log_file: Path) -> list[dict[str, Any]]:
    """The per-epoch rows a run has printed to its log so far (one JSON object a line)."""
    if not log_file.is_file():
        return []
    rows = []
    for line in log_file.read_text().splitlines():
        if line.startswith('{"epoch"'):
            rows.append(json.loads(line))
    return rows


def _partial_run(folder: Path, output: str) -> dict[str, Any]:
    """A run's state: finished (its summary) or how far it got (its curve so far)."""
    if (folder / output).is_file():
        return {"finished": True, **_curve_summary(json.loads((folder / output).read_text()))}
    curve = _curve_so_far(folder / "log.txt")
    best = max(curve, key=lambda row: row["valid_ndcg@10"]) if curve else None
    return {
        "finished": False,
        "epochs_so_far": len(curve),
        "best_epoch_so_far": best["epoch"] if best else None,
        "best_valid_ndcg@10_so_far": round(best["valid_ndcg@10"], 4) if best else None,
        "valid_ndcg@10_by_epoch": [round(row["valid_ndcg@10"], 4) for row in curve],
        "cpu_seconds_per_epoch": round(curve[-1]["cpu_seconds"] / len(curve), 1) if curve else None,
    }


def progress(work: Path, threads: int) -> dict[str, Any]:
    """What the steps in ``work`` have measured so far, before ``report`` can compare.

    Validation numbers only: no test split is read by the tuning runs, and no comparison is
    drawn until every step has run.
    """
    recbole_runs = {
        _settings_name(settings): _partial_run(
            work / "tune-recbole" / _settings_name(settings), "recbole.json"
        )
        for settings in RECBOLE_GRID
    }
    recflow_runs = {
        _settings_name(overrides): _partial_run(
            work / "tune-recflow" / _settings_name(overrides), "recflow.json"
        )
        for overrides in RECFLOW_GRID
    }
    converge = _partial_run(work / "converge-recbole", "recbole.json")
    scored = work / "converge-recbole" / "scored.json"
    if scored.is_file():
        # the final model of RecBole's side: its test split read once, under both protocols
        result = json.loads(scored.read_text())
        converge["test"] = result["ranked_by_recflow"]["test"]
        converge["own_evaluator_test"] = result["own_evaluator"]["test"]
    seeds = {}
    for seed in SEEDS:
        folder = work / "final" / f"recflow-seed-{seed}"
        state = _partial_run(folder, "recflow.json")
        if state["finished"]:
            # a final model: its test split read once, under both protocols
            state["test"] = json.loads((folder / "recflow.json").read_text())["test"]
        seeds[str(seed)] = state
    steps = {
        "tune-recbole": (work / "tune-recbole.json").is_file(),
        "converge-recbole": (work / "converge-recbole" / "scored.json").is_file(),
        "tune-recflow": (work / "tune-recflow.json").is_file(),
        "final": all(
            (work / "final" / f"recflow-seed-{seed}" / "recflow.json").is_file() for seed in SEEDS
        )
        and (work / "final" / "recbole-to-bar" / "recbole.json").is_file(),
    }
    return {
        "command": f"python -m benchmarks.bench_recbole --threads {threads} progress",
        "partial": "no comparison: written before every step has run; test numbers only for a "
        "side's final model (RecBole's converged run), never for a tuning run",
        "steps_finished": steps,
        "machine": machine_info(),
        "threads": threads,
        "protocol": PROTOCOL,
        "tuning": TUNING,
        "recbole": {
            "grid": list(RECBOLE_GRID),
            "epochs_per_setting": RECBOLE_TUNING_EPOCHS,
            "tuning_runs": recbole_runs,
            "converge": converge,
        },
        "recflow": {
            "fixed": RECFLOW_BASE,
            "grid": list(RECFLOW_GRID),
            "tuning_runs": recflow_runs,
            "final_seeds": seeds,
        },
    }


def progress_table(result: dict[str, Any]) -> str:
    """The README's table of a ``progress`` file: every run's validation NDCG@10 so far."""
    lines = [
        "| side | run | settings | finished | epochs | best valid NDCG@10 (epoch) "
        "| CPU s / epoch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(side: str, run: str, settings: str, state: dict[str, Any]) -> str:
        if state["finished"]:
            epochs = len(state["valid_ndcg@10_by_epoch"])
            best = f"{state['best_valid_ndcg@10']:.4f} ({state['best_epoch']})"
            cpu = "–"
        else:
            epochs = state["epochs_so_far"]
            best = (
                f"{state['best_valid_ndcg@10_so_far']:.4f} ({state['best_epoch_so_far']})"
                if state["epochs_so_far"]
                else "–"
            )
            cpu = f"{state['cpu_seconds_per_epoch']:.0f}" if state["epochs_so_far"] else "–"
        done = "yes" if state["finished"] else "no (running or stopped)"
        return f"| {side} | {run} | {settings} | {done} | {epochs} | {best} | {cpu} |"

    rb, rf = result["recbole"], result["recflow"]
    tuning = f"tuning, first {rb['epochs_per_setting']} epochs"
    for name, state in rb["tuning_runs"].items():
        lines.append(row("RecBole", tuning, name, state))
    lines.append(row("RecBole", "to its early stopping", "its tuning choice", rb["converge"]))
    for name, state in rf["tuning_runs"].items():
        lines.append(row("recflow", "tuning, to its early stopping", name, state))
    for seed, state in rf.get("final_seeds", {}).items():
        if state["finished"] or state["epochs_so_far"]:
            lines.append(row("recflow", f"final, seed {seed}", "its tuning choice", state))
    return "\n".join(lines)


def readme_table(result: dict[str, Any]) -> str:
    """The README's comparison table, both protocols labelled, from the results file."""
    rb, rf = result["recbole"], result["recflow"]
    lines = [
        "| | protocol | test NDCG@10 | test Recall@10 | test MRR@10 | best valid NDCG@10 "
        "| s / epoch | s to quality | epochs (best) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(values: dict[str, float]) -> str:
        return f"{values['mean']:.4f} ± {values['std']:.4f}"

    for protocol, label in (("unmasked", "shared (history kept)"), ("masked", "history masked")):
        theirs = rb["test"][protocol]
        speed = rb["to_quality"]["seconds"] if rb["to_quality"] else None
        show_speed = protocol == "unmasked"
        lines.append(
            f"| RecBole SASRec | {label} | {theirs['ndcg@10']:.4f} | {theirs['recall@10']:.4f} "
            f"| {theirs['mrr@10']:.4f} | "
            + (f"{rb['converged']['best_valid_ndcg@10']:.4f} " if show_speed else "– ")
            # seconds per epoch of the run timed back to back with recflow's (the converged run
            # shared the machine with other work)
            + (
                f"| {rb.get('timed_to_bar', rb['converged'])['sec_per_epoch']:.1f} "
                if show_speed
                else "| – "
            )
            + (f"| {speed:,.0f} " if show_speed and speed else "| – ")
            + (
                f"| {rb['converged']['epochs']} ({rb['converged']['best_epoch']}) |"
                if show_speed
                else "| – |"
            )
        )
        ours = rf["test_mean_std"][protocol]
        seeds = rf["seeds"]
        reached = [s["to_quality"]["seconds"] for s in seeds if s["to_quality"]]
        valid = _mean_std([s["best_valid_ndcg@10"] for s in seeds])
        lines.append(
            f"| recflow SASRec, 3 seeds | {label} | {fmt(ours['ndcg@10'])} "
            f"| {fmt(ours['recall@10'])} | {fmt(ours['mrr@10'])} | "
            + (f"{valid['mean']:.4f} " if show_speed else "– ")
            + (
                f"| {statistics.fmean(s['sec_per_epoch'] for s in seeds):.1f} "
                if show_speed
                else "| – "
            )
            + (
                f"| {statistics.fmean(reached):.1f} "
                if show_speed and len(reached) == len(seeds)
                else "| – "
            )
            + (
                "| " + ", ".join(f"{s['epochs']} ({s['best_epoch']})" for s in seeds) + " |"
                if show_speed
                else "| – |"
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=PROJECT_ROOT / "build" / "bench-recbole",
        help="folder for the step outputs, kept between steps (default: build/bench-recbole)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--record",
        type=Path,
        default=RESULT_FILE,
        help="restore-recbole: the results file whose RecBole runs are reused",
    )
    steps = parser.add_subparsers(dest="step", required=True)
    for name, doc in STEPS.items():
        steps.add_parser(name, help=doc)
    child = steps.add_parser("run-recflow", help="internal: one recflow run in its own process")
    child.add_argument("--out", type=Path, required=True)
    child.add_argument("--split", type=Path, required=True)
    child.add_argument("--settings", required=True, help="TrainConfig fields as JSON")
    child.add_argument("--seed", type=int, required=True)
    child.add_argument("--tuning", action="store_true", help="never read the test split")
    child.add_argument("--started-at", type=float, required=True)
    args = parser.parse_args(argv)
    if args.step == "run-recflow":
        return recflow_child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    skipped = ("all", "progress", "restore-recbole")
    todo = [s for s in STEPS if s not in skipped] if args.step == "all" else [args.step]
    for step in todo:
        log.info("step %s", step)
        if step == "tune-recbole":
            tune_recbole(args.work, args.threads)
        elif step == "converge-recbole":
            converge_recbole(args.work, args.threads)
        elif step == "restore-recbole":
            restore_recbole(args.work, args.threads, args.record)
        elif step == "tune-recflow":
            tune_recflow(args.work, args.threads)
        elif step == "final":
            final(args.work, args.threads)
        elif step == "report":
            result = report(args.work, args.threads)
            write_json(RESULT_FILE, result)
            PROGRESS_FILE.unlink(missing_ok=True)
            print(readme_table(result))
        elif step == "progress":
            partial = progress(args.work, args.threads)
            write_json(PROGRESS_FILE, partial)
            print(progress_table(partial))
    return 0


if __name__ == "__main__":
    sys.exit(main())
