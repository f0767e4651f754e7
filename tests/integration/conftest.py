"""Session fixtures for the Airflow run: a copy of the project, and the main job run on it.

The copy holds the project's tracked and untracked-not-ignored files (``git ls-files -co
--exclude-standard``), is its own git repository, and runs the ``tiny`` generator preset with
small validation thresholds. The main job keeps Airflow's home inside the project
(``.airflow/``), as ``make run`` does; ``airflow_cli`` runs Airflow's command line on it. A test
that changes a project works on a copy of its own (``copy_after_run``).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.core.params import load_params
from pipelines.core.project import interpreter_env
from pipelines.main_job.airflow_cli import AIRFLOW_HOME, airflow_command, airflow_env
from pipelines.registry.loopback import loopback_s3
from tests.integration.project import TINY_OVERRIDES, copy_project

# the runs check the chain, not this machine's speed: a p99 latency measured on a loaded machine
# says nothing about the candidate, so the rollout's latency limit is a ceiling no run reaches
# (the latency rule itself is tested on fixed numbers in tests/rollout/test_analysis.py); every
# other limit of the analysis is the project's
_ANALYSIS = load_params(Path(__file__).resolve().parents[2] / "params.yaml").deploy.analysis
_LOAD_PROOF_ANALYSIS = {
    **_ANALYSIS.model_dump(mode="json"),
    "latency_p99_ms": {"max": 1e9, "max_increase": 1e9, "max_relative_increase": 1e9},
}
# a failing stage fails the same way on a retry: do not wait out retry delays in tests
AIRFLOW_OVERRIDES = {
    **TINY_OVERRIDES,
    "airflow": {"retries": 0},
    "deploy": {**TINY_OVERRIDES["deploy"], "analysis": _LOAD_PROOF_ANALYSIS},
}


@dataclass(frozen=True)
class JobRun:
    """One run of the main job: its exit, console, and the wall-clock window it ran in."""

    returncode: int
    stdout: str
    stderr: str
    started: dt.datetime
    ended: dt.datetime

    @property
    def console(self) -> list[str]:
        """The lines the job printed."""
        return self.stdout.splitlines()

    def failure(self) -> str:
        """What to show when the test fails."""
        return f"exit {self.returncode}\n{self.stdout[-6000:]}\n{self.stderr[-3000:]}"


def run_main_job(
    root: Path, *args: str, timeout: int = 900, env: dict[str, str] | None = None
) -> JobRun:
    """``python -m pipelines.main_job --no-push <args>`` on the project at ``root``.

    ``env`` is added to the job's environment (e.g. a loopback store server's endpoint and
    credentials, which the job then uses instead of starting its own).
    """
    started = dt.datetime.now(dt.UTC)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.main_job", "--root", str(root), "--no-push", *args],
        cwd=root,
        env={**interpreter_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return JobRun(result.returncode, result.stdout, result.stderr, started, dt.datetime.now(dt.UTC))


def airflow(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Airflow's command line on the project at ``root`` and the main job's Airflow home."""
    return subprocess.run(
        airflow_command(*args),
        cwd=root,
        env=airflow_env(root, root / AIRFLOW_HOME),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_after_run(project: Path, dest: Path) -> Path:
    """A copy of a project that has run (outputs, DVC cache, git), without its Airflow home."""
    shutil.copytree(project, dest, symlinks=True, ignore=shutil.ignore_patterns(AIRFLOW_HOME))
    return dest


@pytest.fixture(scope="session")
def airflow_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git-initialised copy of the project, configured for a small, fast run."""
    return copy_project(tmp_path_factory.mktemp("airflow") / "project", AIRFLOW_OVERRIDES)


@pytest.fixture(scope="session")
def loopback(airflow_project: Path) -> Iterator[dict[str, str]]:
    """The public store's loopback S3 server, outliving the runs so tests can read it."""
    with loopback_s3(load_params(airflow_project / "params.yaml").stores) as server:
        yield server.env


AirflowCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def airflow_cli(airflow_project: Path) -> AirflowCli:
    """``airflow_cli("dags", "list")``: the Airflow command line on the project copy."""

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        return airflow(airflow_project, *args, timeout=timeout)

    return run
