"""Session fixtures for the Airflow run: a copy of the project and one migrated Airflow home.

The copy holds the project's tracked and untracked-not-ignored files (``git ls-files -co
--exclude-standard``), is its own git repository, and runs the ``tiny`` generator preset with
small validation thresholds. Migrating Airflow's SQLite database is slow, so one Airflow home
serves the whole session.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipelines.core.params import load_params
from pipelines.registry.loopback import loopback_s3
from pipelines.run_all import airflow_env
from tests.integration.project import TINY_OVERRIDES, copy_project

# a failing stage fails the same way on a retry: do not wait out retry delays in tests
AIRFLOW_OVERRIDES = {**TINY_OVERRIDES, "airflow": {"retries": 0}}


def airflow(
    root: Path, home: Path, *args: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``airflow`` command line for the project at ``root`` with Airflow home ``home``."""
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        cwd=root,
        env={**airflow_env(root, home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def airflow_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git-initialised copy of the project, configured for a small, fast run."""
    return copy_project(tmp_path_factory.mktemp("airflow") / "project", AIRFLOW_OVERRIDES)


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, airflow_project: Path) -> Path:
    """An Airflow home with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp("airflow-home")
    result = airflow(airflow_project, home, "db", "migrate")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home


@pytest.fixture(scope="session")
def loopback(airflow_project: Path) -> Iterator[dict[str, str]]:
    """The loopback S3 server of the public store, as ``make run`` starts it: its environment."""
    with loopback_s3(load_params(airflow_project / "params.yaml").stores) as server:
        yield server.env


AirflowCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def airflow_cli(airflow_project: Path, airflow_home: Path, loopback: dict[str, str]) -> AirflowCli:
    """``airflow_cli("dags", "list")``: the Airflow command line on the project copy."""

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        return airflow(airflow_project, airflow_home, *args, timeout=timeout, env=loopback)

    return run
