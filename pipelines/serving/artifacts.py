"""Stage ``optimize``: serving artifacts of the trained model, each checked against it.

    python -m pipelines.serving.artifacts --params params.yaml --model models/candidate/model.pt \\
        --prepared data/prepared --out models/candidate/optimized --metrics metrics/optimize.json

1. writes the serving graph to ONNX with a dynamic batch axis: ``model.onnx`` for ONNX
   Runtime with its fused attention kernels (``pipelines/ort_graph.py``), and, for TensorRT,
   the portable ``torch.onnx`` export of ``pipelines/export.py`` (standard operators only);
2. builds the artifacts this machine can run (``pipelines/backends.py``): ONNX Runtime fp32 and
   INT8 on the CPU (signed weights where the CPU has VNNI or AMX); TensorRT FP16/BF16/INT8
   engines where a CUDA GPU and TensorRT exist; a torch.compile backend on a GPU without
   TensorRT;
3. checks each against the fp32 PyTorch model on held-out histories (``pipelines/parity.py``):
   a failing artifact is listed as rejected with its numbers and its file is not kept;
4. ships the first passing artifact of ``optimize.ship_order``;
5. times torch eager and every kept artifact at each batch size into ``--metrics``.

``--out`` holds ``manifest.json`` (:class:`~pipelines.serving.manifest.ArtifactManifest`),
its schema ``manifest.schema.json`` and the kept files, written as a whole or not at all; the
manifest has no timings, so a rerun on the same model gives the same bytes.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.io import atomic_dir, sha256_file, write_json
from pipelines.core.params import OptimizeConfig
from pipelines.data.prepared import load_prepared
from pipelines.data.sequences import left_pad
from pipelines.model.sasrec import ModelSpec, SASRec
from pipelines.model.saved import load_model, saved_protocol
from pipelines.serving.backends.onnxruntime import quantize_int8
from pipelines.serving.backends.selection import (
    Capabilities,
    Plan,
    detect,
    package_version,
    select_backends,
)
from pipelines.serving.backends.tensorrt import build_tensorrt_engine
from pipelines.serving.graph.onnxruntime import build_onnxruntime_graph
from pipelines.serving.graph.torch_export import INPUT, export_onnx
from pipelines.serving.items import write_item_table
from pipelines.serving.latency import Timing, measure_side_by_side
from pipelines.serving.manifest import (
    MANIFEST_VERSION,
    Artifact,
    ArtifactManifest,
    CpuDevice,
    CudaDevice,
    Device,
    HistoryInput,
    ModelSpecRecord,
    OutputTensor,
    write_manifest,
)
from pipelines.serving.parity import ParityResult, Scorer, check_parity, eager_scorer
from pipelines.serving.runtime import Recommender

log = logging.getLogger("recflow.optimize")

# the parity and latency sample is drawn with this seed: the same sequences on every run
SAMPLE_SEED = 20261122
# the portable export TensorRT builds from (standard operators); not kept once engines exist
PORTABLE_ONNX = "model.portable.onnx"


class NoArtifactPassed(RecflowError):
    """Every artifact failed parity: there is nothing that may be served."""

    exit_code = 1


def _versions(*packages: str) -> dict[str, str]:
    """Python's version and those of the ``packages`` that are installed."""
    found = {"python": platform.python_version()}
    for package in packages:
        version = package_version(package)
        if version is not None:
            found[package] = version
    return found


def _new_artifact(plan: Plan, spec: ModelSpec, top_k: int) -> Artifact:
    """The manifest entry of an artifact about to be built: its name and signature."""
    # "tokens": each step is item + (n_items + 1) * event code (pipelines.data.sequences)
    steps: Literal["items", "tokens"] = "tokens" if spec.event_types else "items"
    history = HistoryInput(name=INPUT, dtype="int64", shape=("batch", spec.max_len), steps=steps)
    return Artifact(
        name=plan.name,
        backend=plan.backend,
        precision=plan.precision,
        status="candidate",
        inputs=(history,),
        outputs=(
            OutputTensor(name="scores", dtype="float32", shape=("batch", spec.n_items + 1)),
            OutputTensor(name="top_items", dtype="int64", shape=("batch", top_k)),
            OutputTensor(name="top_scores", dtype="float32", shape=("batch", top_k)),
        ),
    )


