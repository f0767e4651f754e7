"""Training examples: the windows cut from each sequence, and the batches each worker draws
from its shard."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from pipelines.data.sequences import left_pad


def _window_ends(length: int, width: int, stride: int | None) -> list[int]:
    """Ends (exclusive step index) of a sequence's windows, newest first."""
    ends = [length]
    if stride is not None:
        # a window ending before `width` would only repeat a prefix of the first one
        ends += list(range(length - stride, width - 1, -stride))
        if length > width and ends[-1] > width:
            ends.append(width)
    return ends


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
        ends = _window_ends(len(seq), width, stride)
        windows.extend(seq[max(0, end - width) : end] for end in ends)
    return torch.from_numpy(left_pad(windows, width))


def older_targets(train: list[np.ndarray], max_len: int, stride: int | None = None) -> torch.Tensor:
    """Per window of :func:`training_windows`, how many of its first targets an older one holds.

    Windows that overlap share targets; a target is best trained in the oldest window that holds
    it, where it has the most steps of context. Leaving out the first ``older_targets`` targets
    of each window trains every step once per epoch, with at least ``max_len - stride`` steps of
    context wherever the sequence has them.

    Returns:
        ``int64 [windows]``, in the order of :func:`training_windows`.
    """
    width = max_len + 1
    counts: list[int] = []
    for seq in train:
        if len(seq) < 2:
            continue
        ends = _window_ends(len(seq), width, stride)
        older = [*ends[1:], 0]
        # targets of the window ending at `end` are the steps end - max_len .. end - 1
        counts.extend(
            max(0, before - (end - max_len)) if before else 0
            for end, before in zip(ends, older, strict=True)
        )
    return torch.tensor(counts, dtype=torch.int64)


def shard_batches(sampler: DistributedSampler[int], batch_size: int) -> Iterator[list[int]]:
    indices = list(sampler)
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]
