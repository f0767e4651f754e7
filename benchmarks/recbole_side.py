"""RecBole's SASRec on MovieLens-100k, timed epoch by epoch (runs in the RecBole environment).

    .venv-recbole/bin/python benchmarks/recbole_side.py --work DIR --started-at T \
        [--batch-size 2048] [--lr 0.001] [--max-epochs N] [--stop-at-ndcg X] [--no-test]

Writes into ``DIR``:

- ``split.json``: RecBole's own leave-one-out split with its internal item ids (1..n, 0 is
  padding), after its preprocessing and its ordering of equal timestamps: per user the
  training sequence, the validation target and the test target. recflow trains on exactly this.
- ``recbole.json``: per epoch the wall time since ``--started-at`` (the moment the benchmark
  launched this process, so interpreter start, imports and data loading count), the process's
  CPU seconds, the load average and RecBole's own validation NDCG@10, Recall@10 and MRR@10;
  then the best epoch and, unless ``--no-test``, RecBole's own test metrics of the best model.
- ``scores.npz`` (unless ``--no-test``): the best model's scores of every item for every
  validation and test user (``valid_users``, ``valid_scores``, ``test_users``,
  ``test_scores``), so that the benchmark ranks them with recflow's ranking code under both
  protocols (history kept, as RecBole does for sequential models, and history masked) and
  checks that the unmasked numbers equal RecBole's own.

Training stops at RecBole's early stopping (``stopping_step`` epochs without a gain), at
``--max-epochs`` (a tuning run's first epochs), at ``--stop-at-ndcg`` (a timed run that only
needs to reach a known quality), or at the time budget, whichever comes first.

This file imports RecBole and so runs only under its own interpreter (numpy<2); it never
imports recflow.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# torch 2.6+ loads checkpoints weights-only by default; RecBole's hold its config object
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

# importing recbole turns autograd anomaly detection on, which slows every step several times
torch.autograd.set_detect_anomaly(False)

METRICS = ("ndcg@10", "recall@10", "mrr@10")


def recbole_config(work: Path, threads: int, seed: int, batch_size: int, lr: float) -> Config:
    """SASRec at the compared size, leave-one-out full ranking, on the bundled ml-100k."""
    data_path = Path(recbole.__file__).parent / "dataset_example"
    settings: dict[str, Any] = {
        "data_path": str(data_path),
        "checkpoint_dir": str(work / "saved"),
        "seed": seed,
        "reproducibility": True,
        "device": "cpu",
        "use_gpu": False,
        "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["Recall", "NDCG", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "train_batch_size": batch_size,
        "learning_rate": lr,
        "MAX_ITEM_LIST_LENGTH": 50,
        "hidden_size": 64,
        "inner_size": 256,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dropout_prob": 0.2,
        "attn_dropout_prob": 0.2,
        "stopping_step": 10,
        "epochs": 1000,
    }
    torch.set_num_threads(threads)
    return Config(model="SASRec", dataset="ml-100k", config_dict=settings)


def dump_split(dataset: Any, test_data: Any, out: Path) -> None:
    """Write RecBole's leave-one-out split of every user, checked against its test loader."""
    uid, iid, time_field = dataset.uid_field, dataset.iid_field, dataset.time_field
    # the same sort RecBole's sequential dataset applies before it splits and augments
    ordered = copy.deepcopy(dataset)
    ordered.sort(by=[uid, time_field], ascending=True)
    users = ordered.inter_feat[uid].numpy()
    items = ordered.inter_feat[iid].numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    split = {"n_items": int(dataset.item_num - 1), "users": []}
    for start, end in zip(starts, ends, strict=True):
        sequence = items[start:end].tolist()
        split["users"].append(
            {
                "user": int(users[start]),
                "train": sequence[:-2],
                "valid": sequence[-2],
                "test": sequence[-1],
            }
        )
    # the test loader's targets must be the dumped test items: the same split, not a copy of it
    loader = test_data._dataset.inter_feat
    expected = dict(zip(loader[uid].numpy().tolist(), loader[iid].numpy().tolist(), strict=True))
    mismatched = sum(expected.get(u["user"]) != u["test"] for u in split["users"])
    if mismatched:
        raise SystemExit(f"dumped split differs from RecBole's test loader for {mismatched} users")
    (out / "split.json").write_text(json.dumps(split))


