"""Stage ``train``: fit SASRec on the prepared sequences, plainly or under ``torchrun`` (DDP).

    python -m pipelines.train --params params.yaml --prepared data/prepared --out models/candidate
    torchrun --standalone --nproc_per_node=2 -m pipelines.train --prepared data/prepared ...

Reads ``item_map.parquet``, ``train.parquet``, ``valid.parquet`` and ``test.parquet`` of the
prepare stage and writes into ``--out`` (rank 0 only):

- ``checkpoints/last.pt`` every epoch and ``checkpoints/best.pt`` on improvement: model,
  optimizer, epoch, best metric, history, RNG states and the config. A rerun resumes from
  ``last.pt``; a finished run is not trained again;
- ``history.jsonl`` and ``plots/train.csv``: one row per epoch (loss, validation metrics);
- ``model.pt``: the best weights with the model spec and config;
- ``metrics.json``: test metrics of the best model beside the most-popular and item-to-item
  transition baselines.

Under ``torchrun`` every rank trains on its shard of the users (``DistributedSampler``), rank 0
evaluates and broadcasts the early-stopping decision. Backend: NCCL when CUDA is available,
else gloo. Randomness is derived from ``(seed, epoch, rank)`` at the start of every epoch, so a
run is reproducible for a given seed, world size and thread count, resumed or not.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from pipelines.baselines import ItemTransition, MostPopular, item_counts
from pipelines.cli_common import run_cli, stage_parser
from pipelines.config import ConfigError, RunConfig, TrainConfig, format_errors, load_params
from pipelines.errors import InputError
from pipelines.io import atomic_path, sha256_file, write_json, write_text
from pipelines.metrics import evaluate, metric_names
from pipelines.model import (
    N_EVENT_TYPES,
    ModelSpec,
    SASRec,
    full_softmax_loss,
    left_pad,
    next_item_pairs,
    sampled_softmax_loss,
    sampling_probs,
    step_tokens,
)

log = logging.getLogger("recflow.train")

SELECTION_METRIC = "ndcg@10"
# test hook: "EPOCH:BATCH:RANK" makes that worker kill itself once (see _maybe_fault)
FAULT_ENV = "RECFLOW_TRAIN_FAULT"
FAULT_MARKER_ENV = "RECFLOW_TRAIN_FAULT_MARKER"


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


@dataclass(frozen=True)
class Prepared:
    """The prepare stage's output, as the trainer uses it."""

    n_items: int
    n_categories: int
    item_category: torch.Tensor
    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray
    # event codes aligned with train / valid_history / test_history; read on request only
    train_events: list[np.ndarray] | None = None
    valid_events: list[np.ndarray] | None = None
    test_events: list[np.ndarray] | None = None

    def model_inputs(
        self, split: Literal["train", "valid", "test"], event_types: bool
    ) -> list[np.ndarray]:
        """The split's sequences as a model reads them: items, or with ``event_types`` step
        tokens (``pipelines.model.step_tokens``).

        Raises:
            InputError: Event types are asked for but were not loaded.
        """
        items = self.train if split == "train" else getattr(self, f"{split}_history")
        if not event_types:
            return list(items)
        events = getattr(self, f"{split}_events")
        if events is None:
            raise InputError("event types were not loaded: load_prepared(..., event_types=True)")
        return [step_tokens(i, e, self.n_items) for i, e in zip(items, events, strict=True)]


PREPARED_FILES = ("item_map.parquet", "train.parquet", "valid.parquet", "test.parquet")


def prepared_fingerprint(prepared: Path) -> str:
    """sha256 over the prepared files the trainer reads: which data a checkpoint belongs to."""
    digest = hashlib.sha256()
    for name in PREPARED_FILES:
        path = prepared / name
        digest.update(name.encode())
        digest.update(sha256_file(path).encode() if path.is_file() else b"missing")
    return digest.hexdigest()


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    if not path.is_file():
        raise InputError(f"{path.name} not found in {path.parent} (run the prepare stage first)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path} is not readable Parquet: {exc}") from exc
    missing = set(columns) - set(table.column_names)
    if missing:
        raise InputError(f"{path} lacks the columns {sorted(missing)}")
    return table


def _lists(table: pa.Table, column: str) -> list[np.ndarray]:
    arr = table.column(column).combine_chunks()
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = arr.offsets.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(arr))]


def _event_lists(
    table: pa.Table, column: str, items: list[np.ndarray], path: Path
) -> list[np.ndarray]:
    if column not in table.column_names:
        raise InputError(
            f"{path} has no {column} column, which a model with event types needs "
            "(written by the prepare stage: run it again)"
        )
    events = _lists(table, column)
    if any(len(e) != len(i) for e, i in zip(events, items, strict=True)):
        raise InputError(f"{path}: {column} and the item lists differ in length")
    if any(len(e) and (e.min() < 0 or e.max() >= N_EVENT_TYPES) for e in events):
        raise InputError(f"{path}: {column} has codes outside 0..{N_EVENT_TYPES - 1}")
    return events


