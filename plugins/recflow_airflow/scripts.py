"""The shell script a task runs around its stage command, on every execution backend.

For a DVC stage: ``dvc status`` first, and when the stage is up to date the task logs
``<stage> is up to date`` and succeeds; otherwise it runs the stage command, then
``dvc commit`` records it in ``dvc.lock``, so an Airflow run leaves the same record as
``dvc repro``. The DAG run's date reaches the script through an environment variable rendered
by Airflow, never through the command text.
"""

from __future__ import annotations

from pipelines.core.params import Params
from pipelines.stages.table import StageSpec, stage_command

# A manual run may carry a date in its trigger form; else the run's logical date, and a run
# triggered without one (Airflow 3) falls back to when it was due to run.
LOGICAL_DATE_TEMPLATE = (
    "{{ params.logical_date or (dag_run.logical_date or dag_run.run_after) | ds }}"
)
# What started the run, as JSON for the register command's --trigger: the drift asset's event
# (the filter is recflow_airflow.monitoring.trigger_text, a DAG's user_defined_filters); empty
# for a run the asset did not start.
TRIGGER_FILTER = "recflow_trigger"
TRIGGER_TEMPLATE = "{{ triggering_asset_events | " + TRIGGER_FILTER + " }}"


def stage_script(spec: StageSpec, params: Params) -> str:
    """The bash script a task runs for ``spec``.

    ``--json`` rather than ``--quiet`` for ``dvc status``: the quiet form exits 1 both for
    "changed" and for a DVC error, and an error must fail the task instead of running the stage.

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
