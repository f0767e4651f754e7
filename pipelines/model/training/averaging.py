"""An exponential moving average of the weights, evaluated and saved in place of the raw ones.

Late in training the weights wander around a good region from step to step; their running
average sits nearer its middle, so validation scores move less from epoch to epoch and the model
generalises better (Polyak averaging). The average is updated after every optimizer step and
travels in the checkpoint, so a resumed run continues it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers.

    The decay grows with the number of updates, ``min(decay, (1 + n) / (10 + n))``, so the
    first steps, far from where training goes, do not linger in the average.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: tensor.detach().clone()
            for name, tensor in model.state_dict().items()
            if tensor.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, tensor in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(tensor.detach(), 1.0 - decay)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after."""
        own = {name: model.state_dict()[name].detach().clone() for name in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(own, strict=False)

    def state_dict(self) -> dict[str, object]:
        """The average and its update count, for the checkpoint."""
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Continue the average of a checkpoint."""
        updates, shadow = state["updates"], state["shadow"]
        assert isinstance(updates, int) and isinstance(shadow, dict)
        self.updates = updates
        for name, tensor in shadow.items():
            self.shadow[name].copy_(tensor)
