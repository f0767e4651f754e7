"""The project root, and throw-away copies of the project for isolated runs (tests, benchmarks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def copy_project(dest: Path, root: Path = PROJECT_ROOT) -> Path:
    """Copy the tracked and untracked-not-ignored files of ``root`` to ``dest`` and git-init it.

    The copy has no outputs, no DVC cache and no virtual environment: what a fresh clone has,
    plus uncommitted work.

    Args:
        dest: Folder to create.
        root: The project to copy.

    Returns:
        ``dest``.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = Path(raw.decode())
        src = root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # a copy starts without the last run's form: its params.yaml alone decides
    from pipelines.core.params.loading import write_overlay

    if (dest / "params.yaml").is_file():
        write_overlay(dest / "params.yaml", {})
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def interpreter_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with this interpreter's folder first on
    ``PATH``, so that ``python`` and ``dvc`` in stage commands are the ones running now."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["GX_ANALYTICS_ENABLED"] = "false"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env
