"""The ``recsys_rollback`` task: a registry alias back at an earlier version, by hand.

The form's values reach the command through environment variables rendered by Airflow (the
shell expands them, quoted), never through the command text.
"""

from __future__ import annotations

from recflow_airflow.scripts import interpreter_line

PREVIOUS = "previous"
CLOUD_ENV = "RECFLOW_ROLLBACK_CLOUD"
ALIAS_ENV = "RECFLOW_ROLLBACK_ALIAS"
VERSION_ENV = "RECFLOW_ROLLBACK_VERSION"
REASON_ENV = "RECFLOW_ROLLBACK_REASON"
REGISTRY = "python -m pipelines.commands.registry --params params.yaml"


def rollback_env() -> dict[str, str]:
    """The form's fields as the task's environment variables (Airflow templates)."""
    return {
        CLOUD_ENV: "{{ params.cloud }}",
        ALIAS_ENV: "{{ params.alias }}",
        VERSION_ENV: "{{ params.version }}",
        # who asked is recorded with the reason: the ledger's actor is the Airflow run
        REASON_ENV: "{{ params.reason }} (by {{ dag_run.triggering_user_name or 'unknown' }})",
    }


def rollback_script() -> str:
    """``recflow registry rollback`` for ``previous``, else ``recflow registry promote``."""
    where = f'--alias "${ALIAS_ENV}" --cloud "${CLOUD_ENV}" --reason "${REASON_ENV}"'
    return "\n".join(
        [
            interpreter_line(),
            "set -euo pipefail",
            f'if [ "${VERSION_ENV}" = "{PREVIOUS}" ]; then',
            f"  {REGISTRY} rollback {where}",
            "else",
            f'  {REGISTRY} promote "${VERSION_ENV}" {where}',
            "fi",
            "",
        ]
    )
