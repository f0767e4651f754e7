"""Parity of an inference artifact with the fp32 PyTorch model it was built from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from pipelines.core.params import ParityThreshold
from pipelines.model.sasrec import SASRec
from pipelines.serving.manifest import ParityRecord, ParityThresholds

Scorer = Callable[[np.ndarray], np.ndarray]


def eager_scorer(model: SASRec) -> Scorer:
    """``SASRec.score`` in fp32 as a numpy function: the reference every artifact matches."""

    def score(history: np.ndarray) -> np.ndarray:
        return model.score(torch.from_numpy(history)).numpy()

    return score


@dataclass(frozen=True)
class ParityResult:
    """How far an artifact's scores are from the reference, and whether that is allowed."""

    max_abs_error: float
    top10_overlap: float
    sequences: int
    passed: bool
    reason: str | None
    thresholds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (NaN becomes None)."""
        values = asdict(self)
        values["max_abs_error"] = _finite_or_none(self.max_abs_error)
        return values

    def record(self) -> ParityRecord:
        """The result as the manifest records it (NaN becomes None)."""
        return ParityRecord(
            passed=self.passed,
            max_abs_error=_finite_or_none(self.max_abs_error),
            top10_overlap=self.top10_overlap,
            sequences=self.sequences,
            reason=self.reason,
            thresholds=ParityThresholds(**self.thresholds),
        )


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 8) if np.isfinite(value) else None


def top10_overlap(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean share of the reference's top 10 items that the candidate's top 10 also holds."""
    ref = np.argsort(-reference, axis=1, kind="stable")[:, :10]
    cand = np.argsort(-candidate, axis=1, kind="stable")[:, :10]
    shared = [len(np.intersect1d(a, b)) for a, b in zip(ref, cand, strict=True)]
    return float(np.mean(shared)) / 10.0


def check_parity(
    name: str,
    reference: Scorer,
    candidate: Scorer,
    histories: np.ndarray,
    threshold: ParityThreshold,
    batch_size: int = 256,
) -> ParityResult:
    """Compare ``candidate``'s scores with ``reference``'s on ``histories``.

    Both callables map ``int64 [B, max_len]`` histories to ``[B, n_items + 1]`` scores whose
    column 0 is padding (ignored). A NaN or infinite real-item score fails parity.
    """
    errors: list[float] = []
    overlaps: list[float] = []
    finite = True
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        ref = np.asarray(reference(batch), dtype=np.float64)[:, 1:]
        got = np.asarray(candidate(batch), dtype=np.float64)
        if got.shape != (len(batch), ref.shape[1] + 1):
            return ParityResult(
                float("nan"),
                0.0,
                len(histories),
                False,
                f"{name} rejected: scores of shape {got.shape}, expected "
                f"{(len(batch), ref.shape[1] + 1)}",
                threshold.model_dump(),
            )
        got = got[:, 1:]
        finite &= bool(np.isfinite(got).all())
        errors.append(float(np.abs(ref - got).max()))
        overlaps.extend([top10_overlap(ref, got)] * len(batch))
    error = max(errors) if finite else float("nan")
    overlap = float(np.mean(overlaps))
    problems = []
    if not finite:
        problems.append("NaN or infinite scores")
    elif error > threshold.max_abs_error:
        problems.append(f"max abs error {error:.3g} > {threshold.max_abs_error:g} allowed")
    if overlap < threshold.min_top10_overlap:
        problems.append(f"top-10 overlap {overlap:.4f} < {threshold.min_top10_overlap:g}")
    reason = f"{name} rejected: " + "; ".join(problems) if problems else None
    return ParityResult(
        max_abs_error=error,
        top10_overlap=round(overlap, 6),
        sequences=len(histories),
        passed=not problems,
        reason=reason,
        thresholds=threshold.model_dump(),
    )
