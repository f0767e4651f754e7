"""The Airflow this checkout runs: one home, its DAGs and plugins, its components, and the CLI.

The main job, the UI (``make airflow``) and the local stack (``make up``) use the same settings,
so the UI shows the runs ``make run`` left. Airflow is run as ``python -m airflow`` with this
interpreter's folder first on ``PATH``: its components start each other as
``airflow <command>``, which must find this environment's.

The metadata database is SQLite in the home unless ``RECFLOW_AIRFLOW_DB_URL`` names another
(a SQLAlchemy URL such as ``postgresql+psycopg2://user:password@127.0.0.1:5432/airflow``; the
driver is not in the lock). Every component listens on 127.0.0.1 only: the API server through
its settings, and the scheduler and triggerer start no log server (Airflow binds those to
every interface, with no setting for the address); the API server reads the task logs from the
home's log folder, which every component on this machine shares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.core.project import interpreter_env

DAG_ID = "recsys_retrain"
# the Airflow home of a checkout, relative to its root
AIRFLOW_HOME = ".airflow"
# the one address every component listens on
HOST = "127.0.0.1"
# another metadata database than the home's SQLite file (a SQLAlchemy URL)
DB_URL_ENV = "RECFLOW_AIRFLOW_DB_URL"


def database_url(airflow_home: Path) -> str:
    """The metadata database: ``RECFLOW_AIRFLOW_DB_URL``, else SQLite in ``airflow_home``."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{airflow_home / 'airflow.db'}"


def airflow_env(root: Path, airflow_home: Path) -> dict[str, str]:
    """Environment for an Airflow in ``airflow_home`` that runs ``root``'s DAGs.

    Args:
        root: The project root (its ``dags/`` and ``plugins/``).
        airflow_home: Airflow's home: configuration, the SQLite database, logs.

    Returns:
        This process's environment with the Airflow settings added.
    """
    env = interpreter_env()
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(airflow_home),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # the main job passes the run's date as the run's conf, which must set the DAG's
            # ``logical_date`` param (Airflow's default, pinned here because the job needs it)
            "AIRFLOW__CORE__DAG_RUN_CONF_OVERRIDES_PARAMS": "True",
            # Airflow's default is every interface (0.0.0.0)
            "AIRFLOW__API__HOST": HOST,
            "RECFLOW_PROJECT_ROOT": str(root),
        }
    )
    return env


def airflow_command(*args: str) -> list[str]:
    """The command line ``airflow <args>`` of this interpreter's Airflow."""
    return [sys.executable, "-m", "airflow", *args]


def run_note_command(dag_id: str, run_id: str, note: str) -> list[str]:
    """Set a DAG run's note (``recflow_airflow.run_note``; run it in :func:`plugins_env`)."""
    return [sys.executable, "-m", "recflow_airflow.run_note", dag_id, run_id, note]


def plugins_env(root: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``root``'s ``plugins/`` importable (``recflow_airflow``)."""
    path = [str(root / "plugins"), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(path)}


def component_commands() -> dict[str, list[str]]:
    """The components ``airflow standalone`` runs, each as its own command line.

    ``airflow standalone`` gives its components no arguments, and the scheduler and the
    triggerer would each start a log server on every interface (ports 8793 and 8794):
    ``--skip-serve-logs`` starts none. The API server's address and port come from the
    environment (``AIRFLOW__API__HOST``, ``AIRFLOW__API__PORT``).
    """
    return {
        "scheduler": airflow_command("scheduler", "--skip-serve-logs"),
        "dag-processor": airflow_command("dag-processor"),
        "triggerer": airflow_command("triggerer", "--skip-serve-logs"),
        "api-server": airflow_command("api-server"),
    }
