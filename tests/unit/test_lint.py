"""The code passes the project's linters: ruff (with the DAG import policy) and its formatter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _ruff(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ruff = Path(sys.executable).with_name("ruff")
    return subprocess.run([str(ruff), *args], cwd=root, capture_output=True, text=True, timeout=300)


def test_ruff_check_passes(project_root: Path) -> None:
    result = _ruff(project_root, "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean(project_root: Path) -> None:
    result = _ruff(project_root, "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dag_import_policy_is_enforced(tmp_path: Path, project_root: Path) -> None:
    """A DAG file importing pandas at module level is flagged by the configured rule."""
    dag = tmp_path / "dags" / "bad_dag.py"
    dag.parent.mkdir()
    dag.write_text("import pandas\n\nprint(pandas.__version__)\n")
    config = project_root / "pyproject.toml"
    result = _ruff(tmp_path, "check", "--no-cache", "--config", str(config), "dags/bad_dag.py")
    assert result.returncode != 0
    assert "TID253" in result.stdout
