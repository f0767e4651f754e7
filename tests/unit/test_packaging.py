"""Static checks of the packaging: the lock, the Makefile and the CI entry point (the images:
test_docker_images.py)."""

from __future__ import annotations

import re
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


def test_makefile_has_the_documented_targets(project_root: Path) -> None:
    text = (project_root / "Makefile").read_text()
    targets = ("help", "setup", "run", "up", "down", "test", "lint", "bench", "bench-scale")
    for target in (*targets, "drift-demo"):
        assert re.search(rf"^{target}:.*## ", text, re.MULTILINE), f"target {target} lacks ## help"


def test_ci_runs_the_readme_test_command(project_root: Path) -> None:
    ci = (project_root / ".ci" / "run").read_text()
    readme = (project_root / "README.md").read_text()
    assert "make test" in ci
    assert "make test" in readme and "make run" in readme


def test_make_lint_runs_hadolint_on_every_dockerfile(project_root: Path) -> None:
    text = (project_root / "Makefile").read_text()
    lint = text[text.index("\nlint:") : text.index("\nformat:")]
    assert "$(BIN)/hadolint docker/*Dockerfile" in lint
