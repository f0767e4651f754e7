"""The training loop: SASRec with early stopping on validation NDCG@10, in one process or DDP.

Reads ``item_map.parquet``, ``train.parquet``, ``valid.parquet`` and ``test.parquet`` of the
prepare stage and writes into ``out`` (rank 0 only):

- ``checkpoints/last.pt`` every epoch and ``checkpoints/best.pt`` on improvement
  (``pipelines.model.training.checkpoint``); a rerun resumes from ``last.pt``, a finished run is
  not trained again;
- ``history.jsonl`` and ``plots/train.csv``: one row per epoch (loss, validation metrics; in
  ``history.jsonl`` also the users scored and the 95 % confidence half-width of NDCG@10);
- ``model.pt``: the best weights with the model spec and config;
- ``metrics.json`` (:class:`~pipelines.model.training.metrics.TrainingMetrics`) and its schema
  ``metrics.schema.json``: test metrics of the best model beside the most-popular and
  item-to-item transition baselines, and the protocol that scored them (``mask_history``,
  ``ties``): numbers of different protocols are not comparable.

Each epoch's validation scores a fixed sample of ``train.valid_users`` validation users, drawn
once with the run's seed (every user where the split has no more), so that judging an epoch
costs a bounded share of it on a large catalog; the confidence interval in the training log says
how far the sample's NDCG@10 may be from every user's. The final test and the baselines score
every test user, and ``metrics.json`` names the users behind each figure.

Under ``torchrun`` every rank trains on its shard of the windows (``DistributedSampler``) and
scores its share of the validation and test users; the metrics' sums are added up across ranks,
and rank 0 scores the baselines, writes the files and broadcasts the early-stopping decision.
Backend: NCCL when CUDA is available, else gloo. Randomness is derived from
``(seed, epoch, rank)`` at the start of every epoch, so a run is reproducible for a given seed,
world size and thread count, resumed or not.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from pipelines.core.contracts import write_contract
from pipelines.core.io import write_text
from pipelines.core.params import RunConfig, TrainConfig
from pipelines.data.prepared import Prepared, load_prepared, prepared_fingerprint
from pipelines.model.baselines import ItemTransition, MostPopular, item_counts
from pipelines.model.ranking import metric_names, ranking_metrics, ranking_sums
from pipelines.model.sasrec import (
    ModelSpec,
    SASRec,
    full_softmax_loss,
    next_item_pairs,
    sampled_softmax_loss,
    sampling_probs,
)
from pipelines.model.training.averaging import WeightAverage
from pipelines.model.training.checkpoint import resume, rng_states, save, seed_everything
from pipelines.model.training.distributed import Dist, init_distributed
from pipelines.model.training.examples import older_targets, shard_batches, training_windows
from pipelines.model.training.metrics import (
    METRICS,
    TRAINING_METRICS_VERSION,
    Baselines,
    RankingMetrics,
    ScoringProtocol,
    TrainingMetrics,
    UserSample,
)

log = logging.getLogger("recflow.train")

SELECTION_METRIC = "ndcg@10"


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    best_epoch: int
    epochs_run: int
    resumed_from: int
    stopped_early: bool
    best_valid: dict[str, float]
    test: dict[str, float]
    baselines: dict[str, dict[str, float]]
    # how every number above was ranked: history items masked or not, and the tie rule
    protocol: dict[str, Any]


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the per-epoch logs from the checkpoint's history, so they match it after a crash."""
    lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
    write_text(out / "history.jsonl", lines)
    buffer = io.StringIO()
    columns = ["epoch", "loss"] + [f"valid_{name}" for name in metric_names()]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({"epoch": row["epoch"], "loss": row["loss"], **_valid_columns(row)})
    write_text(out / "plots" / "train.csv", buffer.getvalue())


