"""The process group: one process, or each worker of a ``torchrun`` launch (gloo or NCCL)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger("recflow.train")


@dataclass
class Dist:
    """This worker's place in the group; rank 0 alone writes files."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        store, rank, size = next(dist.rendezvous("env://"))
        # after a worker failure torchrun restarts every worker against the same store, which
        # still holds the old workers' addresses: a prefix per attempt keeps them apart
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"recflow/attempt-{attempt}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=size)
    state = Dist(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        initialised=True,
    )
    log.info("rank %d of %d (%s)", state.rank, state.world, backend)
    return state
