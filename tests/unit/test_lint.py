"""The code passes the project's linters: ruff (with the DAG import policy), its formatter,
and import-linter's contracts between the packages of ``pipelines/`` and the Airflow wiring."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest


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


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'plugins'}"}
    return subprocess.run(
        [str(tool), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept(project_root: Path) -> None:
    result = _lint_imports(project_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_import_contracts_name_every_stage_module(project_root: Path) -> None:
    from pipelines.stages.table import STAGES

    config = tomllib.loads((project_root / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    stage_modules = {spec.module for spec in STAGES}
    forbidden = next(c for c in contracts if c["name"].startswith("Nothing imports a stage"))
    independent = next(c for c in contracts if c["type"] == "independence")
    assert set(forbidden["forbidden_modules"]) == stage_modules
    assert set(independent["modules"]) == stage_modules


@pytest.mark.parametrize(
    ("where", "line", "contract"),
    [
        ("pipelines/core/extra.py", "import pipelines.model.sasrec\n", "a domain stands only on"),
        (
            "pipelines/data/extra.py",
            "from pipelines.stages import train\n",
            "Nothing imports a stage",
        ),
        ("pipelines/model/extra.py", "import airflow\n", "never imports Airflow"),
        ("plugins/recflow_airflow/extra.py", "import pipelines.gate.rules\n", "sees only core"),
        (
            "pipelines/gate/extra.py",
            "import pipelines.registry.versions\n",
            "a domain stands only on",
        ),
        ("pipelines/registry/extra.py", "import pipelines.commands.registry\n", "a command module"),
        (
            "plugins/recflow_airflow/extra.py",
            "import pipelines.registry.ledger\n",
            "sees only core",
        ),
    ],
)
def test_a_broken_import_rule_fails_the_lint(
    tmp_path: Path, project_root: Path, where: str, line: str, contract: str
) -> None:
    for folder in ("pipelines", "plugins"):
        shutil.copytree(
            project_root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(project_root / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / where).write_text(line, encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(contract in row for row in broken), result.stdout
