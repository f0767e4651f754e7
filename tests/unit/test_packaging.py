"""Static checks of the packaging: the lock, the Dockerfile, the Makefile and CI entry point."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_lock_pins_every_package_and_the_cpu_torch(project_root: Path) -> None:
    lines = [
        line.strip()
        for line in (project_root / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines, "requirements.lock is empty"
    unpinned = [line for line in lines if "==" not in line]
    assert not unpinned, f"unpinned lines in requirements.lock: {unpinned[:5]}"
    pins = dict(line.split("==", 1) for line in lines)
    assert pins["torch"] == "2.13.0+cpu"
    assert pins["apache-airflow"].startswith("3.")
    assert pins["great-expectations"].startswith("1.")
    assert pins["evidently"].startswith("0.7")
    assert int(pins["pandas"].split(".")[0]) < 3
    assert not any(name.startswith("nvidia-") for name in pins), "CUDA wheels in the CPU lock"


def test_dockerfile_is_pinned_and_runs_unprivileged(project_root: Path) -> None:
    text = (project_root / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "base image must be pinned"
    assert "requirements.lock" in text
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.MULTILINE), "image must not run as root"
    for copied in ("pipelines/", "plugins/", "dags/", "dvc.yaml", "params.yaml"):
        assert copied in text


def test_makefile_has_the_documented_targets(project_root: Path) -> None:
    text = (project_root / "Makefile").read_text()
    for target in ("help", "setup", "run", "test", "lint", "bench", "drift-demo"):
        assert re.search(rf"^{target}:.*## ", text, re.MULTILINE), f"target {target} lacks ## help"


def test_ci_runs_the_readme_test_command(project_root: Path) -> None:
    ci = (project_root / ".ci" / "run").read_text()
    readme = (project_root / "README.md").read_text()
    assert "make test" in ci
    assert "make test" in readme and "make run" in readme


def test_dockerfile_passes_hadolint(project_root: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), str(project_root / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_image_installs_a_cuda_torch_and_tensorrt_10(project_root: Path) -> None:
    text = (project_root / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS gpu$", text, re.MULTILINE)
    assert "grep -v '^torch==' requirements.lock" in text
    gpu = (project_root / "docker" / "requirements-gpu.txt").read_text()
    pins = dict(line.split("==") for line in gpu.splitlines() if line and not line.startswith("#"))
    # PyPI's Linux torch is the CUDA build; "+cpu" would be the CPU one
    assert pins["torch"] == "2.13.0"
    # the engine builder uses the TensorRT 10 API that 11.x removes
    assert pins["tensorrt-cu13"].startswith("10.")
