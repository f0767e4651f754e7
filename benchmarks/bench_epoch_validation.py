"""Per-epoch validation beside the epoch it judges, on the ``large`` preset: a seeded sample of
validation users (``train.valid_users``) against every one.

``python -m benchmarks.bench_epoch_validation`` generates the preset and prepares it in a
temporary folder (the validate stage is left out: it checks the data, the work measured here
starts after it), then trains one epoch with ``params.yaml``'s train settings and
``loss: sampled_softmax`` (what a catalog of 50,000 items trains with; the full softmax over it
is several times slower), validating on the sample. The same trained weights then score every
validation user through the same function, so both sides run in one run, on the same model,
split, metric definition and masking; only the users differ. Recorded: the epoch's training
seconds, each validation's seconds and share of the epoch, NDCG@10 with its 95 % confidence
half-width for each, and the final test scoring (every test user, the model and two baselines)
as it is today.

The final scoring's ways are also compared in the same run, on the same trained weights and test
users: the model's target ranks counted in place (``masked_target_ranks``) against the reference
way (every item's scores masked in a copy, the items ahead counted as booleans), and the
baselines' sparse ranks (``target_ranks`` of a ``SparseRanker``) against the same reference on
their dense scores. Each pair must give the same sums to the last bit. Writes
``benchmarks/results/epoch_validation.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.machine import machine_info
from pipelines.core.params import GenerateConfig, PrepareConfig, RunConfig, load_params
from pipelines.core.project import PROJECT_ROOT
from pipelines.data.preparation import prepare
from pipelines.data.prepared import load_prepared
from pipelines.data.sequences import left_pad
from pipelines.data.synthetic.generator import generate
from pipelines.model.baselines import ItemTransition, MostPopular
from pipelines.model.ranking import (
    MetricSums,
    mask_scores,
    metric_names,
    per_user_metrics,
    ranking_sums,
)
from pipelines.model.saved import load_model
from pipelines.model.training.loop import EpochTiming, evaluate_sample, train

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
RUN = RunConfig(logical_date=dt.date(2026, 11, 22), seed=42)


def reference_sums(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    batch_size: int,
    mask_history: bool,
) -> MetricSums:
    """The metric sums of the reference way: every item scored, masked in a copy, and the items
    ahead of each target counted as booleans (ties by item index)."""
    totals = dict.fromkeys(metric_names(), 0.0)
    squares = dict.fromkeys(metric_names(), 0.0)
    for start in range(0, len(histories), batch_size):
        chunk = histories[start : start + batch_size]
        history = torch.from_numpy(left_pad(chunk, max(1, max(len(h) for h in chunk))))
        batch = torch.from_numpy(targets[start : start + batch_size]).long()
        scores = mask_scores(score_fn(history).float(), history if mask_history else None)
        target_scores = scores.gather(1, batch.unsqueeze(1))
        items = torch.arange(scores.shape[1]).unsqueeze(0)
        ahead = (scores > target_scores) | (
            (scores == target_scores) & (items < batch.unsqueeze(1))
        )
        ranks = ahead.sum(1).double().masked_fill(torch.isneginf(target_scores[:, 0]), np.inf)
        for name, values in per_user_metrics(ranks).items():
            totals[name] += float(values.sum())
            squares[name] += float((values * values).sum())
    return MetricSums(totals, squares, len(histories))


def compare_scoring(model: Any, data: Any, cfg: Any) -> dict[str, Any]:
    """The final scoring's ways, timed side by side on every test user (see the module doc)."""
    histories = data.model_inputs("test", model.spec.event_types)
    targets = data.test_target
    kwargs = {"batch_size": cfg.eval_batch_size, "mask_history": cfg.mask_history}
    scorers: dict[str, Any] = {
        "sasrec": model.score,
        "most_popular": MostPopular(data.train, data.n_items),
        "item_transition": ItemTransition(data.train, data.n_items),
    }
    compared: dict[str, Any] = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        fast = ranking_sums(scorer, histories, targets, ties="index", **kwargs)
        fast_s = time.perf_counter() - started
        started = time.perf_counter()
        # a lambda is no SparseRanker: the baselines score every item here
        reference = reference_sums(lambda h, s=scorer: s(h), histories, targets, **kwargs)
        reference_s = time.perf_counter() - started
        compared[name] = {
            "way": "in place" if name == "sasrec" else "sparse",
            "seconds": round(fast_s, 2),
            "reference_seconds": round(reference_s, 2),
            "speedup": round(reference_s / max(fast_s, 1e-9), 2),
            "same_sums": fast == reference,
        }
        print(f"test scoring, {name}: {compared[name]}", file=sys.stderr)
    return compared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="large", choices=("tiny", "default", "medium", "large", "huge")
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "epoch_validation.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(PROJECT_ROOT / "params.yaml")
    cfg = params.train.model_copy(
        update={"epochs": 1, "loss": "sampled_softmax", "progress": False, "threads": args.threads}
    )
    with tempfile.TemporaryDirectory(prefix="recflow-epoch-validation-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        generate(GenerateConfig(preset=args.preset), RUN, root / "source")
        prepare(PrepareConfig(), RUN, root / "source", root / "prepared")
        data_s = time.perf_counter() - started
        print(f"{args.preset}: generated and prepared in {data_s:.0f} s", file=sys.stderr)

        timings: list[EpochTiming] = []
        started = time.perf_counter()
        result = train(cfg, RUN, root / "prepared", root / "model", on_timing=timings.append)
        train_call_s = time.perf_counter() - started
        (epoch,) = timings
        assert epoch.valid_s is not None
        final_s = train_call_s - epoch.train_s - epoch.valid_s
        history = json.loads((root / "model" / "history.jsonl").read_text().splitlines()[0])

        data = load_prepared(root / "prepared")
        model = load_model(root / "model" / "model.pt")
        started = time.perf_counter()
        every, every_half = evaluate_sample(
            model, cfg, data.model_inputs("valid", model.spec.event_types), data.valid_target
        )
        every_s = time.perf_counter() - started
        users = len(data.valid_target)
        compared = compare_scoring(model, data, cfg)

    def side(seconds: float, scored: int, ndcg: float, half: float) -> dict[str, Any]:
        return {
            "users": scored,
            "seconds": round(seconds, 2),
            "share_of_epoch": round(seconds / epoch.train_s, 3),
            "ndcg@10": ndcg,
            "ndcg@10_ci95": half,
        }

    report = {
        "machine": machine_info(),
        "command": "python -m benchmarks.bench_epoch_validation"
        + (f" --preset {args.preset}" if args.preset != "large" else ""),
        "preset": args.preset,
        "protocol": (
            "one run: one training epoch validated on the sample, then the same weights score "
            "every validation user through the same function (same split, metric, masking)"
        ),
        "train": {
            "loss": cfg.loss,
            "hidden": cfg.hidden,
            "max_len": cfg.max_len,
            "batch_size": cfg.batch_size,
            "eval_batch_size": cfg.eval_batch_size,
            "threads": torch.get_num_threads(),
        },
        "items": data.n_items,
        "validation_users": users,
        "data_seconds": round(data_s, 1),
        "epoch_train_seconds": round(epoch.train_s, 2),
        "sample": side(
            epoch.valid_s,
            epoch.valid_users,
            history["valid"]["ndcg@10"],
            history["valid_ci95"]["ndcg@10"],
        ),
        "every_user": side(every_s, users, every["ndcg@10"], every_half),
        "sample_speedup": round(every_s / epoch.valid_s, 2),
        "target_share": 0.2,
        "target_met": epoch.valid_s / epoch.train_s <= 0.2,
        "final_test_scoring": {
            "what": "every test user: the model and the most-popular and transition baselines",
            "seconds": round(final_s, 2),
            "share_of_epoch": round(final_s / epoch.train_s, 3),
        },
        "final_test_scoring_ways": {
            "what": (
                "every test user, the same weights, one after the other in this run: the way "
                "the train stage ranks (model: in place; baselines: sparse) against the "
                "reference (every item's scores masked in a copy, items ahead counted as "
                "booleans); same_sums: both give the same metric sums to the last bit"
            ),
            **compared,
        },
        "test_ndcg@10": result.test["ndcg@10"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("sample", "every_user", "target_met")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
