"""The serving runtime: opens an optimized artifact by its manifest and answers requests.

    recommender = Recommender.load(Path("models/candidate/optimized"))
    items, scores = recommender.recommend(recommender.pad([[12, 7, 31], []]))

``load`` trusts nothing: the manifest must name the artifact, the file must exist and match its
sha256, the session must open, and every answer is checked against the manifest's output
signature. Any of these failing raises :class:`ArtifactError` naming the file and the problem,
so a broken artifact is refused where it is loaded, never served.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import InputError
from pipelines.io import sha256_file
from pipelines.model import N_EVENT_TYPES, left_pad

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ArtifactError(InputError):
    """An optimized artifact is missing, tampered with, unloadable or answers out of contract."""


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an optimized folder.

    Raises:
        ArtifactError: It is missing, not JSON, or of another format.
    """
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} not found (run the optimize stage first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{path} is not a format-{MANIFEST_FORMAT} artifact manifest")
    return manifest


def _entry(manifest: dict[str, Any], folder: Path, name: str | None) -> dict[str, Any]:
    wanted = name or manifest.get("shipped")
    if not wanted:
        raise ArtifactError(f"{folder / MANIFEST} ships no artifact")
    for entry in manifest.get("artifacts", []):
        if entry.get("name") == wanted:
            if entry.get("status") == "rejected":
                raise ArtifactError(f"artifact {wanted} was rejected: {entry.get('reason')}")
            return dict(entry)
    raise ArtifactError(f"{folder / MANIFEST} lists no artifact named {wanted!r}")


def verify_file(folder: Path, entry: dict[str, Any]) -> Path:
    """The artifact's file, after checking it exists and matches the manifest's sha256."""
    path = folder / str(entry.get("file", ""))
    if not entry.get("file") or not path.is_file():
        raise ArtifactError(f"artifact {entry.get('name')}: file {path} is missing")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise ArtifactError(
            f"artifact {entry.get('name')}: {path} has sha256 {digest[:12]}…, the manifest "
            f"says {str(entry.get('sha256'))[:12]}…: the file was changed after it was built"
        )
    return path


class Recommender:
    """One loaded artifact, answering ``history -> scores`` and ``history -> top-k`` requests."""

    def __init__(self, entry: dict[str, Any], manifest: dict[str, Any], runner: _Runner) -> None:
        self.name: str = entry["name"]
        self.backend: str = entry["backend"]
        self.precision: str = entry["precision"]
        self.max_len: int = int(manifest["max_len"])
        self.n_items: int = int(manifest["n_items"])
        self.top_k: int = int(manifest["top_k"])
        # True: the history steps are step tokens with event types (pipelines.model.step_tokens)
        self.event_types: bool = entry["inputs"][0].get("steps") == "tokens"
        self.entry = entry
        self._runner = runner

    @classmethod
    def load(
        cls, optimized_dir: Path, artifact: str | None = None, *, threads: int | None = None
    ) -> Recommender:
        """Open the shipped artifact of ``optimized_dir`` (or the one named ``artifact``).

        Raises:
            ArtifactError: The manifest or file is missing, the file does not match its
                sha256, or the runtime cannot open it.
        """
        manifest = read_manifest(optimized_dir)
        entry = _entry(manifest, optimized_dir, artifact)
        path = verify_file(optimized_dir, entry)
        try:
            runner = _open(entry, path, manifest, threads)
        except ArtifactError:
            raise
        except Exception as exc:  # each runtime raises its own types for a bad file
            raise ArtifactError(f"artifact {entry['name']}: {path} does not load: {exc}") from exc
        return cls(entry, manifest, runner)

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
        expected = {spec["name"]: spec for spec in self.entry["outputs"]}
        for name, value in zip(names, outputs, strict=True):
            spec = expected[name]
            shape = (len(history), *spec["shape"][1:])
            if tuple(value.shape) != shape or str(value.dtype) != spec["dtype"]:
                raise ArtifactError(
                    f"artifact {self.name}: output {name} is {value.dtype}{list(value.shape)}, "
                    f"the manifest promises {spec['dtype']}{list(shape)}"
                )
        return outputs

    def scores(self, history: np.ndarray) -> np.ndarray:
        """Scores of every item, ``int64 [B, max_len] -> float32 [B, n_items + 1]``."""
        return self._run(["scores"], history)[0]

    def recommend(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The top ``top_k`` items and their scores, best first."""
        items, scores = self._run(["top_items", "top_scores"], history)
        return items, scores


_Runner = Callable[[list[str], np.ndarray], list[np.ndarray]]


def _open(
    entry: dict[str, Any], path: Path, manifest: dict[str, Any], threads: int | None
) -> _Runner:
    backend = entry.get("backend")
    if backend == "onnxruntime":
        from pipelines.backends import ort_session

        session = ort_session(path, threads)
        inputs = [node.name for node in session.get_inputs()]
        if inputs != ["history"]:
            raise ArtifactError(f"artifact {entry['name']}: inputs {inputs}, expected ['history']")

        def run_onnx(names: list[str], history: np.ndarray) -> list[np.ndarray]:
            return list(session.run(names, {"history": history}))

        return run_onnx
    if backend == "tensorrt":
        return _open_tensorrt(entry, path)
    if backend == "torch-compile":
        return _open_torch_compile(entry, path, manifest)
    raise ArtifactError(f"artifact {entry.get('name')}: unknown backend {backend!r}")


def _open_tensorrt(entry: dict[str, Any], path: Path) -> _Runner:
    """A TensorRT engine on the current GPU (built for its compute capability)."""
    import tensorrt as trt
    import torch

    device = entry.get("device") or {}
    here = tuple(torch.cuda.get_device_capability(0))
    built = tuple(device.get("compute_capability") or ())
    if built != here or device.get("tensorrt") != trt.__version__:
        raise ArtifactError(
            f"engine {path} was built for compute capability {built} with TensorRT "
            f"{device.get('tensorrt')}; this GPU is {here} with TensorRT {trt.__version__}"
        )
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ArtifactError(f"{path} is not a TensorRT engine")
    context = engine.create_execution_context()
    dtypes = {"scores": torch.float32, "top_items": torch.int64, "top_scores": torch.float32}

    def run_engine(names: list[str], history: np.ndarray) -> list[np.ndarray]:
        batch = torch.from_numpy(history).cuda()
        context.set_input_shape("history", tuple(batch.shape))
        context.set_tensor_address("history", batch.data_ptr())
        outputs = {}
        for name, dtype in dtypes.items():
            shape = tuple(context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return [outputs[name].cpu().numpy() for name in names]

    return run_engine


def _open_torch_compile(entry: dict[str, Any], path: Path, manifest: dict[str, Any]) -> _Runner:
    """The serving graph compiled by torch.compile with CUDA graphs, in reduced precision."""
    import torch

    from pipelines.export import ScoringGraph, load_model

    graph = ScoringGraph(load_model(path), int(manifest["top_k"])).cuda().eval()
    compiled = torch.compile(graph, mode="reduce-overhead", dynamic=False)
    dtype = torch.bfloat16 if entry["precision"] == "bf16" else torch.float16

    def run_compiled(names: list[str], history: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
            scores, items, top = compiled(torch.from_numpy(history).cuda())
        values = {"scores": scores.float(), "top_items": items, "top_scores": top.float()}
        return [values[name].cpu().numpy() for name in names]

    return run_compiled