def held_out_histories(prepared: Path, spec: ModelSpec, count: int) -> np.ndarray:
    """A fixed, seeded sample of ``count`` test histories as ``spec`` reads them, left-padded."""
    data = load_prepared(prepared, event_types=spec.event_types)
    histories = data.model_inputs("test" if data.test_history else "valid", spec.event_types)
    rng = np.random.default_rng(SAMPLE_SEED)
    rows = np.sort(rng.choice(len(histories), size=min(count, len(histories)), replace=False))
    return left_pad([histories[row] for row in rows], spec.max_len)


def calibration_histories(prepared: Path, spec: ModelSpec, count: int) -> np.ndarray:
    """Validation histories for INT8 calibration (never the test ones parity is judged on)."""
    data = load_prepared(prepared, event_types=spec.event_types)
    return left_pad(data.model_inputs("valid", spec.event_types)[:count], spec.max_len)


def _build(
    plan: Plan,
    folder: Path,
    cfg: OptimizeConfig,
    caps: Capabilities,
    model_path: Path,
    prepared: Path,
    spec: ModelSpec,
) -> tuple[str, Device]:
    """Build one artifact in ``folder``; returns its file name and device details."""
    onnx_file = folder / "model.onnx"
    if plan.name == "onnxruntime-fp32":
        return "model.onnx", CpuDevice()
    if plan.name == "onnxruntime-int8":
        signed = caps.cpu_int8_dot
        quantize_int8(onnx_file, folder / "model.int8.onnx", signed_weights=signed)
        # an s8 artifact still loads on a CPU without VNNI, but is slower there and may saturate
        return "model.int8.onnx", CpuDevice(int8_kernels="u8s8" if signed else "u8u8")
    if plan.backend == "tensorrt":
        calibration = None
        if plan.precision == "int8":
            calibration = calibration_histories(prepared, spec, cfg.tensorrt.calibration_sequences)
        engine = f"model.{plan.precision}.engine"
        portable = folder / PORTABLE_ONNX
        if not portable.is_file():
            portable.write_bytes(export_onnx(load_model(model_path), cfg.top_k, opset=cfg.opset))
        build_tensorrt_engine(
            portable,
            folder / engine,
            plan.precision,
            cfg,
            spec.max_len,
            calibration,
            folder / "timing.cache",
        )
        return engine, CudaDevice(
            gpu=caps.gpu_name,
            compute_capability=caps.compute_capability,
            tensorrt=caps.tensorrt_version,
        )
    if plan.backend == "torch-compile":
        target = folder / "model.pt"
        target.write_bytes(model_path.read_bytes())
        return "model.pt", CudaDevice(gpu=caps.gpu_name, compute_capability=caps.compute_capability)
    raise ValueError(f"no builder for {plan.name}")


