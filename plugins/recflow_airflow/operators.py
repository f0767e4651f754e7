"""The operator of a chain task: one stage, on the backend the run's form chooses.

A :class:`StageOperator` is a ``BashOperator`` around the stage's local script
(``recflow_airflow.scripts``). When the run's form says ``execution: kubernetes`` it hands the
same stage to the pod operator of ``recflow_airflow.kubernetes`` at execute time instead, so
one DAG serves both backends and a run chooses (the DAG's tasks and edges are the same).

It also skips itself where the form says so (``skip_deploy`` on the deploy tasks), and the
first task skips a scheduled run that starts long after it was due (:func:`past_due`): with
``catchup=False`` a ``CronTriggerTimetable`` still creates the most recent missed run when a
paused DAG is unpaused, and "unpause on trigger" in the trigger form would otherwise start a
second full retrain and rollout beside the one a person asked for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.stages.table import stage
from recflow_airflow.form import EXECUTION

SCHEDULED = "scheduled"


def past_due(run_type: str, due: dt.datetime | None, now: dt.datetime, grace: dt.timedelta) -> bool:
    """Whether a run is a scheduled run starting more than ``grace`` after it was due.

    Args:
        run_type: The run's type (``scheduled``, ``manual``, ``asset_triggered``, ...).
        due: When the timetable wanted it to run (the run's ``run_after``).
        now: When its first task starts.
        grace: How late a scheduled run may still start.

    Returns:
        True only for a late scheduled run; a run a person or an asset asked for never is.
    """
    return str(run_type) == SCHEDULED and due is not None and now - due > grace


class StageOperator(BashOperator):
    """A stage of the chain on the backend of the run's form (``local`` or ``kubernetes``).

    Args:
        stage_name: The stage of the stage table.
        stage_args: The stage's arguments where the task differs from the table (a deploy
            target's ``--target``); None: the table's.
        skip_when: A boolean form field that, when true, skips the task.
        late_grace: On the first task: skip a scheduled run that starts more than this
            after it was due. None: never.
        **kwargs: ``BashOperator`` arguments (its ``bash_command`` is the local script).
    """

    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        stage_name: str,
        stage_args: tuple[str, ...] | None = None,
        skip_when: str | None = None,
        late_grace: dt.timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        # exit code 99 must fail the task like any other, not skip it
        kwargs.setdefault("skip_on_exit_code", None)
        super().__init__(**kwargs)
        self.stage_name = stage_name
        self.stage_args = stage_args
        self.skip_when = skip_when
        self.late_grace = late_grace

    def execute(self, context: Any) -> Any:
        """Skip where the form or the schedule says so; else run locally or as a pod."""
        form = context["params"]
        if self.skip_when and form.get(self.skip_when):
            raise AirflowSkipException(f"the run's form sets {self.skip_when}")
        if self.late_grace is not None:
            dag_run = context["dag_run"]
            now = dt.datetime.now(dt.UTC)
            if past_due(dag_run.run_type, dag_run.run_after, now, self.late_grace):
                raise AirflowSkipException(
                    f"scheduled run due at {dag_run.run_after.isoformat()} starts more than "
                    f"{self.late_grace} late (a paused DAG was unpaused): not run"
                )
        if form.get(EXECUTION) == "kubernetes":
            pod = self.pod_operator()
            # the pod's templates (the run's date, form and trigger) see this run, with the
            # DAG's filters
            pod.render_template_fields(context, jinja_env=self.get_template_env())
            return pod.execute(context)
        return super().execute(context)

    def pod_operator(self, project: Any = None) -> Any:
        """The pod operator that runs this stage on Kubernetes, rendered for this run.

        Args:
            project: The project's params; None: read from the task's project root.

        Returns:
            The operator of ``recflow_airflow.kubernetes.stage_pod_operator``; its templates are
            rendered with this task's context when executed through :meth:`execute`.
        """
        # the Kubernetes client is heavy to import: only runs that use it pay for it
        from recflow_airflow.kubernetes import stage_pod_operator
        from recflow_airflow.project import project_params

        params = project if project is not None else project_params(Path(self.cwd or "."))
        spec = stage(self.stage_name)
        if self.stage_args is not None:
            spec = dataclasses.replace(spec, args=self.stage_args)
        return stage_pod_operator(
            spec,
            params,
            retries=self.retries,
            execution_timeout=self.execution_timeout,
        )