def load_prepared(prepared: Path, *, event_types: bool = False) -> Prepared:
    """Read the prepare stage's folder (with the event types of each step if asked).

    Raises:
        InputError: A file is missing, unreadable, of the wrong shape, or an item index is
            outside the item map; or event types are asked for and missing or invalid.
    """
    items = _read(prepared / "item_map.parquet", ["item_idx", "category_idx"])
    item_idx = items.column("item_idx").to_numpy().astype(np.int64)
    n_items = len(item_idx)
    if n_items == 0 or not np.array_equal(np.sort(item_idx), np.arange(1, n_items + 1)):
        raise InputError(f"{prepared / 'item_map.parquet'}: item_idx must be 1..N without gaps")
    category = np.zeros(n_items + 1, dtype=np.int64)
    category[item_idx] = items.column("category_idx").to_numpy().astype(np.int64)
    train_table = _read(prepared / "train.parquet", ["item_idx"])
    train = _lists(train_table, "item_idx")
    splits = {}
    events: dict[str, list[np.ndarray] | None] = {"train": None, "valid": None, "test": None}
    if event_types:
        events["train"] = _event_lists(
            train_table, "event_types", train, prepared / "train.parquet"
        )
    for name in ("valid", "test"):
        table = _read(prepared / f"{name}.parquet", ["history", "target"])
        splits[name] = (
            _lists(table, "history"),
            table.column("target").to_numpy().astype(np.int64),
        )
        if event_types:
            events[name] = _event_lists(
                table, "history_event_types", splits[name][0], prepared / f"{name}.parquet"
            )
    for name, seqs in (
        ("train", train),
        ("valid", splits["valid"][0]),
        ("test", splits["test"][0]),
    ):
        top = max((int(s.max()) for s in seqs if len(s)), default=0)
        low = min((int(s.min()) for s in seqs if len(s)), default=1)
        if top > n_items or low < 1:
            raise InputError(f"{name}.parquet has item indices outside 1..{n_items}")
    for name in ("valid", "test"):
        targets = splits[name][1]
        if len(targets) and (targets.min() < 1 or targets.max() > n_items):
            raise InputError(f"{name}.parquet has targets outside 1..{n_items}")
    if not any(len(s) >= 2 for s in train):
        raise InputError(f"{prepared / 'train.parquet'} has no sequence of two or more steps")
    return Prepared(
        n_items=n_items,
        n_categories=int(category.max()),
        item_category=torch.from_numpy(category),
        train=train,
        valid_history=splits["valid"][0],
        valid_target=splits["valid"][1],
        test_history=splits["test"][0],
        test_target=splits["test"][1],
        train_events=events["train"],
        valid_events=events["valid"],
        test_events=events["test"],
    )


def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        store, rank, size = next(dist.rendezvous("env://"))
        # after a worker failure torchrun restarts every worker against the same store, which
        # still holds the old workers' addresses: a prefix per attempt keeps them apart
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"recflow/attempt-{attempt}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=size)
    state = _Dist(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        initialised=True,
    )
    log.info("rank %d of %d (%s)", state.rank, state.world, backend)
    return state


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_states() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore_rng(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _windows(train: list[np.ndarray], max_len: int, stride: int | None = None) -> torch.Tensor:
    """Training windows of ``max_len + 1`` steps, left-padded.

    Without ``stride`` a sequence gives one window, its newest steps. With ``stride`` a sequence
    longer than a window also gives the windows ending ``stride``, ``2 * stride``, ... steps
    before its end, so that the older steps of long histories are trained on as well.
    """
    width = max_len + 1
    windows: list[np.ndarray] = []
    for seq in train:
        if len(seq) < 2:
            continue
        ends = [len(seq)]
        if stride is not None:
            # a window ending before `width` would only repeat a prefix of the first one
            ends += list(range(len(seq) - stride, width - 1, -stride))
            if len(seq) > width and ends[-1] > width:
                ends.append(width)
        windows.extend(seq[max(0, end - width) : end] for end in ends)
    return torch.from_numpy(left_pad(windows, width))


def _batches(sampler: DistributedSampler[int], batch_size: int) -> Iterator[list[int]]:
    indices = list(sampler)
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]


def _maybe_fault(epoch: int, batch: int, rank: int) -> None:
    """Kill this worker once at the configured step; only the fault-tolerance test sets it."""
    spec = os.environ.get(FAULT_ENV)
    marker = os.environ.get(FAULT_MARKER_ENV)
    if not spec or not marker or Path(marker).exists():
        return
    if [int(part) for part in spec.split(":")] == [epoch, batch, rank]:
        Path(marker).write_text(f"{epoch}:{batch}:{rank}\n", encoding="utf-8")
        log.warning("fault hook: killing rank %d at epoch %d batch %d", rank, epoch, batch)
        os.kill(os.getpid(), signal.SIGKILL)


