"""The files of ``pipelines/`` a module runs: its imports, followed transitively, as text.

Read from the source with ``ast`` (nothing is imported): ``import a.b``, ``from a.b import c``
(``c`` a submodule or a name), imports inside functions too, since they run when the function
does; only ``if TYPE_CHECKING:`` blocks are left out. A module's packages count as well:
Python runs every ``__init__.py`` on the way down.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_file(root: Path, module: str) -> Path | None:
    """The file of ``module`` under ``root`` (a module or a package), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        stack.extend(ast.iter_child_nodes(node))
    return names


def _with_packages(root: Path, module: str) -> list[Path]:
    parts = module.split(".")
    files = [module_file(root, ".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def transitive_files(root: Path, module: str, package: str = "pipelines") -> set[Path]:
    """Every file of ``package`` that running ``module`` (``python -m module``) executes.

    Args:
        root: The project root (the folder holding ``package``).
        module: Dotted module name.
        package: Only imports inside this top-level package are followed.

    Returns:
        The files, relative to ``root``.
    """
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for path in _with_packages(root, name):
            if path in seen:
                continue
            seen.add(path)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            todo += [n for n in _imported(tree) if n.split(".")[0] == package]
    return {path.relative_to(root) for path in seen}
