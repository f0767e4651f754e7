"""Which artifacts the optimize stage builds on which machine (no GPU needed to test it)."""

from __future__ import annotations

from pathlib import Path

from pipelines.core.params import OptimizeConfig
from pipelines.serving.backends.selection import (
    INT8_DOT_FLAGS,
    Capabilities,
    cpu_flags,
    package_version,
    select_backends,
)

CPU = Capabilities(cuda=False, onnxruntime_version="1.32.0")
GPU_NO_TENSORRT = Capabilities(cuda=True, gpu_name="NVIDIA H100", compute_capability=(9, 0))
TURING_WITH_TENSORRT = Capabilities(
    cuda=True, gpu_name="Tesla T4", compute_capability=(7, 5), tensorrt_version="10.3.0"
)
AMPERE_WITH_TENSORRT = Capabilities(
    cuda=True, gpu_name="NVIDIA A10", compute_capability=(8, 6), tensorrt_version="10.3.0"
)


def _names(caps: Capabilities, **overrides: object) -> list[str]:
    selection = select_backends(caps, OptimizeConfig.model_validate(overrides))
    return [plan.name for plan in selection.plans]


def test_cpu_only_builds_onnxruntime_and_says_why_tensorrt_is_skipped() -> None:
    selection = select_backends(CPU, OptimizeConfig())
    assert [p.name for p in selection.plans] == ["onnxruntime-fp32", "onnxruntime-int8"]
    assert "no CUDA GPU" in selection.skipped["tensorrt"]


def test_int8_can_be_switched_off() -> None:
    assert _names(CPU, onnxruntime_int8=False) == ["onnxruntime-fp32"]


def test_gpu_without_tensorrt_falls_back_to_torch_compile() -> None:
    selection = select_backends(GPU_NO_TENSORRT, OptimizeConfig())
    assert "torch-compile-bf16" in [p.name for p in selection.plans]
    assert "tensorrt package is not installed" in selection.skipped["tensorrt"]
    older = Capabilities(cuda=True, gpu_name="T4", compute_capability=(7, 5))
    assert "torch-compile-fp16" in _names(older)


def test_tensorrt_engines_per_precision_and_bf16_only_where_supported() -> None:
    assert _names(AMPERE_WITH_TENSORRT)[2:] == ["tensorrt-fp16", "tensorrt-bf16", "tensorrt-int8"]
    selection = select_backends(TURING_WITH_TENSORRT, OptimizeConfig())
    names = [p.name for p in selection.plans]
    assert "tensorrt-bf16" not in names and "tensorrt-int8" in names
    assert "(7, 5)" in selection.skipped["tensorrt-bf16"]
    assert "torch-compile-fp16" not in names


def test_tensorrt_precisions_come_from_params() -> None:
    names = _names(AMPERE_WITH_TENSORRT, tensorrt={"precisions": ["fp16"]})
    assert names == ["onnxruntime-fp32", "onnxruntime-int8", "tensorrt-fp16"]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(cpuinfo) & INT8_DOT_FLAGS
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n")
    assert not cpu_flags(cpuinfo) & INT8_DOT_FLAGS
    # no cpuinfo (another OS) or no flags line: nothing is assumed
    assert cpu_flags(tmp_path / "missing") == frozenset()
    cpuinfo.write_text("processor\t: 0\n")
    assert cpu_flags(cpuinfo) == frozenset()


def test_package_version_reads_the_installed_distribution() -> None:
    import numpy

    assert package_version("numpy") == numpy.__version__
    assert package_version("no-such-package-recflow") is None
