"""### recsys_rollback

Point a registry alias in one cloud back at an earlier version, by hand: the form names the
cloud, the alias (`production` by default), the version (`previous`: the alias's last known good
version before the current one, from the ledger) and why.

| task | what it does |
|---|---|
| `rollback` | `recflow registry rollback` for `previous`, else `recflow registry promote VERSION` |

each with `--alias A --cloud C --reason R` from the form.

Both record the change in the registry's ledger with the reason and the Airflow run that made
it (`recflow registry history` shows it), and re-pin the production version the gate compares
against when the alias is the production one. The registry commands, not `recflow deploy
--rollback`: that one undoes the latest rollout of the fleets as a whole, while this DAG moves
one alias in one cloud to a version a person chose. The fleets serve the alias's version from
their next start or rollout.

Manual only (no schedule, never catches up). The form's values are validated on trigger (a
wrong cloud, alias or version is refused naming the field) and reach the command through
environment variables, never through the command text. No retries: a rollback that failed
is looked at by a person before it runs again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param
from recflow_airflow.execution import base_env
from recflow_airflow.project import default_args, project_params, project_root
from recflow_airflow.rollback import PREVIOUS, rollback_env, rollback_script

from pipelines.registry.names import ALIAS, CLOUDS, VERSION_ID

ROOT = project_root(Path(__file__).resolve().parent)
PARAMS = project_params(ROOT)
AIRFLOW = PARAMS.airflow

with DAG(
    dag_id="recsys_rollback",
    description="Point a registry alias in one cloud back at an earlier version, by hand.",
    doc_md=__doc__,
    schedule=None,
    start_date=dt.datetime.combine(AIRFLOW.start_date, dt.time(), tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(PARAMS),
    tags=[*AIRFLOW.tags, "rollback"],
    params={
        "cloud": Param(
            "private", type="string", enum=list(CLOUDS), title="Cloud", description="Where."
        ),
        "alias": Param(
            PARAMS.registry.promote_alias,
            type="string",
            pattern=f"^{ALIAS.pattern}$",
            title="Alias",
            description="The alias to move (the production one by default).",
        ),
        "version": Param(
            PREVIOUS,
            type="string",
            pattern=f"^({PREVIOUS}|{VERSION_ID.pattern})$",
            title="Version",
            description="'previous' (the last known good before the current one) or a "
            "registry version id (16 hex digits).",
        ),
        "reason": Param(
            type="string",
            minLength=3,
            title="Reason",
            description="Why: recorded in the ledger.",
        ),
    },
):
    BashOperator(
        task_id="rollback",
        bash_command=rollback_script(),
        cwd=str(ROOT),
        env={**base_env(), **rollback_env()},
        append_env=True,
        skip_on_exit_code=None,
        retries=0,
    )
