"""Training windows of the sequences, and the batches each worker draws from its shard."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from pipelines.data.sequences import left_pad


def training_windows(
    train: list[np.ndarray], max_len: int, stride: int | None = None
) -> torch.Tensor:
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


def shard_batches(sampler: DistributedSampler[int], batch_size: int) -> Iterator[list[int]]:
    indices = list(sampler)
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]
