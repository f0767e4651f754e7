"""What a benchmark ran on, recorded beside its numbers."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from pipelines.serving.backends.selection import cpu_flags


def _first_value(path: str, key: str) -> str | None:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


# vector extensions that decide which CPU kernels (fp32, bf16, INT8) are fast
_VECTOR_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
)


def machine_info() -> dict[str, Any]:
    """CPU model, its vector extensions, usable cores, memory, Python and platform.

    Returns:
        ``cpu`` (model name from ``/proc/cpuinfo``), ``vector_extensions`` (those of
        ``avx2``, ``fma``, AVX-512, VNNI and AMX the CPU reports), ``cores`` (cores this process
        may use), ``cpu_count`` (cores the system reports), ``memory_gb``, ``python`` and
        ``platform``.
    """
    flags = cpu_flags()
    memory_kb = _first_value("/proc/meminfo", "MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {
        "cpu": _first_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "vector_extensions": [flag for flag in _VECTOR_FLAGS if flag in flags],
        "cores": usable,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(int(memory_kb.split()[0]) / 1024**2, 1) if memory_kb else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
