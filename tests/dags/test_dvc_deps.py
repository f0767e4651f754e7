"""Every DVC stage depends on all the code it runs, so ``dvc status`` can be trusted.

For each stage of ``dvc.yaml`` (read through DVC's API), the module its command runs is
followed through its imports inside ``pipelines/``; every file it reaches must lie under one of
the stage's ``deps``. Packages whose ``__init__.py`` holds only a docstring run no code and
are exempt. Edit a module a stage runs and DVC sees the stage as changed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.dags.imports import transitive_files

MODULE = re.compile(r"-m (pipelines\.[\w.]+)")


def _dvc_stages(root: Path) -> dict[str, tuple[str, list[Path]]]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = {}
        for stage in repo.index.stages:
            if getattr(stage, "cmd", None) is None:
                continue
            deps = [Path(dep.def_path) for dep in stage.deps]
            stages[stage.name] = (str(stage.cmd), deps)
        return stages


def _runs_code(path: Path) -> bool:
    if path.name != "__init__.py":
        return True
    body = ast.parse(path.read_text(encoding="utf-8")).body
    docstring_only = len(body) == 1 and isinstance(body[0], ast.Expr)
    return not (docstring_only or not body)


def uncovered(root: Path, module: str, deps: list[Path]) -> list[str]:
    """Files of ``pipelines/`` that ``module`` runs and no entry of ``deps`` covers."""
    files = [f for f in transitive_files(root, module) if _runs_code(root / f)]
    return sorted(str(f) for f in files if not any(f == d or d in f.parents for d in deps))


@pytest.fixture(scope="module")
def dvc_stages(project_root: Path) -> dict[str, tuple[str, list[Path]]]:
    return _dvc_stages(project_root)


def test_every_stage_runs_a_stage_module(dvc_stages: dict[str, tuple[str, list[Path]]]) -> None:
    for name, (cmd, _) in dvc_stages.items():
        match = MODULE.search(cmd)
        assert match, f"{name}: no 'python -m pipelines...' in {cmd!r}"
        assert match.group(1) == f"pipelines.stages.{name}", f"{name} runs {match.group(1)}"


def test_every_stage_depends_on_the_code_it_runs(
    project_root: Path, dvc_stages: dict[str, tuple[str, list[Path]]]
) -> None:
    problems = {}
    for name, (cmd, deps) in dvc_stages.items():
        match = MODULE.search(cmd)
        assert match is not None
        missing = uncovered(project_root, match.group(1), deps)
        if missing:
            problems[name] = missing
    assert not problems, f"dvc.yaml stages miss code they run as deps: {problems}"


def test_the_check_finds_a_missing_dependency(project_root: Path) -> None:
    # train runs the model package; without it in its deps the check must complain
    missing = uncovered(project_root, "pipelines.stages.train", [Path("pipelines/stages/train.py")])
    assert "pipelines/model/sasrec.py" in missing
    assert "pipelines/core/params/training.py" in missing
    assert "pipelines/data/prepared.py" in missing
