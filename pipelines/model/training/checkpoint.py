"""Checkpoints: atomic saves by rank 0, resume of the loop state, and the random states.

``last.pt`` holds everything the loop needs to continue (model, optimizer, weight average,
epoch, best metric, history, RNG states, config and a fingerprint of the prepared data); a rerun
resumes from it, but never from a checkpoint of other prepared data or of another model shape.
"""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.core.errors import InputError
from pipelines.core.io import atomic_path
from pipelines.core.params import TrainConfig
from pipelines.model.sasrec import SASRec
from pipelines.model.training.averaging import WeightAverage
from pipelines.model.training.distributed import Dist

log = logging.getLogger("recflow.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
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


def save(target: Path, payload: dict[str, Any]) -> None:
    # torch.save names the archive's records after the file: saving to memory first keeps the
    # bytes independent of the temporary name
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getvalue())


def fresh_state() -> dict[str, Any]:
    return {
        "epoch": 0,
        "best_metric": -1.0,
        "best_epoch": 0,
        "bad_evals": 0,
        "stopped": False,
        "history": [],
    }


def resume(
    cfg: TrainConfig,
    last_path: Path,
    model: SASRec,
    optimizer: torch.optim.Optimizer,
    ctx: Dist,
    data_fingerprint: str,
    average: WeightAverage | None = None,
) -> dict[str, Any]:
    """The loop state of ``last_path``, with model, optimizer and weight average restored.

    Fresh if absent.

    A checkpoint of other prepared data (a new batch since) is not resumed: training starts
    fresh and overwrites it.
    """
    state = fresh_state()
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
    if average is not None:
        average.load_state_dict(snapshot["average"])
    # kept for completeness: the loop reseeds every epoch from (seed, epoch, rank), because
    # only rank 0's generators are in the checkpoint
    _restore_rng(snapshot["rng"])
    if ctx.main:
        log.info("resumed from %s after epoch %d", last_path, snapshot["epoch"])
    return {key: snapshot[key] for key in state}
