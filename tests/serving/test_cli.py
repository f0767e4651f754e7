"""``recflow serve``'s command line: a store of the model registry given as ``--registry``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_a_model_registry_store_as_registry_folder_names_the_cloud_option(
    project_root: Path, tmp_path: Path
) -> None:
    shutil.copy(project_root / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "stores" / "private").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--registry", "stores/private"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert (
        "stores/private is the private cloud's store of the model registry: "
        "serve from it with --cloud private --version V"
    ) in result.stderr
    assert "Traceback" not in result.stderr
