"""The learning rate of each optimizer step: constant, or a linear warm-up then a cosine decay.

The rate is a pure function of the step number, so a resumed run sets the same rate at the same
step without any scheduler state in the checkpoint.
"""

from __future__ import annotations

import math

from pipelines.core.params import TrainConfig


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based, counted over the whole run).

    Args:
        cfg: ``lr`` (the peak rate), ``lr_schedule``, ``warmup_epochs``, ``min_lr_ratio`` and
            ``epochs`` (the cosine reaches ``lr * min_lr_ratio`` at the end of the last one).
        step: The optimizer step.
        steps_per_epoch: Optimizer steps in one epoch.

    Returns:
        ``cfg.lr`` for a constant schedule; otherwise the warm-up rate, rising linearly from
        ``lr / warmup_steps`` to ``lr``, then the cosine between ``lr`` and ``lr * min_lr_ratio``.
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    total = max(cfg.epochs * steps_per_epoch - warmup, 1)
    progress = min((step - warmup) / total, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