@torch.no_grad()
def full_scores(model: SASRec, loader: Any, uid_field: str) -> tuple[np.ndarray, np.ndarray]:
    """Every item's score for every user of an evaluation loader, as RecBole computes them."""
    model.eval()
    users, scores = [], []
    for interaction, _history, _positive_u, _positive_i in loader:
        users.append(interaction[uid_field].numpy())
        scores.append(model.full_sort_predict(interaction).float().numpy())
    return np.concatenate(users), np.concatenate(scores)


def clock(started_at: float) -> dict[str, Any]:
    """Wall seconds since launch, this process's CPU seconds (all threads) and the load."""
    return {
        "seconds_since_start": round(time.time() - started_at, 3),
        "cpu_seconds": round(time.process_time(), 3),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def train(config: Config, args: argparse.Namespace) -> None:
    """Train epoch by epoch until a stop rule fires; evaluate the best model unless no test."""
    out: Path = args.work
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    dump_split(dataset, test_data, out)
    data_loaded = clock(args.started_at)
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    epochs: list[dict[str, Any]] = []
    best: dict[str, Any] = {"valid_ndcg@10": -1.0, "epoch": 0, "state": None}
    bad = 0
    budget_s = args.budget_min * 60.0
    stop_reason = f"max epochs ({args.max_epochs})"
    for epoch in range(min(config["epochs"], args.max_epochs)):
        epoch_start = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        train_seconds = time.perf_counter() - epoch_start
        _, result = trainer._valid_epoch(valid_data, show_progress=False)
        ndcg = float(result["ndcg@10"])
        row = {
            "epoch": epoch + 1,
            "loss": float(loss if not isinstance(loss, tuple) else sum(loss)),
            "train_seconds": round(train_seconds, 3),
            **clock(args.started_at),
            "valid_ndcg@10": ndcg,
            "valid_recall@10": float(result["recall@10"]),
            "valid_mrr@10": float(result["mrr@10"]),
        }
        epochs.append(row)
        print(json.dumps(row), flush=True)
        if ndcg > best["valid_ndcg@10"]:
            best = {"valid_ndcg@10": ndcg, "epoch": epoch + 1}
            best["state"] = copy.deepcopy(model.state_dict())
            bad = 0
        else:
            bad += 1
        if bad >= config["stopping_step"]:
            stop_reason = f"early stopping ({config['stopping_step']} epochs without a gain)"
            break
        if args.stop_at_ndcg is not None and ndcg >= args.stop_at_ndcg:
            stop_reason = f"reached validation NDCG@10 {args.stop_at_ndcg}"
            break
        if time.time() - args.started_at >= budget_s:
            stop_reason = "time budget"
            break
    result: dict[str, Any] = {
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "anomaly_detection": torch.is_anomaly_enabled(),
        "threads": torch.get_num_threads(),
        "seed": config["seed"],
        "train_batch_size": config["train_batch_size"],
        "learning_rate": config["learning_rate"],
        "budget_seconds": budget_s,
        "stopped_by": stop_reason,
        "data_loaded": data_loaded,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "best_valid_ndcg@10": best["valid_ndcg@10"],
    }
    if not args.no_test:
        model.load_state_dict(best["state"])
        own_test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        own_valid = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
        result["own_evaluator"] = {
            "valid": {name: float(own_valid[name]) for name in METRICS},
            "test": {name: float(own_test[name]) for name in METRICS},
        }
        valid_users, valid_scores = full_scores(model, valid_data, dataset.uid_field)
        test_users, test_scores = full_scores(model, test_data, dataset.uid_field)
        np.savez(
            out / "scores.npz",
            valid_users=valid_users,
            valid_scores=valid_scores,
            test_users=test_users,
            test_scores=test_scores,
        )
    (out / "recbole.json").write_text(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument(
        "--started-at",
        type=float,
        default=None,
        help="time.time() when the benchmark launched this process (default: now)",
    )
    parser.add_argument("--budget-min", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--stop-at-ndcg", type=float, default=None)
    parser.add_argument("--no-test", action="store_true", help="a tuning run: never read test")
    args = parser.parse_args(argv)
    if args.started_at is None:
        args.started_at = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.WARNING)
    config = recbole_config(args.work, args.threads, args.seed, args.batch_size, args.lr)
    train(config, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
