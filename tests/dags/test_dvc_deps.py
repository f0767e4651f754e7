"""Every DVC stage depends on all the code it runs, so ``dvc status`` can be trusted.

For each stage of ``dvc.yaml`` (read through DVC's API), the module its command runs is
followed through its imports inside ``pipelines/``; every file it reaches must lie under one of
the stage's ``deps``. Packages whose ``__init__.py`` holds only a docstring run no code and
are exempt. Edit a module a stage runs and DVC sees the stage as changed.

The same holds for the run overlay (``params.run.yaml``, the trigger form's values): a stage
that reads a ``params.yaml`` value a run may set lists that key of the overlay too, and no
``${...}`` in ``dvc.yaml`` names such a key (DVC templates from ``params.yaml`` alone).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipelines.core.params.run_form import RUN_KEYS, SOURCE_ROOT
from tests.dags.imports import transitive_files

MODULE = re.compile(r"-m (pipelines\.[\w.]+)")
PLACEHOLDER = re.compile(r"\$\{\s*([^}]+?)\s*\}")
RUN_VALUES = [f"{section}.{key}" for section, keys in RUN_KEYS.items() for key in keys]


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


def _params(root: Path) -> dict[str, dict[str, list[str]]]:
    """Stage name to params file to the keys it lists, as DVC reads ``dvc.yaml``."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {
            stage.name: {
                dep.def_path: list(dep.params)
                for dep in stage.deps
                if isinstance(dep, ParamsDependency)
            }
            for stage in repo.index.stages
        }


def overlay_gaps(params: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """Per stage, the run keys it reads from ``params.yaml`` but not from ``params.run.yaml``."""
    gaps = {}
    for name, files in params.items():
        read = files.get("params.yaml", [])
        wanted = [k for k in RUN_VALUES if any(k == r or k.startswith(f"{r}.") for r in read)]
        missing = sorted(set(wanted) - set(files.get("params.run.yaml", [])))
        if missing:
            gaps[name] = missing
    return gaps


def test_every_stage_tracks_the_run_values_it_reads(project_root: Path) -> None:
    params = _params(project_root)
    assert overlay_gaps(params) == {}
    # guards the check: these stages read run values, so they must list some
    assert params["train"]["params.run.yaml"] == ["train.epochs", "train.nproc_per_node"]
    assert "run.logical_date" in params["generate"]["params.run.yaml"]


def test_the_check_finds_an_untracked_run_value() -> None:
    params = {"train": {"params.yaml": ["train"], "params.run.yaml": ["train.epochs"]}}
    assert overlay_gaps(params) == {"train": ["train.nproc_per_node"]}


def test_no_run_value_is_templated(project_root: Path) -> None:
    text = (project_root / "dvc.yaml").read_text(encoding="utf-8")
    templated = set(PLACEHOLDER.findall(text))
    assert "ingest.path" in templated  # params.yaml's source is still a dependency
    offending = [
        (name, k)
        for name in templated
        for k in RUN_VALUES
        if k == name or k.startswith(f"{name}.")
        if not (name == "ingest.path" and _only_in_deps(text, name))
    ]
    assert offending == []


def _only_in_deps(text: str, name: str) -> bool:
    """``${name}`` appears only as a list item (a dependency), never in a command."""
    lines = [line.strip() for line in text.splitlines() if f"${{{name}}}" in line]
    return all(line == f"- ${{{name}}}" for line in lines)


def test_ingest_depends_on_the_folder_a_run_source_must_lie_in(
    dvc_stages: dict[str, tuple[str, list[Path]]],
) -> None:
    # a run's source path (the overlay's ingest.path) is refused outside SOURCE_ROOT, so DVC
    # hashes whatever a run may ingest
    _, deps = dvc_stages["ingest"]
    assert Path(str(SOURCE_ROOT)) in deps
