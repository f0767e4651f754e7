"""The serving runtime: opens an optimized artifact by its manifest and answers requests.

    recommender = Recommender.load(Path("models/candidate/optimized"))
    items, scores = recommender.recommend(recommender.pad([[12, 7, 31], []]))

``load`` reads ``manifest.json`` and calls ``open``, which opens an artifact of a manifest
already in hand. Neither trusts anything: the manifest must name the artifact, the file must
exist and match its sha256, the session must open, and every answer is checked against the
manifest's output signature. Any of these failing raises :class:`ArtifactError` naming the
file and the problem, so a broken artifact is refused where it is loaded, never served.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.data.sequences import N_EVENT_TYPES, left_pad
from pipelines.serving.backends.onnxruntime import Runner
from pipelines.serving.manifest import (
    Artifact,
    ArtifactError,
    ArtifactManifest,
    OutputTensor,
    read_manifest,
    verify_file,
)


class Recommender:
    """One loaded artifact, answering ``history -> scores`` and ``history -> top-k`` requests."""

    def __init__(self, manifest: ArtifactManifest, entry: Artifact, runner: Runner) -> None:
        self.manifest = manifest
        self.entry = entry
        self.name: str = entry.name
        self.backend: str = entry.backend
        self.precision: str = entry.precision
        self.max_len: int = manifest.max_len
        self.n_items: int = manifest.n_items
        self.top_k: int = manifest.top_k
        # True: the history steps are step tokens with event types (data.sequences.step_tokens)
        self.event_types: bool = entry.inputs[0].steps == "tokens"
        self._runner = runner

    @classmethod
    def open(
        cls,
        manifest: ArtifactManifest,
        folder: Path,
        artifact: str | None = None,
        *,
        threads: int | None = None,
    ) -> Recommender:
        """Open the artifact of ``manifest`` named ``artifact`` (default: the shipped one).

        Args:
            manifest: The manifest describing the artifacts of ``folder``.
            folder: Where the artifact files are.
            artifact: Name of the artifact; ``None`` for the shipped one.
            threads: Intra-op threads of a CPU runtime (``None``: its default).

        Raises:
            ArtifactError: The manifest does not list the artifact (or rejected it), its file
                is missing or does not match its sha256, or the runtime cannot open it.
        """
        entry = manifest.artifact(artifact, folder=folder)
        path = verify_file(folder, entry)
        try:
            runner = _open(entry, path, manifest, threads)
        except ArtifactError:
            raise
        except Exception as exc:  # each runtime raises its own types for a bad file
            raise ArtifactError(f"artifact {entry.name}: {path} does not load: {exc}") from exc
        return cls(manifest, entry, runner)

    @classmethod
    def load(
        cls, optimized_dir: Path, artifact: str | None = None, *, threads: int | None = None
    ) -> Recommender:
        """Open the shipped artifact of ``optimized_dir`` (or the one named ``artifact``).

        Reads ``manifest.json`` and calls :meth:`open`.

        Raises:
            ArtifactError: The manifest is missing or invalid, or :meth:`open` refuses.
        """
        return cls.open(read_manifest(optimized_dir), optimized_dir, artifact, threads=threads)

    def pad(self, histories: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> np.ndarray:
        """Left-pad histories to ``[B, max_len]`` (newest steps kept; empty = cold start)."""
        return left_pad(histories, self.max_len)

    def _run(self, names: Sequence[str], history: np.ndarray) -> list[np.ndarray]:
        history = np.ascontiguousarray(history, dtype=np.int64)
        if history.ndim != 2 or history.shape[1] != self.max_len:
            raise ValueError(f"history must be [batch, {self.max_len}], not {history.shape}")
        # runtimes wrap negative indices around instead of refusing them
        limit = (self.n_items + 1) * (N_EVENT_TYPES if self.event_types else 1)
        if history.size and (history.min() < 0 or history.max() >= limit):
            what = "step tokens" if self.event_types else "item indices"
            raise ValueError(
                f"history holds {what} outside 0..{limit - 1}: "
                f"min {history.min()}, max {history.max()}"
            )
        try:
            outputs = self._runner(list(names), history)
        except Exception as exc:
            raise ArtifactError(f"artifact {self.name} failed on a request: {exc}") from exc
        expected: dict[str, OutputTensor] = {spec.name: spec for spec in self.entry.outputs}
        for name, value in zip(names, outputs, strict=True):
            spec = expected[name]
            shape = (len(history), *spec.shape[1:])
            if tuple(value.shape) != shape or str(value.dtype) != spec.dtype:
                raise ArtifactError(
                    f"artifact {self.name}: output {name} is {value.dtype}{list(value.shape)}, "
                    f"the manifest promises {spec.dtype}{list(shape)}"
                )
        return outputs

    def scores(self, history: np.ndarray) -> np.ndarray:
        """Scores of every item, ``int64 [B, max_len] -> float32 [B, n_items + 1]``."""
        return self._run(["scores"], history)[0]

    def recommend(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The top ``top_k`` items and their scores, best first."""
        items, scores = self._run(["top_items", "top_scores"], history)
        return items, scores


def _open(entry: Artifact, path: Path, manifest: ArtifactManifest, threads: int | None) -> Runner:
    """The runner of ``entry``'s backend; GPU backends import their libraries only here."""
    backend = entry.backend
    if backend == "onnxruntime":
        from pipelines.serving.backends import onnxruntime

        return onnxruntime.open_runner(entry, path, threads)
    if backend == "tensorrt":
        from pipelines.serving.backends import tensorrt

        return tensorrt.open_runner(entry, path)
    if backend == "torch-compile":
        from pipelines.serving.backends import torch_compile

        return torch_compile.open_runner(entry, path, manifest.top_k)
    raise ArtifactError(f"artifact {entry.name}: unknown backend {backend!r}")