def _save(target: Path, payload: dict[str, Any]) -> None:
    # torch.save names the archive's records after the file: saving to memory first keeps the
    # bytes independent of the temporary name
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getvalue())


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
    )
    return SASRec(spec, data.item_category if cfg.category_feature else None).to(device)


def _evaluate(
    model: SASRec, cfg: TrainConfig, histories: list[np.ndarray], targets: np.ndarray
) -> dict[str, float]:
    model.eval()
    device = next(model.parameters()).device
    metrics = evaluate(
        model.score,
        histories,
        targets,
        batch_size=cfg.eval_batch_size,
        mask_history=cfg.mask_history,
        device=device,
    )
    return _round(metrics)


def train(
    cfg: TrainConfig,
    run: RunConfig,
    prepared: Path,
    out: Path,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
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

    Returns:
        The best epoch, its validation metrics, and test metrics beside the baselines.

    Raises:
        InputError: The prepared data is missing or malformed, or the checkpoint in ``out`` was
            made with a different model configuration.
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ctx = _init_distributed()
    try:
        return _train(cfg, run, prepared, out, ctx, on_epoch)
    finally:
        if ctx.initialised and dist.is_initialized():
            dist.destroy_process_group()


def _fresh_state() -> dict[str, Any]:
    return {
        "epoch": 0,
        "best_metric": -1.0,
        "best_epoch": 0,
        "bad_evals": 0,
        "stopped": False,
        "history": [],
    }


def _resume(
    cfg: TrainConfig,
    last_path: Path,
    model: SASRec,
    optimizer: torch.optim.Optimizer,
    ctx: _Dist,
    data_fingerprint: str,
) -> dict[str, Any]:
    """The loop state of ``last_path``, with model and optimizer restored; fresh if absent.

    A checkpoint of other prepared data (a new batch since) is not resumed: training starts
    fresh and overwrites it.
    """
    state = _fresh_state()
    if not last_path.is_file():
        return state
    # on the CPU: RNG states must stay CPU tensors; load_state_dict moves weights to the device
    snapshot = torch.load(last_path, map_location="cpu", weights_only=False)
    if snapshot.get("data") != data_fingerprint:
        if ctx.main:
            log.info("%s was trained on other prepared data: starting fresh", last_path)
        return state
    differ = cfg.model_fields_differ(TrainConfig.model_validate(snapshot["config"]))
    if differ:
        raise InputError(
            f"{last_path} was trained with other {', '.join(differ)}; "
            "remove it or use another --out"
        )
    model.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optimizer"])
    # kept for completeness: the loop reseeds every epoch from (seed, epoch, rank), because
    # only rank 0's generators are in the checkpoint
    _restore_rng(snapshot["rng"])
    if ctx.main:
        log.info("resumed from %s after epoch %d", last_path, snapshot["epoch"])
    return {key: snapshot[key] for key in state}


def _run_epoch(
    cfg: TrainConfig,
    epoch: int,
    model: SASRec,
    ddp_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    windows: torch.Tensor,
    sampler: DistributedSampler[int],
    probs: torch.Tensor,
    ctx: _Dist,
) -> float:
    """One pass over this rank's shard of the users; returns the mean loss over all ranks."""
    device = next(model.parameters()).device
    sampler.set_epoch(epoch)
    ddp_model.train()
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    progress = tqdm(
        _batches(sampler, cfg.batch_size),
        total=-(-sampler.num_samples // cfg.batch_size),
        desc=f"epoch {epoch}",
        unit="batch",
        # None: a bar only on a terminal; in a log file (Airflow, CI) the epoch log line with
        # its rate is the progress report, not a stream of carriage returns
        disable=None if ctx.main and cfg.progress else True,
        leave=False,
    )
    for step, rows in enumerate(progress):
        _maybe_fault(epoch, step, ctx.rank)
        inputs, targets = next_item_pairs(windows[rows].to(device), model.spec)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = ddp_model(inputs)
            if cfg.loss == "full_softmax":
                loss = full_softmax_loss(model, hidden, targets)
            else:
                loss = sampled_softmax_loss(model, hidden, targets, probs, cfg.num_negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
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
    ctx: _Dist,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    seed = run.seed if cfg.seed is None else cfg.seed
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{ctx.local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    data = load_prepared(prepared, event_types=cfg.event_type_feature)
    _seed_everything(seed)
    model = _build_model(cfg, data, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    windows = _windows(
        data.model_inputs("train", model.spec.event_types), cfg.max_len, cfg.window_stride
    )
    probs = sampling_probs(
        torch.from_numpy(item_counts(data.train, data.n_items)), cfg.negative_sampler
    )
    last_path = out / "checkpoints" / "last.pt"
    fingerprint = prepared_fingerprint(prepared)
    state = _resume(cfg, last_path, model, optimizer, ctx, fingerprint)
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
    epoch = int(state["epoch"])
    while epoch < cfg.epochs and not state["stopped"]:
        epoch += 1
        # randomness from (seed, epoch, rank): a resumed epoch draws what it would have drawn
        _seed_everything(seed + 1_000_003 * epoch + ctx.rank)
        started = time.perf_counter()
        loss = _run_epoch(cfg, epoch, model, ddp_model, optimizer, windows, sampler, probs, ctx)
        seconds = time.perf_counter() - started

        row: dict[str, Any] = {"epoch": epoch, "loss": round(loss, 6)}
        decision = torch.zeros(1, dtype=torch.int64, device=device if cuda else "cpu")
        if ctx.main:
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                row["valid"] = _evaluate(model, cfg, valid_inputs, data.valid_target)
                if row["valid"][SELECTION_METRIC] > state["best_metric"]:
                    state.update(
                        best_metric=row["valid"][SELECTION_METRIC], best_epoch=epoch, bad_evals=0
                    )
                    best = {"model": model.state_dict(), "epoch": epoch}
                    _save(out / "checkpoints" / "best.pt", best)
                else:
                    state["bad_evals"] += 1
                decision[0] = int(state["bad_evals"] >= cfg.patience)
            log.info(
                "epoch %d: loss %.4f, valid %s %s, %.2f s (%.0f windows/s)",
                epoch,
                loss,
                SELECTION_METRIC,
                row.get("valid", {}).get(SELECTION_METRIC, "-"),
                seconds,
                sampler.num_samples * ctx.world / max(seconds, 1e-9),
            )
        if ctx.world > 1:
            dist.broadcast(decision, src=0)
        state.update(stopped=bool(decision[0]), epoch=epoch, history=[*state["history"], row])
        if ctx.main:
            checkpoint = {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": _rng_states(),
                "config": cfg.model_dump(mode="json"),
                "data": fingerprint,
            }
            _save(last_path, checkpoint)
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

    result = _finish(cfg, model, data, out, state, resumed_from) if ctx.main else None
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
) -> TrainResult:
    best_path = out / "checkpoints" / "best.pt"
    if best_path.is_file():
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["model"])
    best_valid: dict[str, float] = next(
        (row["valid"] for row in state["history"] if row["epoch"] == state["best_epoch"]), {}
    )
    test = _evaluate(
        model, cfg, data.model_inputs("test", model.spec.event_types), data.test_target
    )
    baselines = {}
    for name, scorer in (
        ("most_popular", MostPopular(data.train, data.n_items)),
        ("item_transition", ItemTransition(data.train, data.n_items)),
    ):
        baselines[name] = _round(
            evaluate(
                scorer,
                data.test_history,
                data.test_target,
                batch_size=cfg.eval_batch_size,
                mask_history=cfg.mask_history,
            )
        )
    _save(
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
    )
    payload = {k: v for k, v in asdict(result).items() if k != "resumed_from"}
    write_json(out / "metrics.json", payload)
    log.info(
        "test metrics (best epoch %d):\n%s",
        result.best_epoch,
        format_table({"sasrec": test, **baselines}),
    )
    return result


def load_config(params: Path, overrides: str | None = None) -> tuple[TrainConfig, RunConfig]:
    """The ``train`` and ``run`` sections of ``params``, with JSON ``overrides`` on top.

    A params file without a ``train`` section gives the defaults of :class:`TrainConfig`.

    Raises:
        ConfigError: The file, a section or the overrides are invalid.
    """
    checked = load_params(params)  # the whole file: an unknown key anywhere is an error
    section = checked.train.model_dump()
    if overrides:
        try:
            extra = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config-json is not valid JSON: {exc}") from exc
        if not isinstance(extra, dict):
            raise ConfigError("--config-json must be a JSON object")
        section.update(extra)
    run = checked.run
    try:
        return TrainConfig.model_validate(section), run
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, f"{params} section train")) from exc


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow train", "Train SASRec on the prepared sequences.")
    parser.add_argument(
        "--prepared",
        type=Path,
        default=Path("data/prepared"),
        help="the prepare stage's output folder (default: data/prepared)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("models/candidate"),
        help="folder for checkpoints, model and metrics (default: models/candidate)",
    )
    parser.add_argument(
        "--config-json",
        default=None,
        help="overrides of the train section as a JSON object, e.g. '{\"epochs\": 3}'",
    )
    args: argparse.Namespace = parser.parse_args(argv)
    cfg, run = load_config(args.params, args.config_json)
    train(cfg, run, args.prepared, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the stage (``recflow train`` / ``python -m pipelines.train``)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
