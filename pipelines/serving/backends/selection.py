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
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.params import OptimizeConfig
from pipelines.serving.manifest import Backend, Precision

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

    backend: Backend
    precision: Precision

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}"


@dataclass(frozen=True)
class Selection:
    """The artifacts to build and, for each backend left out, why."""

    plans: tuple[Plan, ...]
    skipped: dict[str, str] = field(default_factory=dict)


def package_version(package: str) -> str | None:
    """The installed version of ``package``; ``None`` where it is not installed."""
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
    tensorrt = (
        package_version("tensorrt")
        or package_version("tensorrt-cu12")
        or package_version("tensorrt_cu12")
    )
    return Capabilities(
        cuda=cuda,
        gpu_name=name,
        compute_capability=capability,  # type: ignore[arg-type]
        tensorrt_version=tensorrt,
        onnxruntime_version=package_version("onnxruntime"),
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
