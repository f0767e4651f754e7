"""The trigger form of ``recsys_retrain``: its fields, their schema, and how a run reads them.

One date: the run's data date is Airflow's own logical date (the only date field the trigger
form shows; Airflow 3.3's form always shows it for a DAG whose timetable is not partitioned),
so the run header's logical date is the day the run trains on. A caller without the form (the
main job, ``airflow dags trigger --conf``) may put ``data_date`` in the run's conf instead;
it is checked like a form field before any stage runs. A manual run without a logical date
takes the day it was due to run.

The form reaches the first task whole, as JSON in ``$RECFLOW_RUN_FORM`` (:func:`run_form`, a
Jinja filter of the DAG), so no value typed into the form is ever pasted into a command line.
``null`` in a field means "``params.yaml``'s value".
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import Param

from pipelines.core.params import Params
from recflow_airflow.scripts import DATA_DATE_FILTER, RUN_FORM_FILTER

DATA_DATE = "data_date"
EXECUTION = "execution"
SKIP_DEPLOY = "skip_deploy"
REQUIRE_APPROVAL = "require_approval"
FORCE_RETRAIN = "force_retrain"
PRESETS = ("tiny", "default", "medium", "large", "huge")
# a preset's name or a path relative to the project (no spaces, quotes or shell characters)
SOURCE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def form_params(params: Params) -> dict[str, Param]:
    """The form's fields, each JSON-schema validated when a run is triggered.

    A wrong value is refused on trigger with a message naming the field (Airflow's
    ``Invalid input for param <name>``).

    Args:
        params: The project's params: the defaults of ``execution`` and ``require_approval``.

    Returns:
        The DAG's ``params``.
    """
    return {
        "source": Param(
            None,
            type=["null", "string"],
            pattern=SOURCE_PATTERN,
            examples=list(PRESETS),
            title="Data source",
            description="A synthetic preset (tiny, default, medium, large, huge) or a path to "
            "read the events from. Empty: params.yaml's.",
        ),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Epochs",
            description="Training epochs (at least 1). Empty: params.yaml's.",
        ),
        "nproc_per_node": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=64,
            title="Training processes per node",
            description="torchrun workers per node (1 to 64). Empty: params.yaml's.",
        ),
        EXECUTION: Param(
            params.execution.backend,
            type="string",
            enum=["local", "kubernetes"],
            title="Execution",
            description="local: tasks run on the Airflow worker; kubernetes: each task runs "
            "as a pod of the project's image (training as a Job).",
        ),
        SKIP_DEPLOY: Param(
            False,
            type="boolean",
            title="Skip deploy",
            description="Stop after register: no rollout to any cloud.",
        ),
        REQUIRE_APPROVAL: Param(
            params.deploy.require_approval,
            type="boolean",
            title="Require approval",
            description="A person approves in the Airflow UI before each cloud after the "
            "first; no decision within deploy.approval_timeout_s counts as a reject.",
        ),
        FORCE_RETRAIN: Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Train although DVC finds the model up to date with its inputs.",
        ),
    }


def _day(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC).date().isoformat()


def check_data_date(text: Any) -> str:
    """``text`` if it is a real date written ``YYYY-MM-DD``.

    Raises:
        ValueError: It is not; the message names the field.
    """
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise ValueError(f"{DATA_DATE}: {text!r} is not a date written YYYY-MM-DD")
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{DATA_DATE}: {text!r} is not a date of the calendar") from None
    return text


def data_date(dag_run: Any) -> str:
    """The day a run trains on: its conf's ``data_date``, else its logical date's day (UTC),
    else the day it was due to run.

    Args:
        dag_run: The run (``dag_run`` of the task's context).

    Returns:
        ``YYYY-MM-DD``.

    Raises:
        ValueError: The conf's ``data_date`` is not a date.
    """
    conf = getattr(dag_run, "conf", None) or {}
    if conf.get(DATA_DATE) is not None:
        return check_data_date(conf[DATA_DATE])
    logical = getattr(dag_run, "logical_date", None)
    return _day(logical if logical is not None else dag_run.run_after)


def run_form(params: Mapping[str, Any], dag_run: Any) -> str:
    """The run's form as JSON for ``$RECFLOW_RUN_FORM``: every field, and ``data_date``.

    Args:
        params: The run's params (the form as submitted, validated by Airflow).
        dag_run: The run.

    Returns:
        A JSON object, keys sorted.
    """
    fields = {name: params.get(name) for name in form_fields()}
    return json.dumps({**fields, DATA_DATE: data_date(dag_run)}, sort_keys=True)


def form_fields() -> tuple[str, ...]:
    """The names of the form's fields (``data_date`` aside: it is the run's logical date)."""
    return (
        "source",
        "epochs",
        "nproc_per_node",
        EXECUTION,
        SKIP_DEPLOY,
        REQUIRE_APPROVAL,
        FORCE_RETRAIN,
    )


FORM_FILTERS: dict[str, Callable[..., str]] = {
    DATA_DATE_FILTER: data_date,
    RUN_FORM_FILTER: run_form,
}
