"""Shared fixtures: the project root, and a clean environment for subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# scratch DVC repositories made by tests must not try to send usage analytics
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root."""
    return PROJECT_ROOT


# The modules that take longest on the 2-core CI machine (minutes each: Airflow runs, the browser),
# in that order. make test's workers (pytest-xdist, a module per worker, --no-loadscope-reorder)
# take modules in collection order as they free up: long ones first, then the other modules with
# slow tests, then the rest, so that short modules fill in beside the long ones instead of two
# long ones ending the suite side by side.
LONGEST_FIRST = (
    "tests/integration/test_drift_demo.py",
    "tests/integration/test_reliability.py",
    "tests/integration/test_browser.py",
    "tests/integration/test_airflow_run.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order modules longest first (see :data:`LONGEST_FIRST`); a module's tests keep their
    order."""
    rank: dict[str, int] = {}
    for item in items:
        module = Path(str(item.path)).relative_to(PROJECT_ROOT).as_posix()
        group = (
            LONGEST_FIRST.index(module)
            if module in LONGEST_FIRST
            else len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)
        )
        rank[module] = min(rank.get(module, group), group)
    items.sort(key=lambda item: rank[Path(str(item.path)).relative_to(PROJECT_ROOT).as_posix()])
