"""Where the project lives, and its params, as seen from a DAG file at parse time."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from pipelines.core.params import Params, load_params
from recflow_airflow.alerts import FailureAlert

PROJECT_ROOT_ENV = "RECFLOW_PROJECT_ROOT"
PARAMS_FILE = "params.yaml"


def project_root(dags_folder: Path) -> Path:
    """The project root: ``$RECFLOW_PROJECT_ROOT`` when set, else the folder above ``dags/``.

    Args:
        dags_folder: The folder holding the DAG file.

    Returns:
        The absolute project root.
    """
    configured = os.environ.get(PROJECT_ROOT_ENV)
    root = Path(configured) if configured else Path(dags_folder).parent
    return root.resolve()


def project_params(root: Path) -> Params:
    """The project's ``params.yaml``, checked against the typed config.

    Args:
        root: The project root.

    Returns:
        The whole typed config.

    Raises:
        ConfigError: ``params.yaml`` is missing or invalid.
    """
    # the DAG is built from params.yaml alone: never from the last run's form (the overlay)
    return load_params(root / PARAMS_FILE, overlay=False)


OWNER = "recflow"


def default_args(params: Params) -> dict[str, Any]:
    """Every DAG's task defaults, set once: the owner, retries with exponential backoff from
    the ``airflow`` section, the timeout of a task, and the failure alert (a notifier).

    A task whose failure is a verdict (a rejected batch, a blocked or rolled-back candidate,
    a person's decision) overrides ``retries`` with 0 where it is built.
    """
    cfg = params.airflow
    return {
        "owner": OWNER,
        "retries": cfg.retries,
        "retry_delay": dt.timedelta(minutes=cfg.retry_delay_minutes),
        "retry_exponential_backoff": cfg.retry_exponential_backoff,
        "max_retry_delay": dt.timedelta(minutes=cfg.max_retry_delay_minutes),
        "execution_timeout": dt.timedelta(minutes=cfg.execution_timeout_minutes),
        "on_failure_callback": [
            FailureAlert(params.monitor.webhook_url, params.monitor.webhook_timeout_s)
        ],
    }
