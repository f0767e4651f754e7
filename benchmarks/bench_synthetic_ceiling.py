"""SASRec, the baselines and the oracle ceiling on the synthetic ``default`` preset.

    python -m benchmarks.bench_synthetic_ceiling [--params params.yaml] [--threads 2] \\
        [--train-json '{"repeat_term": true}' --out benchmarks/results/NAME.json]

Runs the chain's own stage functions on the preset of ``params.yaml`` in a temporary folder
(generate, ingest, validate, prepare, train in this process with the ``train`` params), then
ranks the same test targets by the generator's own probabilities
(``pipelines.data.synthetic.oracle``): the best ranking any model could produce for them. All
four rows use the ranking settings of the ``train`` params (``mask_history``, ``ties``), and the
gap between SASRec and the transition baseline gets a paired bootstrap interval over the test
users (the gate's ``bootstrap_difference``). ``--train-json`` changes ``train`` keys for a variant,
checked as strictly as the file. Writes ``benchmarks/results/synthetic_<preset>_ceiling.json``
or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.machine import machine_info
from pipelines.core.io import write_json
from pipelines.core.params import load_params, with_json_overrides
from pipelines.core.project import PROJECT_ROOT
from pipelines.data.ingest import ingest
from pipelines.data.preparation import prepare
from pipelines.data.prepared import load_prepared
from pipelines.data.sequences import left_pad
from pipelines.data.synthetic.generator import generate
from pipelines.data.synthetic.oracle import OracleScores, oracle_scores
from pipelines.data.validation.batch import validate_batch
from pipelines.gate.golden import per_user_quality
from pipelines.gate.rules import bootstrap_difference
from pipelines.model.baselines import ItemTransition
from pipelines.model.ranking import (
    KS,
    ScoreFn,
    Ties,
    batch_metric_sums,
    mask_scores,
    metric_names,
)
from pipelines.model.saved import load_model
from pipelines.model.training.loop import train
from pipelines.model.training.metrics import ScoringProtocol

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
log = logging.getLogger("recflow.bench_synthetic_ceiling")


def oracle_metrics(
    oracle: OracleScores, *, mask_history: bool, ties: Any, batch_size: int = 1024
) -> dict[str, float]:
    """Mean metrics of the oracle's scores, ranked like the trained model's."""
    totals = dict.fromkeys(metric_names(KS), 0.0)
    for lo in range(0, len(oracle.targets), batch_size):
        scores = torch.from_numpy(oracle.scores[lo : lo + batch_size]).float()
        histories = oracle.histories[lo : lo + batch_size]
        history = None
        if mask_history:
            history = torch.from_numpy(left_pad(histories, max(1, max(map(len, histories)))))
        targets = torch.from_numpy(oracle.targets[lo : lo + batch_size])
        sums = batch_metric_sums(mask_scores(scores, history), targets, KS, ties)
        for name, value in sums.items():
            totals[name] += value
    return {name: round(value / len(oracle.targets), 6) for name, value in totals.items()}


def per_user_ndcg10(
    score_fn: ScoreFn,
    histories: list[np.ndarray],
    targets: np.ndarray,
    protocol: ScoringProtocol,
    batch_size: int = 1024,
) -> np.ndarray:
    """NDCG@10 of each user, ranked by the gate's per-user rule under ``protocol``."""
    values = []
    for lo in range(0, len(histories), batch_size):
        chunk = histories[lo : lo + batch_size]
        history = torch.from_numpy(left_pad(chunk, max(1, max(map(len, chunk)))))
        with torch.no_grad():
            scores = score_fn(history).float().numpy()
        quality = per_user_quality(
            scores, targets[lo : lo + batch_size], history=history.numpy(), protocol=protocol
        )
        values.append(quality["ndcg@10"])
    return np.concatenate(values)


def sasrec_minus_transition(
    model_path: Path, prepared: Path, *, mask_history: bool, ties: Ties, seed: int
) -> dict[str, Any]:
    """Paired bootstrap 95 % interval of SASRec's NDCG@10 minus the transition baseline's."""
    model = load_model(model_path).eval()
    data = load_prepared(prepared, event_types=model.spec.event_types)
    histories = data.model_inputs("test", model.spec.event_types)
    protocol = ScoringProtocol(mask_history=mask_history, ties=ties)
    ours = per_user_ndcg10(model.score, histories, data.test_target, protocol)
    transition = ItemTransition(data.train, data.n_items)
    theirs = per_user_ndcg10(transition, data.test_history, data.test_target, protocol)
    interval = bootstrap_difference(ours, theirs, samples=2000, confidence=0.95, seed=seed)
    # where the gap comes from: targets the user had seen before (staples, carts of earlier
    # views) and new ones
    seen = np.array(
        [
            int(t) in set(h.tolist())
            for h, t in zip(data.test_history, data.test_target, strict=True)
        ]
    )
    by_target = {
        name: {
            "share": round(float(part.mean()), 4),
            "sasrec": round(float(ours[part].mean()), 4) if part.any() else None,
            "item_transition": round(float(theirs[part].mean()), 4) if part.any() else None,
        }
        for name, part in (("seen_before", seen), ("new", ~seen))
    }
    return {
        "mean": round(interval.mean, 4),
        "low": round(interval.low, 4),
        "high": round(interval.high, 4),
        "users": len(ours),
        "ndcg@10_by_target": by_target,
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-json", help="JSON object of train keys to change, for a variant")
    parser.add_argument("--out", type=Path, help="results file (default: the preset's)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.train_json:
        params = with_json_overrides(
            params, "train", args.train_json, "--train-json", str(args.params)
        )
    cfg = params.train.model_copy(update={"threads": args.threads, "progress": False})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recflow-ceiling-") as tmp:
        root = Path(tmp)
        generate(params.generate, params.run, root / "source")
        ingest(params.ingest, params.run, root / "source", root / "raw")
        outcome = validate_batch(
            params.validate_,
            params.run,
            root / "raw",
            window_days=params.ingest.window_days,
            out=root / "validated",
            reports=None,
        )
        outcome.raise_for_rejection()
        summary = prepare(params.prepare, params.run, root / "validated", root / "prepared")
        result = train(cfg, params.run, root / "prepared", root / "model")
        gap = sasrec_minus_transition(
            root / "model" / "model.pt",
            root / "prepared",
            mask_history=cfg.mask_history,
            ties=cfg.ties,
            seed=params.run.seed,
        )
        oracle = oracle_scores(
            params.generate, params.prepare, params.run, root / "validated", root / "prepared"
        )
    rows = {
        "sasrec": result.test,
        **result.baselines,
        "oracle": oracle_metrics(oracle, mask_history=cfg.mask_history, ties=cfg.ties),
    }
    payload = {
        "command": "python -m benchmarks.bench_synthetic_ceiling",
        "threads": args.threads,
        "train_overrides": json.loads(args.train_json) if args.train_json else {},
        "machine": machine_info(),
        "preset": params.generate.preset,
        "days": params.generate.days,
        "seed": params.run.seed,
        "users": summary.users,
        "items": summary.items,
        "protocol": {"mask_history": cfg.mask_history, "ties": cfg.ties},
        "train": cfg.model_dump(mode="json"),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "oracle_funnel_targets": oracle.funnel_targets,
        "test": rows,
        # paired bootstrap over the test users, 2,000 resamples, percentile interval
        "sasrec_minus_transition_ndcg@10_ci95": gap,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out or RESULTS / f"synthetic_{params.generate.preset}_ceiling.json", payload)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
