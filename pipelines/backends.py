"""Inference backends: what this machine can run, and how each artifact is built.

- ``onnxruntime`` on the CPU, fp32 with every graph optimization, and a dynamically quantized
  INT8 variant (kept only when it passes parity), with signed weights (u8s8 kernels) on CPUs
  with 8-bit dot-product instructions (VNNI, AMX) and unsigned ones (u8u8) elsewhere;
- ``tensorrt`` engines (FP16, BF16 where the GPU has it, INT8 calibrated on validation
  sequences) when the ``tensorrt`` package and a CUDA GPU are present;
- ``torch-compile`` (CUDA graphs) when a GPU exists without TensorRT.

:func:`detect` reads the machine into :class:`Capabilities`; :func:`select_backends` turns that
and the config into the list of artifacts to build, with a reason for each one skipped.
GPU libraries are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import OptimizeConfig

log = logging.getLogger("recflow.optimize")


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers to inference backends."""

    cuda: bool = False
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    tensorrt_version: str | None = None
    onnxruntime_version: str | None = None
    cpu_int8_dot: bool = False  # the CPU has 8-bit dot-product instructions (VNNI, AMX)

    @property
    def bf16(self) -> bool:
        """BF16 tensor cores exist from Ampere (compute capability 8.0) on."""
        return self.compute_capability is not None and self.compute_capability >= (8, 0)


@dataclass(frozen=True)
class Plan:
    """One artifact to build: ``name`` is ``<backend>-<precision>``."""

    backend: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}"


@dataclass(frozen=True)
class Selection:
    """The artifacts to build and, for each backend left out, why."""

    plans: tuple[Plan, ...]
    skipped: dict[str, str] = field(default_factory=dict)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# CPU flags of the instructions that multiply u8 by s8 and sum in 32 bits
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """Feature flags of the CPU (empty where ``cpuinfo`` does not exist or has none)."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def detect() -> Capabilities:
    """Capabilities of this machine (CUDA through torch; TensorRT and ORT by their packages)."""
    import torch

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else None
    capability = tuple(torch.cuda.get_device_capability(0)) if cuda else None
    tensorrt = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt_cu12")
    return Capabilities(
        cuda=cuda,
        gpu_name=name,
        compute_capability=capability,  # type: ignore[arg-type]
        tensorrt_version=tensorrt,
        onnxruntime_version=_version("onnxruntime"),
        cpu_int8_dot=bool(cpu_flags() & INT8_DOT_FLAGS),
    )


def select_backends(caps: Capabilities, cfg: OptimizeConfig) -> Selection:
    """The artifacts to build on a machine with ``caps``.

    ONNX Runtime fp32 is always built (it is the reference artifact and the CPU fallback).
    """
    plans = [Plan("onnxruntime", "fp32")]
    skipped: dict[str, str] = {}
    if cfg.onnxruntime_int8:
        plans.append(Plan("onnxruntime", "int8"))
    if not caps.cuda:
        skipped["tensorrt"] = "no CUDA GPU on this machine: TensorRT engines are not built"
        skipped["torch-compile"] = "no CUDA GPU on this machine"
    elif caps.tensorrt_version is None:
        skipped["tensorrt"] = (
            f"GPU {caps.gpu_name} found but the tensorrt package is not installed: "
            "building the torch.compile (CUDA graphs) backend instead"
        )
        plans.append(Plan("torch-compile", "bf16" if caps.bf16 else "fp16"))
    else:
        skipped["torch-compile"] = "TensorRT is available"
        for precision in cfg.tensorrt.precisions:
            if precision == "bf16" and not caps.bf16:
                skipped["tensorrt-bf16"] = (
                    f"compute capability {caps.compute_capability} has no BF16 tensor cores"
                )
                continue
            plans.append(Plan("tensorrt", precision))
    return Selection(plans=tuple(plans), skipped=skipped)


# ONNX Runtime ---------------------------------------------------------------------------------


def ort_session(model: bytes | Path, threads: int | None) -> Any:
    """An ONNX Runtime CPU session with every graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def quantize_int8(model: Path, out: Path, *, signed_weights: bool) -> None:
    """Dynamic INT8 quantization of the MatMul and fused-attention weights.

    The activations are quantized to u8 per call; the attention scores and softmax stay fp32.

    Args:
        signed_weights: Quantize the weights to s8, for ONNX Runtime's u8s8 kernels: the fast
            ones on CPUs with VNNI or AMX. Without those instructions the u8s8 kernels sum
            pairs of products in 16 bits, which can saturate, so the weights are better u8.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the quantizer logs every tensor it leaves alone on the root logger
    logging.disable(logging.INFO)
    try:
        quantize_dynamic(
            str(model),
            str(out),
            weight_type=QuantType.QInt8 if signed_weights else QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            # shape inference stops at ONNX Runtime's contrib operators (fused attention):
            # tensors it cannot type are float
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
    finally:
        logging.disable(logging.NOTSET)


# TensorRT -------------------------------------------------------------------------------------


def _calibration_batches(histories: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(histories), batch):
        yield np.ascontiguousarray(histories[start : start + batch])


def build_tensorrt_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    cfg: OptimizeConfig,
    max_len: int,
    calibration: np.ndarray | None,
    timing_cache: Path,
) -> None:
    """Build and serialize a TensorRT engine of the serving graph.

    Optimization profiles cover batch 1 / ``typical`` / ``max``; INT8 is calibrated on
    ``calibration`` (validation histories) with an entropy calibrator; the timing cache is
    read when it exists and written back, so rebuilds on the same GPU are fast.

    Raises:
        RuntimeError: The ONNX graph does not parse or the engine does not build.
    """
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.tensorrt.workspace_mb << 20)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    batches = cfg.tensorrt.profile
    profile.set_shape(
        "history", (batches.min, max_len), (batches.opt, max_len), (batches.max, max_len)
    )
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif precision == "int8":
        if calibration is None:
            raise RuntimeError("INT8 needs calibration sequences")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_calibration_profile(profile)

        samples = calibration

        class _Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.batches = _calibration_batches(samples, batches.opt)
                self.device: torch.Tensor | None = None

            def get_batch_size(self) -> int:
                return batches.opt

            def get_batch(self, names: Sequence[str]) -> list[int] | None:
                chunk = next(self.batches, None)
                if chunk is None:
                    return None
                self.device = torch.from_numpy(chunk).cuda()
                return [int(self.device.data_ptr())]

            def read_calibration_cache(self) -> bytes | None:
                return None

            def write_calibration_cache(self, cache: bytes) -> None:
                return None

        config.int8_calibrator = _Calibrator()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build a {precision} engine from {onnx_path}")
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
