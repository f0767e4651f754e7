"""Fixtures for DAG tests: an isolated Airflow home, the parsed DagBag, the project's params."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Airflow reads its home and config when first imported: point it at a throwaway folder
# before any test module imports it, so tests never touch a real Airflow installation.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="recflow-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

DAG_ID = "recsys_retrain"


@pytest.fixture(scope="session")
def dagbag(project_root: Path) -> Any:
    """All DAGs under ``dags/``, parsed once per session."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        # the DAG must find this checkout from its own location, as a deployment would
        patch.delenv("RECFLOW_PROJECT_ROOT", raising=False)
        return DagBag(dag_folder=str(project_root / "dags"))


@pytest.fixture(scope="session")
def dag(dagbag: Any) -> Any:
    """The ``recsys_retrain`` DAG."""
    assert not dagbag.import_errors, dagbag.import_errors
    return dagbag.dags[DAG_ID]


@pytest.fixture(scope="session")
def params(project_root: Path) -> Any:
    """The project's typed params."""
    from pipelines.core.params import load_params

    return load_params(project_root / "params.yaml")
