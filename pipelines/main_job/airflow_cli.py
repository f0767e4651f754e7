"""The Airflow this checkout runs: one home on SQLite, its DAGs and plugins, and the CLI.

The main job and the UI use the same settings, so the UI shows the runs ``make run`` left.
Airflow is run as ``python -m airflow`` with this interpreter's folder first on ``PATH``: its
components start each other as ``airflow <command>``, which must find this environment's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.core.project import interpreter_env

DAG_ID = "recsys_retrain"
# the Airflow home of a checkout, relative to its root
AIRFLOW_HOME = ".airflow"


def airflow_env(root: Path, airflow_home: Path) -> dict[str, str]:
    """Environment for an Airflow on SQLite in ``airflow_home`` that runs ``root``'s DAGs.

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
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # the main job passes the run's date as the run's conf, which must set the DAG's
            # ``logical_date`` param (Airflow's default, pinned here because the job needs it)
            "AIRFLOW__CORE__DAG_RUN_CONF_OVERRIDES_PARAMS": "True",
            "RECFLOW_PROJECT_ROOT": str(root),
        }
    )
    return env


def airflow_command(*args: str) -> list[str]:
    """The command line ``airflow <args>`` of this interpreter's Airflow."""
    return [sys.executable, "-m", "airflow", *args]
