"""The shell script a task runs around its stage command, on every execution backend.

For a DVC stage: ``dvc status`` first, and when the stage is up to date the task logs
``<stage> is up to date`` and succeeds; otherwise it runs the stage command, then
``dvc commit`` records it in ``dvc.lock``, so an Airflow run leaves the same record as
``dvc repro``. The DAG run's date and trigger form reach the script through environment
variables rendered by Airflow, never through the command text.
"""

from __future__ import annotations

import os
import shlex
import sys

from pipelines.core.params import Params
from pipelines.stages.table import FORCE_ENV, StageSpec, stage_command

# Jinja filters of recsys_retrain (recflow_airflow.form.FORM_FILTERS): the run's data date, and
# its whole trigger form as JSON.
DATA_DATE_FILTER = "recflow_data_date"
RUN_FORM_FILTER = "recflow_run_form"
# The run's data date: a date in the run's conf (the main job, `airflow dags trigger --conf`),
# else the day of its logical date, else (a manual run without one) the day it was due to run.
LOGICAL_DATE_TEMPLATE = "{{ dag_run | " + DATA_DATE_FILTER + " }}"
# The run's trigger form as JSON, every field, with the data date resolved as above.
RUN_FORM_TEMPLATE = "{{ params | " + RUN_FORM_FILTER + "(dag_run) }}"
# The deploy command's approval flag, from the form's require_approval.
APPROVAL_FLAG_TEMPLATE = (
    "{{ '--require-approval' if params.require_approval else '--no-require-approval' }}"
)
FORCE_TEMPLATE = "{{ 'true' if params.force_retrain else 'false' }}"
# What started the run, as JSON for the register command's --trigger: the drift asset's event
# (the filter is recflow_airflow.monitoring.trigger_text, a DAG's user_defined_filters); empty
# for a run the asset did not start.
TRIGGER_FILTER = "recflow_trigger"
TRIGGER_TEMPLATE = "{{ triggering_asset_events | " + TRIGGER_FILTER + " }}"


def stage_script(spec: StageSpec, params: Params) -> str:
    """The bash script a task runs for ``spec``.

    ``--json`` rather than ``--quiet`` for ``dvc status``: the quiet form exits 1 both for
    "changed" and for a DVC error, and an error must fail the task instead of running the stage.

    A forceable stage (``train``) skips the check when ``$RECFLOW_FORCE`` is ``true`` (the
    form's ``force_retrain``), and is recorded afterwards all the same.

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
    check = [
        f'status="$(python -m dvc status --json {name})"',
        'if [ "$status" = "{}" ]; then',
        f'  echo "{name} is up to date"',
        "  exit 0",
        "fi",
        f'echo "{name} changed: $status"',
    ]
    if spec.forceable:
        check = [
            f'if [ "${{{FORCE_ENV}:-false}}" = "true" ]; then',
            f"  echo \"{name} forced by the run's form: DVC's up-to-date check is skipped\"",
            "else",
            *(f"  {line}" for line in check),
            "fi",
        ]
    return "\n".join(
        ["set -euo pipefail", *check, command, f"python -m dvc commit --force --quiet {name}", ""]
    )


def interpreter_line() -> str:
    """The first line of a local task's script: this interpreter's folder first on ``PATH``.

    The folder is the deployment's (the same in every parse); the rest of ``PATH`` is the
    worker's, read when the task runs, so a task's definition never carries the parsing
    process's environment (each difference would be a new DAG version).
    """
    return f'export PATH={shlex.quote(os.path.dirname(sys.executable))}"${{PATH:+:$PATH}}"'


def local_script(spec: StageSpec, params: Params) -> str:
    """The script of a local task: :func:`interpreter_line`, then :func:`stage_script`."""
    return f"{interpreter_line()}\n{stage_script(spec, params)}"
