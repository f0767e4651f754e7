"""A throw-away copy of the project, configured for the ``tiny`` preset, for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipelines.core import project

TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "generate": {"preset": "tiny", "days": 35},
    "validate": {"min_rows": 100},
    # a small model for a few epochs: the chain, not the model's quality, is under test here
    "train": {"epochs": 2, "hidden": 32, "batch_size": 64, "max_len": 20, "progress": False},
    "optimize": {
        "parity": {"sequences": 100},
        "latency": {"batches": [1, 32], "warmup": 1, "iterations": 5},
    },
    # a two-epoch model on the tiny preset: the gate's minimums are lowered to match it
    "evaluate": {
        "golden_users": 300,
        "latency_requests": 20,
        "quality": {"bootstrap_samples": 200, "min_absolute": {"ndcg@10": 0.01, "recall@10": 0.02}},
    },
    # one server per fleet: the rollout, not the fleet's size, is under test here
    "deploy": {
        "fleets": {
            "private": {"servers": 1, "workers": 1},
            "public": {"servers": 1, "workers": 1},
        }
    },
}


def copy_project(dest: Path, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """A git-initialised copy of the project at ``dest``, with ``params.yaml`` overrides applied."""
    project.copy_project(dest)
    params_path = dest / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for section, values in (TINY_OVERRIDES if overrides is None else overrides).items():
        params.setdefault(section, {}).update(values)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def project_env() -> dict[str, str]:
    """Environment in which ``python`` and ``dvc`` are this interpreter's."""
    return project.interpreter_env()


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dvc`` in ``root`` and return the completed process (output captured)."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result