def optimize(
    cfg: OptimizeConfig,
    model_path: Path,
    prepared: Path,
    out: Path,
    *,
    metrics: Path | None = None,
    caps: Capabilities | None = None,
) -> ArtifactManifest:
    """Build, check and record the serving artifacts of ``model_path`` in ``out``.

    Args:
        cfg: The ``optimize`` section.
        model_path: The train stage's ``model.pt``.
        prepared: The prepare stage's folder (held-out histories for parity and timing).
        out: Folder for ``manifest.json`` and the artifacts (replaced as a whole).
        metrics: Where to write parity and latency numbers for DVC.
        caps: The machine's capabilities; detected when not given.

    Returns:
        The manifest.

    Raises:
        InputError: The model or the prepared data is missing, corrupt, or they do not match.
        NoArtifactPassed: No artifact passed parity (nothing is written).
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model = load_model(model_path)
    spec = model.spec
    n_items = load_prepared(prepared).n_items
    if n_items != spec.n_items:
        raise InputError(
            f"{model_path} scores {spec.n_items} items but {prepared} has {n_items}: "
            "the model was trained on other prepared data"
        )
    if cfg.top_k > spec.n_items:
        raise InputError(f"optimize.top_k={cfg.top_k} exceeds the {spec.n_items} items")
    histories = held_out_histories(prepared, spec, cfg.parity.sequences)
    caps = caps or detect()
    selection = select_backends(caps, cfg)
    for backend, reason in selection.skipped.items():
        log.info("skipping %s: %s", backend, reason)
    reference = eager_scorer(model)
    # the manifest without its artifacts: each artifact is opened through one while it is checked
    base = ArtifactManifest(
        schema_version=MANIFEST_VERSION,
        model_sha256=sha256_file(model_path),
        spec=ModelSpecRecord(**spec.to_dict()),
        protocol=saved_protocol(model_path),
        max_len=spec.max_len,
        n_items=spec.n_items,
        top_k=cfg.top_k,
        shipped="",
        skipped=dict(sorted(selection.skipped.items())),
        artifacts=(),
    )

    artifacts: list[Artifact] = []
    with atomic_dir(out) as folder:
        started = time.perf_counter()
        graph = build_onnxruntime_graph(model, cfg.top_k, opset=cfg.opset)
        (folder / "model.onnx").write_bytes(graph)
        log.info("exported the serving graph to ONNX in %.1f s", time.perf_counter() - started)
        for plan in selection.plans:
            started = time.perf_counter()
            entry = _new_artifact(plan, spec, cfg.top_k)
            try:
                file, device = _build(plan, folder, cfg, caps, model_path, prepared, spec)
            except Exception as exc:  # a backend that cannot build is reported, not fatal
                log.warning("%s could not be built: %s", plan.name, exc)
                update = {"status": "rejected", "reason": f"build failed: {exc}"}
                artifacts.append(entry.model_copy(update=update))
                continue
            entry = entry.model_copy(
                update={
                    "file": file,
                    "device": device,
                    "sha256": sha256_file(folder / file),
                    "size_bytes": (folder / file).stat().st_size,
                    "versions": _versions(
                        "torch",
                        "onnx",
                        "onnxruntime",
                        *(("tensorrt",) if plan.backend == "tensorrt" else ()),
                    ),
                }
            )
            parity = _parity(plan, folder, base, entry, reference, histories, cfg)
            entry = entry.model_copy(
                update={
                    "parity": parity.record(),
                    "status": "candidate" if parity.passed else "rejected",
                    "reason": parity.reason,
                }
            )
            if parity.passed:
                log.info(
                    "%s built in %.1f s: max abs error %.2g, top-10 overlap %.4f (%d sequences)",
                    plan.name,
                    time.perf_counter() - started,
                    parity.max_abs_error,
                    parity.top10_overlap,
                    parity.sequences,
                )
            else:
                log.warning("%s", parity.reason)
            artifacts.append(entry)
        shipped = _ship(artifacts, cfg)
        kept = _prune(folder, [_shipped(a, shipped) for a in artifacts])
        # what the item indices mean in the catalog: a served bundle needs it beside the model
        write_item_table(prepared, folder)
        manifest = base.model_copy(update={"shipped": shipped, "artifacts": tuple(kept)})
        # validated once whole: the copies above are not
        manifest = ArtifactManifest.model_validate(manifest.model_dump())
        write_manifest(folder, manifest)
        log.info("shipping %s", shipped)
    if metrics is not None:
        timings = time_artifacts(model, out, manifest, histories, cfg)
        write_json(metrics, _metrics(manifest, timings))
    return manifest


def _parity(
    plan: Plan,
    folder: Path,
    base: ArtifactManifest,
    entry: Artifact,
    reference: Scorer,
    histories: np.ndarray,
    cfg: OptimizeConfig,
) -> ParityResult:
    threshold = cfg.parity.thresholds.get(plan.precision)
    if threshold is None:
        raise InputError(f"optimize.parity.thresholds has no entry for {plan.precision}")
    # a manifest of this one artifact, to open it as serving will
    alone = base.model_copy(update={"shipped": entry.name, "artifacts": (entry,)})
    try:
        recommender = Recommender.open(alone, folder, entry.name, threads=cfg.threads)
    except RecflowError as exc:
        return ParityResult(
            float("nan"), 0.0, 0, False, f"{plan.name} rejected: {exc}", threshold.model_dump()
        )
    return check_parity(plan.name, reference, recommender.scores, histories, threshold)


def _ship(artifacts: Sequence[Artifact], cfg: OptimizeConfig) -> str:
    """The name of the first artifact of ``optimize.ship_order`` that passed parity."""
    passing = {a.name for a in artifacts if a.status == "candidate"}
    for name in cfg.ship_order:
        if name in passing:
            return name
    reasons = "; ".join(a.reason or a.name for a in artifacts if a.status == "rejected")
    if passing:
        raise NoArtifactPassed(
            f"artifacts {sorted(passing)} passed parity but none is in optimize.ship_order"
        )
    raise NoArtifactPassed(f"no artifact passed parity, nothing is shipped: {reasons}")


def _shipped(artifact: Artifact, shipped: str) -> Artifact:
    return (
        artifact.model_copy(update={"status": "shipped"}) if artifact.name == shipped else artifact
    )


def _prune(folder: Path, artifacts: Sequence[Artifact]) -> list[Artifact]:
    """Remove the files of rejected artifacts (the fp32 ONNX stays: others derive from it).

    Returns:
        The artifacts, a rejected one whose file stays saying why.
    """
    kept = {a.file for a in artifacts if a.status != "rejected"} | {"model.onnx"}
    for path in folder.iterdir():
        if path.name not in kept and path.name != "timing.cache":
            path.unlink()
    because = {"kept_because": "the other artifacts are built from it"}
    return [
        a.model_copy(update=because) if a.status == "rejected" and a.file in kept else a
        for a in artifacts
    ]


def time_artifacts(
    model: SASRec,
    folder: Path,
    manifest: ArtifactManifest,
    histories: np.ndarray,
    cfg: OptimizeConfig,
    extra: Mapping[tuple[str, str], Callable[[np.ndarray], object]] | None = None,
) -> list[Timing]:
    """Latency of torch eager and of every kept artifact, side by side on the same requests.

    ``extra`` scorers, keyed by ``(backend, precision)``, take their turns among them.
    """
    latency = cfg.latency
    scorers: dict[tuple[str, str], Callable[[np.ndarray], object]] = {
        ("torch-eager", "fp32"): eager_scorer(model)
    }
    for artifact in manifest.artifacts:
        if artifact.status != "rejected":
            recommender = Recommender.open(manifest, folder, artifact.name, threads=cfg.threads)
            scorers[(artifact.backend, artifact.precision)] = recommender.scores
    scorers.update(extra or {})
    timings = measure_side_by_side(
        scorers,
        histories,
        latency.batches,
        warmup=latency.warmup,
        iterations=latency.iterations,
        rounds=latency.rounds,
        settle_s=latency.settle_s,
    )
    for timing in timings:
        log.info(
            "%s %s batch %d: p50 %.3f ms, p99 %.3f ms, %.0f sequences/s",
            timing.backend,
            timing.precision,
            timing.batch,
            timing.p50_ms,
            timing.p99_ms,
            timing.items_per_s,
        )
    return timings


def _metrics(manifest: ArtifactManifest, timings: Sequence[Timing]) -> dict[str, Any]:
    parity = {
        a.name: {
            "passed": a.status != "rejected",
            "max_abs_error": a.parity.max_abs_error if a.parity else None,
            "top10_overlap": a.parity.top10_overlap if a.parity else None,
        }
        for a in manifest.artifacts
    }
    # keyed by backend, then batch size
    latency: dict[str, dict[str, dict[str, float]]] = {
        f"{t.backend}-{t.precision}": {} for t in timings
    }
    for t in timings:
        latency[f"{t.backend}-{t.precision}"][f"batch_{t.batch}"] = {
            "p50_ms": t.p50_ms,
            "p99_ms": t.p99_ms,
            "items_per_s": t.items_per_s,
        }
    return {"shipped": manifest.shipped, "parity": parity, "latency": latency}
