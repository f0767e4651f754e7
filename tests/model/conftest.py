"""Fixtures of the model tier: a tiny prepared data set from the synthetic shop."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import torch

from pipelines.core.params import GenerateConfig, OptimizeConfig, PrepareConfig, RunConfig
from pipelines.data.preparation import prepare
from pipelines.data.synthetic.generator import generate
from pipelines.serving.artifacts import optimize

RUN = RunConfig(logical_date=dt.date(2026, 11, 22), seed=42)
# the optimize stage with a small parity and latency sample, fp32 only
FAST_OPTIMIZE = OptimizeConfig.model_validate(
    {
        "threads": 1,
        "top_k": 10,
        "onnxruntime_int8": False,
        "parity": {"sequences": 32},
        "latency": {"batches": [1], "warmup": 1, "iterations": 2},
    }
)


def model_dir(root: Path, model_path: Path, prepared: Path) -> Path:
    """``root`` laid out as the gate reads a model: ``model.pt`` and its ``optimized/``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_path, root / "model.pt")
    optimize(FAST_OPTIMIZE, root / "model.pt", prepared, root / "optimized")
    return root


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # the tests share two cores with everything else
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepare stage's output for the tiny synthetic preset (validation skipped)."""
    root = tmp_path_factory.mktemp("tiny")
    generate(GenerateConfig(preset="tiny"), RUN, root / "source")
    prepare(PrepareConfig(), RUN, root / "source", root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_model(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SASRec trained for a few epochs on ``tiny_prepared``: its ``model.pt``."""
    from pipelines.core.params import TrainConfig
    from pipelines.model.training.loop import train

    out = tmp_path_factory.mktemp("tiny-model")
    cfg = TrainConfig(
        hidden=16, max_len=20, epochs=4, batch_size=64, lr=5e-3, threads=1, progress=False
    )
    torch.set_num_threads(1)
    train(cfg, RUN, tiny_prepared, out)
    return out / "model.pt"
