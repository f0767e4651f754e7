"""RecBole's SASRec on MovieLens-100k, timed epoch by epoch (runs in the RecBole environment).

    .venv-recbole/bin/python benchmarks/recbole_side.py --work DIR --budget-min 20 --threads 2

Writes into ``DIR``:

- ``split.json``: RecBole's own leave-one-out split with its internal item ids (1..n, 0 is
  padding), after its preprocessing and its ordering of equal timestamps: per user the
  training sequence, the validation target and the test target. recflow trains on exactly this.
- ``recbole.json``: per epoch the wall time since training started and validation NDCG@10,
  then the best validation result and the test metrics of the best epoch.

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


def recbole_config(work: Path, threads: int, seed: int) -> Config:
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
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "loss_type": "CE",
        "train_neg_sample_args": None,
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


def train(config: Config, budget_s: float, out: Path) -> None:
    """Train epoch by epoch until early stopping or the time budget; evaluate the best on test."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    dump_split(dataset, test_data, out)
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    epochs: list[dict[str, Any]] = []
    best: dict[str, Any] = {"valid_ndcg@10": -1.0, "epoch": 0, "state": None}
    bad = 0
    started = time.perf_counter()
    stop_reason = "early stopping"
    for epoch in range(config["epochs"]):
        epoch_start = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        train_seconds = time.perf_counter() - epoch_start
        _, result = trainer._valid_epoch(valid_data, show_progress=False)
        ndcg = float(result["ndcg@10"])
        row = {
            "epoch": epoch + 1,
            "loss": float(loss if not isinstance(loss, tuple) else sum(loss)),
            "train_seconds": round(train_seconds, 3),
            "seconds_since_start": round(time.perf_counter() - started, 3),
            "valid_ndcg@10": ndcg,
            "valid_recall@10": float(result["recall@10"]),
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
            break
        if time.perf_counter() - started >= budget_s:
            stop_reason = "time budget"
            break
    model.load_state_dict(best["state"])
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    result = {
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "anomaly_detection": torch.is_anomaly_enabled(),
        "threads": torch.get_num_threads(),
        "budget_seconds": budget_s,
        "stopped_by": stop_reason,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "best_valid_ndcg@10": best["valid_ndcg@10"],
        "test_ndcg@10": float(test["ndcg@10"]),
        "test_recall@10": float(test["recall@10"]),
        "train_batch_size": config["train_batch_size"],
        "learning_rate": config["learning_rate"],
    }
    (out / "recbole.json").write_text(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--budget-min", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.WARNING)
    config = recbole_config(args.work, args.threads, args.seed)
    train(config, args.budget_min * 60.0, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
