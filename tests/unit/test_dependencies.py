"""Every package the code imports by name is declared in ``pyproject.toml``.

A package that arrives only as another one's dependency (pydantic through Airflow, httpx
through a test client) disappears or changes version when that one does. So each tree of the
project may import the standard library, the project's own packages and the distributions of
the dependency lists it runs with: ``pipelines/``, ``plugins/`` and ``dags/`` the
``[project]`` dependencies (and the optional ``tensorrt`` extra, imported only where present),
``benchmarks/`` and ``tests/`` the ``dev`` extra too (the benchmarks' comparison servers).
Imports are read from the source (every ``import``, also inside functions); the distribution
that provides a module comes from the installed environment.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

# the project's own top-level packages and folders
FIRST_PARTY = frozenset({"pipelines", "recflow_airflow", "benchmarks", "tests", "dags"})
# the dependency lists each tree runs with: "project" and the names of optional extras
GROUPS = {
    "pipelines": ("project", "tensorrt"),
    "plugins": ("project",),
    "dags": ("project",),
    "benchmarks": ("project", "tensorrt", "dev"),
    "tests": ("project", "dev"),
}
# imported although no dependency list holds them, and why
EXEMPT = {
    # benchmarks/recbole_side.py runs in an environment of its own (.venv-recbole)
    "recbole": "benchmarks/recbole_side.py",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: dict, groups: tuple[str, ...]) -> frozenset[str]:
    """Canonical distribution names of the requirement lists ``groups`` of a parsed pyproject."""
    project = pyproject["project"]
    lines = [
        line
        for group in groups
        for line in (
            project["dependencies"]
            if group == "project"
            else project["optional-dependencies"][group]
        )
    ]
    names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line) for line in lines)
    return frozenset(_canonical(match.group(0)) for match in names if match)


def imported(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def undeclared(
    modules: set[str], allowed: frozenset[str], owners: dict[str, list[str]]
) -> dict[str, str]:
    """Each module of ``modules`` no allowed distribution provides, with what does provide it."""
    problems = {}
    for module in sorted(modules):
        if module in sys.stdlib_module_names or module in FIRST_PARTY or module in EXEMPT:
            continue
        providers = {_canonical(name) for name in owners.get(module, [])}
        if not providers:
            # an optional extra absent here (tensorrt) is declared under the module's name
            if _canonical(module) not in allowed:
                problems[module] = "not installed"
        elif not providers & allowed:
            problems[module] = f"from {', '.join(sorted(providers))}, not declared"
    return problems


@pytest.fixture(scope="module")
def pyproject(project_root: Path) -> dict:
    return tomllib.loads((project_root / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("tree", sorted(GROUPS))
def test_every_imported_package_is_declared(project_root: Path, pyproject: dict, tree: str) -> None:
    allowed = declared(pyproject, GROUPS[tree])
    owners = packages_distributions()
    problems = {}
    for path in sorted((project_root / tree).rglob("*.py")):
        found = undeclared(imported(path.read_text(encoding="utf-8")), allowed, owners)
        for module, why in found.items():
            problems[f"{path.relative_to(project_root)}: {module}"] = why
    assert not problems, f"imports missing from pyproject.toml ({GROUPS[tree]}): {problems}"


def test_the_check_finds_an_undeclared_package() -> None:
    source = "import os\nimport yaml\nfrom httpx import Client\nfrom pipelines.core import io\n"
    owners = {"yaml": ["PyYAML"], "httpx": ["httpx"]}
    allowed = frozenset({"pyyaml"})
    assert undeclared(imported(source), allowed, owners) == {"httpx": "from httpx, not declared"}
    assert undeclared({"nowhere"}, allowed, owners) == {"nowhere": "not installed"}
    assert undeclared({"nowhere"}, allowed | {"nowhere"}, owners) == {}


def test_requirements_are_read_by_name_without_versions_extras_or_markers() -> None:
    pyproject = {
        "project": {
            "dependencies": ["dvc[s3]==3.67.1", "ruamel.yaml>=0.18", "Jinja2>=3.1"],
            "optional-dependencies": {"dev": ["types-PyYAML ; python_version >= '3.11'"]},
        }
    }
    assert declared(pyproject, ("project",)) == {"dvc", "ruamel-yaml", "jinja2"}
    assert declared(pyproject, ("dev",)) == {"types-pyyaml"}
