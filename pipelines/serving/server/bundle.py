"""A served model version: the artifact that suits this machine, its item table, warmed up.

A version folder (an optimize stage's output plus ``items.parquet``) may hold artifacts for
several machines: ONNX Runtime on the CPU, TensorRT engines or torch.compile for the GPU they
were built on. :func:`choose_artifact` picks the best one this machine can run;
:func:`load_bundle` opens it (the runtime re-checks its sha256) and answers a warm-up batch
before the bundle may serve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core.params import SHIP_ORDER
from pipelines.serving.backends.selection import Capabilities
from pipelines.serving.items import ItemTable
from pipelines.serving.manifest import ArtifactError, ArtifactManifest, read_manifest
from pipelines.serving.runtime import Recommender

log = logging.getLogger("recflow.serve")

# best first, where the machine can run them: the optimize stage's default ship order
PREFERENCE = SHIP_ORDER


def runs_here(entry: dict[str, Any], caps: Capabilities | None) -> bool:
    """Whether this machine can run the artifact: any CPU one; a GPU one only on a GPU of the
    architecture it was built for (and, for TensorRT, the same TensorRT version)."""
    device = entry.get("device") or {}
    if device.get("type", "cpu") == "cpu":
        return entry.get("backend") == "onnxruntime"
    if caps is None or not caps.cuda:
        return False
    if tuple(device.get("compute_capability") or ()) != caps.compute_capability:
        return False
    return entry.get("backend") != "tensorrt" or device.get("tensorrt") == caps.tensorrt_version


def choose_artifact(
    manifest: ArtifactManifest | dict[str, Any],
    detect: Callable[[], Capabilities] | None = None,
) -> str:
    """The artifact of ``manifest`` to serve on this machine.

    The shipped artifact if this machine can run it, else the first usable one by
    :data:`PREFERENCE`. The GPU is only probed (``detect``) when the manifest holds GPU
    artifacts, so CPU servers never import torch for it.

    Raises:
        ArtifactError: No artifact of the manifest runs here.
    """
    if isinstance(manifest, ArtifactManifest):
        manifest = manifest.model_dump(mode="json")
    usable = [a for a in manifest.get("artifacts", []) if a.get("status") != "rejected"]
    caps: Capabilities | None = None
    if any((a.get("device") or {}).get("type", "cpu") != "cpu" for a in usable):
        if detect is None:
            from pipelines.serving.backends.selection import detect as detect_machine

            detect = detect_machine
        caps = detect()
    runnable = {a["name"]: a for a in usable if runs_here(a, caps)}
    if manifest.get("shipped") in runnable:
        return str(manifest["shipped"])
    for name in PREFERENCE:
        if name in runnable:
            return name
    built = ", ".join(sorted(a.get("name", "?") for a in usable)) or "none"
    raise ArtifactError(f"no artifact runs on this machine (usable artifacts: {built})")


@dataclass
class Bundle:
    """One loaded version: its recommender, its item table and where it came from."""

    version: str
    folder: Path
    recommender: Recommender
    items: ItemTable

    @property
    def artifact(self) -> str:
        """The artifact's name (``onnxruntime-fp32``...)."""
        return self.recommender.name

    def answer(self, padded: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` item indices and scores per row, best first (``k`` capped at the catalog).

        Up to the artifact's own ``top_k`` the graph's top-k output answers; beyond it the
        full scores are ranked here.

        Raises:
            ArtifactError: The model returned a score that is not a finite number (its ranking
                means nothing): the call fails, and its requests are answered from the fallback.
        """
        top_k = self.recommender.top_k
        if k <= top_k:
            items, scores = self.recommender.recommend(padded)
            return self._finite(items[:, :k], scores[:, :k])
        scores = self.recommender.scores(padded).astype(np.float32, copy=True)
        scores[:, 0] = -np.inf  # index 0 is padding, never an item
        k = min(k, self.items.n_items)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        return self._finite(
            np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)
        )

    def _finite(self, items: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores).all(axis=1)).sum())
            raise ArtifactError(
                f"version {self.version}: the model returned non-finite scores for {bad} of "
                f"{len(scores)} request(s)"
            )
        return items, scores

    def pad_row(self, history: list[int]) -> np.ndarray:
        """One left-padded history row (newest steps kept)."""
        return self.recommender.pad([history])[0]


def load_bundle(
    version: str, folder: Path, *, threads: int, detect: Callable[[], Capabilities] | None = None
) -> Bundle:
    """Open ``folder`` as ``version`` and answer a warm-up batch.

    Raises:
        ArtifactError: No artifact runs here, the artifact is missing, tampered with or does
            not load, or the warm-up answer is out of contract.
        InputError: The item table is missing or does not match the model.
    """
    manifest = read_manifest(folder)
    artifact = choose_artifact(manifest, detect)
    recommender = Recommender.load(folder, artifact, threads=threads)
    items = ItemTable.read(folder, recommender.n_items)
    bundle = Bundle(version, folder, recommender, items)
    warm = [[], [int(i) for i in items.by_popularity[:3]]]
    top, _ = bundle.answer(recommender.pad(warm), min(recommender.top_k, items.n_items))
    if top.shape[0] != len(warm) or (top.size and (top.min() < 0 or top.max() > items.n_items)):
        raise ArtifactError(f"version {version}: the warm-up answer is out of range")
    log.info("version %s ready: %s from %s", version, artifact, folder)
    return bundle