def _valid_columns(row: dict[str, Any]) -> dict[str, Any]:
    valid = row.get("valid") or {}
    return {f"valid_{name}": valid.get(name, "") for name in metric_names()}


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 6) for name, value in metrics.items()}


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small text table of metrics per model."""
    names = metric_names()
    width = max(len(model) for model in rows)
    lines = [f"{'model':<{width}}  " + "  ".join(f"{n:>8}" for n in names)]
    for model, values in rows.items():
        lines.append(f"{model:<{width}}  " + "  ".join(f"{values[n]:8.4f}" for n in names))
    return "\n".join(lines)


def _build_model(cfg: TrainConfig, data: Prepared, device: torch.device) -> SASRec:
    spec = ModelSpec(
        n_items=data.n_items,
        hidden=cfg.hidden,
        layers=cfg.layers,
        heads=cfg.heads,
        max_len=cfg.max_len,
        dropout=cfg.dropout,
        n_categories=data.n_categories if cfg.category_feature else 0,
        event_types=cfg.event_type_feature,
        repeat_term=cfg.repeat_term,
        tie_embeddings=cfg.tie_embeddings,
    )
    return SASRec(spec, data.item_category if cfg.category_feature else None).to(device)


# two-sided 95 % normal quantile: the half-width of a confidence interval is this many standard
# errors
Z_95 = 1.959964


@dataclass(frozen=True)
class EpochTiming:
    """Where an epoch's time went (rank 0's clock)."""

    epoch: int
    train_s: float
    valid_s: float | None
    """None: the epoch was not evaluated."""
    valid_users: int


@dataclass(frozen=True)
class ValidSample:
    """The validation users every epoch scores.

    Attributes:
        rows: Their row numbers in the validation split, ascending; None: every user.
        of: Users in the validation split.
        seed: The seed that drew them; None when every user is scored.
    """

    rows: np.ndarray | None
    of: int
    seed: int | None

    @property
    def users(self) -> int:
        """Users scored each epoch."""
        return self.of if self.rows is None else len(self.rows)

    def to_json(self) -> dict[str, Any]:
        return {"users": self.users, "of": self.of, "seed": self.seed}


def valid_sample(users: int, size: int | None, seed: int) -> ValidSample:
    """A fixed sample of ``size`` of ``users`` validation users, drawn once with ``seed`` (its own
    generator: the training's random streams are not touched); every user when ``size`` is None
    or not smaller."""
    if size is None or size >= users:
        return ValidSample(None, users, None)
    rows = np.random.default_rng(seed).choice(users, size=size, replace=False)
    return ValidSample(np.sort(rows), users, seed)


def evaluate_sample(
    model: SASRec,
    cfg: TrainConfig,
    histories: list[np.ndarray],
    targets: np.ndarray,
    ctx: Dist | None = None,
) -> tuple[dict[str, float], float]:
    """Metrics of ``model`` on the given users (a validation sample, or every test user) and the
    95 % confidence half-width of the selection metric.

    Under ``torchrun`` (``ctx`` of a group) every rank scores its contiguous share of the users
    and the sums are added up across ranks: every rank returns the same figures, which are
    those of scoring every user in one process up to the order of the float64 additions.
    """
    model.eval()
    lo, hi = _share(len(histories), ctx)
    device = next(model.parameters()).device
    sums = ranking_sums(
        model.score,
        histories[lo:hi],
        targets[lo:hi],
        batch_size=cfg.eval_batch_size,
        mask_history=cfg.mask_history,
        device=device,
        ties=cfg.ties,
    )
    if ctx is not None and ctx.world > 1:
        packed = torch.tensor(sums.pack(), dtype=torch.float64, device=device)
        dist.all_reduce(packed)
        sums = sums.unpack(packed.tolist())
    means, errors = sums.moments()
    return _round(means), round(Z_95 * errors[SELECTION_METRIC], 6)


def _share(users: int, ctx: Dist | None) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of ``users`` this rank scores: contiguous, sizes differing by at
    most one."""
    if ctx is None or ctx.world <= 1:
        return 0, users
    per, extra = divmod(users, ctx.world)
    lo = ctx.rank * per + min(ctx.rank, extra)
    return lo, lo + per + (ctx.rank < extra)


def train(
    cfg: TrainConfig,
    run: RunConfig,
    prepared: Path,
    out: Path,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_timing: Callable[[EpochTiming], None] | None = None,
) -> TrainResult:
    """Train SASRec with early stopping on validation NDCG@10 and write the results to ``out``.

    Works in one process or in each process of a ``torchrun`` launch. Resumes from
    ``out/checkpoints/last.pt`` when it exists; a run that already finished is only evaluated.

    Args:
        cfg: Model and training settings.
        run: The run (its seed is used unless ``cfg.seed`` is set).
        prepared: The prepare stage's output folder.
        out: Output folder (written by rank 0 only).
        on_epoch: Called on rank 0 with each epoch's history row (loss, validation metrics)
            once its checkpoint is written; benchmarks use it to time the way to a quality.
        on_timing: Called on rank 0 with each epoch's seconds of training and of validation,
            before its checkpoint is written (the times stay out of the outputs, which a rerun
            reproduces byte for byte).

    Returns:
        The best epoch, its validation metrics, and test metrics beside the baselines.

    Raises:
        InputError: The prepared data is missing or malformed, or the checkpoint in ``out`` was
            made with a different model configuration.
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed()
    try:
        return _train(cfg, run, prepared, out, ctx, on_epoch, on_timing)
    finally:
        if ctx.initialised and dist.is_initialized():
            dist.destroy_process_group()


def _run_epoch(
    cfg: TrainConfig,
    epoch: int,
    model: SASRec,
    ddp_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    windows: torch.Tensor,
    skip: torch.Tensor | None,
    sampler: DistributedSampler[int],
    probs: torch.Tensor,
    ctx: Dist,
    average: WeightAverage | None,
) -> float:
    """One pass over this rank's shard of the users; returns the mean loss over all ranks."""
    device = next(model.parameters()).device
    sampler.set_epoch(epoch)
    ddp_model.train()
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    progress = tqdm(
        shard_batches(sampler, cfg.batch_size),
        total=-(-sampler.num_samples // cfg.batch_size),
        desc=f"epoch {epoch}",
        unit="batch",
        # None: a bar only on a terminal; in a log file (Airflow, CI) the epoch log line with
        # its rate is the progress report, not a stream of carriage returns
        disable=None if ctx.main and cfg.progress else True,
        leave=False,
    )
    for rows in progress:
        inputs, targets = next_item_pairs(windows[rows].to(device), model.spec)
        if skip is not None:
            # targets an older window holds are trained there (window_targets: newest)
            position = torch.arange(targets.shape[1], device=device)
            targets = targets * (position >= skip[rows].to(device).unsqueeze(1))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = ddp_model(inputs)
            if cfg.loss == "full_softmax":
                loss = full_softmax_loss(model, hidden, targets, cfg.label_smoothing, inputs)
            else:
                loss = sampled_softmax_loss(
                    model, hidden, targets, probs, cfg.num_negatives, inputs=inputs
                )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if average is not None:
            average.update(model)
        loss_sum[0] += loss.detach().double()
        loss_sum[1] += 1
    if ctx.world > 1:
        dist.all_reduce(loss_sum)
    return float(loss_sum[0] / loss_sum[1].clamp(min=1.0))


def _train(
    cfg: TrainConfig,
    run: RunConfig,
    prepared: Path,
    out: Path,
    ctx: Dist,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    on_timing: Callable[[EpochTiming], None] | None = None,
) -> TrainResult:
    seed = run.seed if cfg.seed is None else cfg.seed
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{ctx.local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    data = load_prepared(prepared, event_types=cfg.event_type_feature)
    seed_everything(seed)
    model = _build_model(cfg, data, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sequences = data.model_inputs("train", model.spec.event_types)
    windows = training_windows(sequences, cfg.max_len, cfg.window_stride)
    skip = None
    if cfg.window_targets == "newest":
        skip = older_targets(sequences, cfg.max_len, cfg.window_stride)
    probs = sampling_probs(
        torch.from_numpy(item_counts(data.train, data.n_items)), cfg.negative_sampler
    )
    last_path = out / "checkpoints" / "last.pt"
    fingerprint = prepared_fingerprint(prepared)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    state = resume(cfg, last_path, model, optimizer, ctx, fingerprint, average)
    resumed_from = int(state["epoch"])

    ddp_model: torch.nn.Module = model
    if ctx.world > 1:
        # the only buffer (item -> category) never changes: synced once at start, not every step
        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None, forward_sync_buffers=False
        )
    # the sampler only needs len(): it shards and shuffles the row numbers of the windows
    rows = cast("Dataset[int]", range(len(windows)))
    sampler: DistributedSampler[int] = DistributedSampler(
        rows, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed
    )
    valid_inputs = data.model_inputs("valid", model.spec.event_types)
    valid_targets = data.valid_target
    sample = valid_sample(len(valid_inputs), cfg.valid_users, seed)
    if sample.rows is not None:
        valid_inputs = [valid_inputs[row] for row in sample.rows]
        valid_targets = valid_targets[sample.rows]
    if ctx.main:
        log.info(
            "validation each epoch on %s of %s users%s",
            f"{sample.users:,}",
            f"{sample.of:,}",
            f" (a sample drawn with seed {sample.seed})" if sample.rows is not None else "",
        )
    epoch = int(state["epoch"])
    while epoch < cfg.epochs and not state["stopped"]:
        epoch += 1
        # randomness from (seed, epoch, rank): a resumed epoch draws what it would have drawn
        seed_everything(seed + 1_000_003 * epoch + ctx.rank)
        started = time.perf_counter()
        loss = _run_epoch(
            cfg, epoch, model, ddp_model, optimizer, windows, skip, sampler, probs, ctx, average
        )
        seconds = time.perf_counter() - started

        row: dict[str, Any] = {"epoch": epoch, "loss": round(loss, 6)}
        decision = torch.zeros(1, dtype=torch.int64, device=device if cuda else "cpu")
        valid_s: float | None = None
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            valid_started = time.perf_counter()
            # with a weight average, it is what is judged and kept; every rank scores its share
            # of the users and gets the same figures, so every rank keeps the same books
            with average.applied(model) if average is not None else nullcontext():
                row["valid"], half_width = evaluate_sample(
                    model, cfg, valid_inputs, valid_targets, ctx
                )
                row["valid_ci95"] = {SELECTION_METRIC: half_width}
                row["valid_users"] = sample.users
                if row["valid"][SELECTION_METRIC] > state["best_metric"]:
                    state.update(
                        best_metric=row["valid"][SELECTION_METRIC],
                        best_epoch=epoch,
                        bad_evals=0,
                    )
                    if ctx.main:
                        best = {"model": model.state_dict(), "epoch": epoch}
                        save(out / "checkpoints" / "best.pt", best)
                else:
                    state["bad_evals"] += 1
            valid_s = time.perf_counter() - valid_started
            decision[0] = int(state["bad_evals"] >= cfg.patience)
        if ctx.main:
            interval = row.get("valid_ci95", {}).get(SELECTION_METRIC)
            log.info(
                "epoch %d: loss %.4f, valid %s %s%s, %.2f s (%.0f windows/s)",
                epoch,
                loss,
                SELECTION_METRIC,
                row.get("valid", {}).get(SELECTION_METRIC, "-"),
                f" ±{interval:.4f}" if interval is not None else "",
                seconds,
                sampler.num_samples * ctx.world / max(seconds, 1e-9),
            )
            if on_timing is not None:
                on_timing(EpochTiming(epoch, seconds, valid_s, sample.users))
        if ctx.world > 1:
            dist.broadcast(decision, src=0)
        state.update(stopped=bool(decision[0]), epoch=epoch, history=[*state["history"], row])
        if ctx.main:
            checkpoint = {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **({"average": average.state_dict()} if average is not None else {}),
                "rng": rng_states(),
                "config": cfg.model_dump(mode="json"),
                "data": fingerprint,
            }
            save(last_path, checkpoint)
            _write_history(out, state["history"])
            if state["stopped"]:
                log.info(
                    "early stop after epoch %d: no %s gain in %d evaluations (best epoch %d)",
                    epoch,
                    SELECTION_METRIC,
                    cfg.patience,
                    state["best_epoch"],
                )
            if on_epoch is not None:
                on_epoch(row)
        if ctx.world > 1:
            # no rank starts the next epoch (or may crash in it) before last.pt is complete
            dist.barrier()

    best_path = out / "checkpoints" / "best.pt"
    if ctx.main and best_path.is_file():
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["model"])
    if ctx.world > 1:
        # rank 0 alone reads the checkpoint folder: the others get the best weights from it
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
    started = time.perf_counter()
    test, _ = evaluate_sample(
        model, cfg, data.model_inputs("test", model.spec.event_types), data.test_target, ctx
    )
    model_s = time.perf_counter() - started
    result = (
        _finish(cfg, model, data, out, state, resumed_from, sample, test, model_s)
        if ctx.main
        else None
    )
    if ctx.world > 1:
        # every rank returns rank 0's result
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    assert result is not None
    return result


def _finish(
    cfg: TrainConfig,
    model: SASRec,
    data: Prepared,
    out: Path,
    state: dict[str, Any],
    resumed_from: int,
    sample: ValidSample,
    test: dict[str, float],
    model_s: float,
) -> TrainResult:
    """Rank 0: the baselines, ``model.pt`` and ``metrics.json`` beside the model's ``test``
    metrics, which took ``model_s`` seconds to score."""
    best_valid: dict[str, float] = next(
        (row["valid"] for row in state["history"] if row["epoch"] == state["best_epoch"]), {}
    )
    started = time.perf_counter()
    baselines = {}
    for name, scorer in (
        ("most_popular", MostPopular(data.train, data.n_items)),
        ("item_transition", ItemTransition(data.train, data.n_items)),
    ):
        baselines[name] = _round(
            ranking_metrics(
                scorer,
                data.test_history,
                data.test_target,
                batch_size=cfg.eval_batch_size,
                mask_history=cfg.mask_history,
                ties=cfg.ties,
            )
        )
    baselines_s = time.perf_counter() - started
    log.info(
        "test: %s users scored in %.2f s (model %.2f s, baselines %.2f s)",
        f"{len(data.test_target):,}",
        model_s + baselines_s,
        model_s,
        baselines_s,
    )
    save(
        out / "model.pt",
        {
            "model": {name: tensor.cpu() for name, tensor in model.state_dict().items()},
            "spec": model.spec.to_dict(),
            "n_items": data.n_items,
            "config": cfg.model_dump(mode="json"),
        },
    )
    result = TrainResult(
        best_epoch=int(state["best_epoch"]),
        epochs_run=int(state["epoch"]),
        resumed_from=resumed_from,
        stopped_early=bool(state["stopped"]),
        best_valid=best_valid,
        test=test,
        baselines=baselines,
        protocol={"mask_history": cfg.mask_history, "ties": cfg.ties},
    )
    metrics = TrainingMetrics(
        schema_version=TRAINING_METRICS_VERSION,
        protocol=ScoringProtocol(mask_history=cfg.mask_history, ties=cfg.ties),
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        stopped_early=result.stopped_early,
        best_valid=RankingMetrics.model_validate(best_valid) if best_valid else None,
        best_valid_users=UserSample(**sample.to_json()) if best_valid else None,
        test=RankingMetrics.model_validate(test),
        test_users=UserSample(users=len(data.test_target), of=len(data.test_target), seed=None),
        baselines=Baselines(
            most_popular=RankingMetrics.model_validate(baselines["most_popular"]),
            item_transition=RankingMetrics.model_validate(baselines["item_transition"]),
        ),
    )
    write_contract(out / METRICS, metrics)
    log.info(
        "test metrics (best epoch %d):\n%s",
        result.best_epoch,
        format_table({"sasrec": test, **baselines}),
    )
    return result
