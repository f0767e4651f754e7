"""The approval before the public cloud, and the deploy tasks' trigger rule, under real Airflow.

The slow tests run the real operators under ``dag.test()`` on an Airflow database of their own:
the deploy tasks are ``StageOperator``s (a harmless ``echo`` as their script), the approval is
``RolloutApproval``, and a person's answer reaches it through the same function the UI's
"Required actions" page calls (the HITL route of the core API). The rollout's side of the
decision (``pipelines.rollout.approval``) is replaced by a list that collects what the task
recorded: its own tests belong to the rollout package.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from recflow_airflow.approval import TIMEOUT_ACTOR, RolloutApproval, decision_of
from recflow_airflow.execution import AFTER_APPROVAL
from recflow_airflow.form import form_params

APPROVE, REJECT = RolloutApproval.APPROVE, RolloutApproval.REJECT
T0 = dt.datetime(2026, 12, 2, 6, tzinfo=dt.UTC)


class RecordingApproval(RolloutApproval):
    """The real operator; the rollout record it would write is a list here."""

    decisions: ClassVar[list[tuple[str, str, str]]] = []

    def summary(self) -> tuple[str, str]:
        return "0123456789abcdef", "**gate verdict:** pass\n\nprivate canary 50%: pass"

    def record_decision(self, decision: str, actor: str, reason: str) -> str:
        RecordingApproval.decisions.append((decision, actor, reason))
        return f"rollout of 0123456789abcdef: {decision}d"


def _approval(**kwargs: Any) -> RecordingApproval:
    return RecordingApproval(
        task_id="approve_public",
        cloud="public",
        project_root=".",
        timeout_s=600,
        **kwargs,
    )


# --- without a database ----------------------------------------------------------------------


def test_the_approval_offers_approve_and_reject_and_a_timeout_rejects() -> None:
    task = _approval()
    assert task.options == [APPROVE, REJECT]
    assert task.defaults == [REJECT]
    assert task.response_timeout == dt.timedelta(seconds=600)
    assert task.retries == 0
    assert list(task.serialized_params) == ["reason"]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"require_approval": False, "skip_deploy": False}, "does not require approval"),
        ({"require_approval": True, "skip_deploy": True}, "skip_deploy"),
    ],
)
def test_the_approval_skips_itself_when_the_run_needs_none(
    form: dict[str, Any], message: str
) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match=message):
        _approval().execute({"params": form})


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"chosen_options": [APPROVE], "responded_by_user": {"id": "1", "name": "ada"}}, "approve"),
        ({"chosen_options": [REJECT], "responded_by_user": {"id": "1", "name": "ada"}}, "reject"),
    ],
)
def test_decision_of_a_response(event: dict[str, Any], expected: str) -> None:
    assert decision_of(event, (APPROVE, REJECT)) == (expected, "ada")


def test_decision_of_a_timeout_has_no_user() -> None:
    event = {"chosen_options": [REJECT], "responded_by_user": None, "timedout": True}
    assert decision_of(event, (APPROVE, REJECT)) == ("reject", None)


@pytest.mark.parametrize("chosen", [[], [APPROVE, REJECT], ["Maybe"]])
def test_decision_of_anything_else_is_refused(chosen: list[str]) -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        decision_of({"chosen_options": chosen}, (APPROVE, REJECT))


def test_a_timeout_is_recorded_as_a_reject_by_nobody() -> None:
    """The event Airflow's timeout sweep resumes the task with: the default, no user."""
    RecordingApproval.decisions.clear()
    task = _approval()
    event = {
        "chosen_options": [REJECT],
        "params_input": {"reason": ""},
        "responded_at": T0,
        "responded_by_user": None,
        "timedout": True,
    }
    # no downstream task: nothing to skip, the decision is what is checked
    task.execute_complete({"task": task, "ti": None}, event)
    assert RecordingApproval.decisions == [
        ("reject", TIMEOUT_ACTOR, "no decision within deploy.approval_timeout_s (600 s)")
    ]


def test_the_approval_asks_recflow_deploy_and_names_its_failure(
    tmp_path: Path, project_root: Path
) -> None:
    """The real command path: a project with no rollout has nothing to approve."""
    shutil.copy(project_root / "params.yaml", tmp_path / "params.yaml")
    task = RolloutApproval(
        task_id="approve_public", cloud="public", project_root=str(tmp_path), timeout_s=60
    )
    with pytest.raises(RuntimeError, match=r"recflow deploy status failed: .*no rollout yet"):
        task.summary()


# --- under dag.test() ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A migrated Airflow database of this module's own (conftest points AIRFLOW_HOME at a
    throwaway folder)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.utils import db

    db.initdb()
    DagBundlesManager().sync_bundles_to_db()


