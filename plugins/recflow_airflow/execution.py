"""The task factory: one stage of the registry becomes one Airflow task on the chosen backend.

Both backends run the same shell script around the stage command: skip when DVC finds the
stage up to date, else run the command and record it with ``dvc commit``, so an Airflow run
leaves the same ``dvc.lock`` as ``dvc repro``. The DAG run's date reaches the script through
an environment variable rendered by Airflow, never through the command text.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import BaseOperator

from pipelines.config import Params
from recflow_airflow.stages import LOGICAL_DATE_ENV, StageSpec, stage, stage_command

# A manual run may carry a date in its trigger form; else the run's logical date, and a run
# triggered without one (Airflow 3) falls back to when it was due to run.
LOGICAL_DATE_TEMPLATE = (
    "{{ params.logical_date or (dag_run.logical_date or dag_run.run_after) | ds }}"
)


def stage_script(spec: StageSpec, params: Params) -> str:
    """The bash script a task runs for ``spec``.

    For a DVC stage: ``dvc status`` first, and when the stage is up to date the task logs
    ``<stage> is up to date`` and succeeds; otherwise it runs the stage command, then
    ``dvc commit --force`` records the stage in ``dvc.lock``. ``--json`` rather than
    ``--quiet``: the quiet form exits 1 both for "changed" and for a DVC error, and an error
    must fail the task instead of running the stage.

    Args:
        spec: The stage.
        params: The project's params.

    Returns:
        The script text.
    """
    command = stage_command(spec, params)
    if not spec.tracked:
        return f"set -euo pipefail\n{command}\n"
    name = spec.name
    return "\n".join(
        [
            "set -euo pipefail",
            f'status="$(python -m dvc status --json {name})"',
            'if [ "$status" = "{}" ]; then',
            f'  echo "{name} is up to date"',
            "  exit 0",
            "fi",
            f'echo "{name} changed: $status"',
            command,
            f"python -m dvc commit --force --quiet {name}",
            "",
        ]
    )


def task_env() -> dict[str, str]:
    """Environment added to the task's own: ``python`` and ``dvc`` of Airflow's interpreter.

    Returns:
        Variables for the operator's ``env`` (used with ``append_env=True``).
    """
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {
        "PATH": path,
        "GX_ANALYTICS_ENABLED": "false",
        LOGICAL_DATE_ENV: LOGICAL_DATE_TEMPLATE,
    }


def stage_task(name: str, params: Params, root: Path) -> BaseOperator:
    """Build the task for stage ``name`` on the backend ``params.execution.backend`` names.

    Args:
        name: The stage's name in the registry (``recflow_airflow.stages.STAGES``).
        params: The project's params.
        root: The project root; local tasks run there.

    Returns:
        A ``BashOperator`` (backend ``local``) or a ``KubernetesPodOperator`` (``kubernetes``),
        with the stage name as task id. Retries, timeouts and the like come from the DAG's
        default args.
    """
    spec = stage(name)
    overrides: dict[str, Any] = {"retries": 0} if spec.deterministic_failure else {}
    if params.execution.backend == "kubernetes":
        # The Kubernetes client is heavy to import: only DAGs that use it pay for it.
        from recflow_airflow.kubernetes import stage_pod_operator

        return stage_pod_operator(spec, params, **overrides)
    return BashOperator(
        task_id=spec.name,
        bash_command=stage_script(spec, params),
        cwd=str(root),
        env=task_env(),
        append_env=True,
        # exit code 99 must fail the task like any other, not skip it
        skip_on_exit_code=None,
        **overrides,
    )