def _rollout_dag(dag_id: str, params: Any) -> Any:
    """register >> deploy_private >> approve_public >> deploy_public >> monitor, as the chain
    wires them (with deploy_private >> deploy_public), stored like a parsed DAG."""
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session
    from recflow_airflow.operators import StageOperator

    with DAG(dag_id=dag_id, schedule=None, params=form_params(params)) as dag:
        register = EmptyOperator(task_id="register")
        private = StageOperator(
            task_id="deploy_private",
            stage_name="deploy",
            skip_when="skip_deploy",
            bash_command="echo private",
        )
        approve = _approval()
        public = StageOperator(
            task_id="deploy_public",
            stage_name="deploy",
            skip_when="skip_deploy",
            bash_command="echo public",
            trigger_rule=AFTER_APPROVAL,
        )
        monitor = EmptyOperator(task_id="monitor")
        register >> private >> approve >> public >> monitor
        private >> public
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder",
            None,
            [LazyDeserializedDAG.from_dag(dag)],
            {},
            None,
            set(),
            session=session,
        )
    return dag


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _answer(dag_id: str, chosen: str, user: str, reason: str, stop: threading.Event) -> None:
    """Answer the approval as the UI does, once the task waits for input."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    while not stop.is_set():
        with create_session() as session:
            waiting = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.task_id == "approve_public",
                    TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                )
            ).first()
            if waiting is not None:
                update_hitl_detail(
                    dag_id=dag_id,
                    dag_run_id=waiting.run_id,
                    task_id="approve_public",
                    update_hitl_detail_payload=UpdateHITLDetailPayload(
                        chosen_options=[chosen], params_input={"reason": reason}
                    ),
                    user=SimpleAuthManagerUser(username=user, role="admin"),
                    session=session,
                )
                return
        time.sleep(0.5)


def _run_answered(dag: Any, chosen: str, reason: str) -> Any:
    stop = threading.Event()
    answer = threading.Thread(
        target=_answer, args=(dag.dag_id, chosen, "ada", reason, stop), daemon=True
    )
    answer.start()
    try:
        return dag.test(run_conf={"require_approval": True})
    finally:
        stop.set()
        answer.join(timeout=30)


@pytest.mark.slow
def test_without_approval_the_public_deploy_follows_the_private_one(
    airflow_db: None, params: Any
) -> None:
    run = _rollout_dag("approval_not_required", params).test(run_conf={"require_approval": False})
    assert _states(run) == {
        "register": "success",
        "deploy_private": "success",
        "approve_public": "skipped",
        "deploy_public": "success",
        "monitor": "success",
    }


@pytest.mark.slow
def test_skip_deploy_skips_every_deploy_and_approval_task(airflow_db: None, params: Any) -> None:
    run = _rollout_dag("skip_deploy", params).test(
        run_conf={"skip_deploy": True, "require_approval": True}
    )
    states = _states(run)
    assert states["register"] == "success"
    # the public deploy's trigger rule does not let a skipped private deploy through
    assert {states[t] for t in ("deploy_private", "approve_public", "deploy_public")} == {"skipped"}


@pytest.mark.slow
def test_an_approval_in_the_ui_is_recorded_and_the_public_deploy_runs(
    airflow_db: None, params: Any
) -> None:
    RecordingApproval.decisions.clear()
    run = _run_answered(_rollout_dag("approved", params), APPROVE, "canary looks fine")
    assert RecordingApproval.decisions == [("approve", "ada", "canary looks fine")]
    assert _states(run)["deploy_public"] == "success"
    assert _states(run)["approve_public"] == "success"


@pytest.mark.slow
def test_a_reject_in_the_ui_is_recorded_and_the_public_deploy_is_skipped(
    airflow_db: None, params: Any
) -> None:
    RecordingApproval.decisions.clear()
    run = _run_answered(_rollout_dag("rejected", params), REJECT, "p99 too close to the limit")
    assert RecordingApproval.decisions == [("reject", "ada", "p99 too close to the limit")]
    states = _states(run)
    assert states["approve_public"] == "success"
    assert states["deploy_public"] == "skipped"
    assert states["monitor"] == "skipped"


def test_the_chain_wires_the_approval_between_the_clouds(dag: Any) -> None:
    approve = dag.get_task("approve_public")
    assert isinstance(approve, RolloutApproval)
    assert set(approve.upstream_task_ids) == {"deploy_private"}
    public = dag.get_task("deploy_public")
    assert set(public.upstream_task_ids) == {"approve_public", "deploy_private"}
    assert public.trigger_rule == AFTER_APPROVAL
    assert dag.get_task("deploy_private").trigger_rule == "all_success"
