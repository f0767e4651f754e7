"""Approval of a rollout before a cloud, in the Airflow UI (human in the loop).

``approve_<cloud>`` waits between two deploy tasks of ``recsys_retrain``. The approver sees
what the rollout knows (``recflow deploy status --summary``: the gate's verdict, the private
cloud's canary figures, where the reports are), and chooses Approve or Reject with a reason. The
choice is recorded by ``recflow deploy approve|reject --via airflow --actor <UI user>``: the
same command and record a person uses outside Airflow, so the UI and the CLI cannot disagree
(the first decision wins). The commands run as processes of the project's interpreter: the
Airflow wiring imports nothing of the rollout package (an import-linter contract), and every
value goes into an argument list, never through a shell.

- approve: the next deploy task runs;
- reject: ``decide`` rolls the already deployed cloud(s) back and records who and why in the
  ledger; the next deploy task is skipped;
- no decision within ``deploy.approval_timeout_s``: Airflow answers the task's default, Reject,
  and it is recorded as a reject by timeout;
- a run whose form does not require approval: the task skips itself, and the next deploy task
  runs (its trigger rule accepts a skipped approval, not a skipped deploy).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowSkipException

from recflow_airflow.form import REQUIRE_APPROVAL, SKIP_DEPLOY

# who decided when nobody did
TIMEOUT_ACTOR = "airflow:timeout"
VIA = "airflow"
REASON = "reason"
DEPLOY_COMMANDS = "pipelines.commands.deploy"
PARAMS_FILE = "params.yaml"
# a reject waits for the rollback of the deployed clouds
COMMAND_TIMEOUT_S = 1800


def decision_of(event: dict[str, Any], options: tuple[str, str]) -> tuple[str, str | None]:
    """``("approve" | "reject", the UI user's name or None)`` from a HITL response event.

    Args:
        event: The event ``execute_complete`` receives.
        options: The operator's (approve, reject) option labels.

    Raises:
        ValueError: The event chose something else.
    """
    chosen = list(event.get("chosen_options") or [])
    if len(chosen) != 1 or chosen[0] not in options:
        raise ValueError(f"an approval needs exactly one of {list(options)}, got {chosen}")
    user = event.get("responded_by_user") or None
    name = None
    if user:
        name = str(user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)
    return ("approve" if chosen[0] == options[0] else "reject"), name


class RolloutApproval(ApprovalOperator):
    """Approve or reject the rollout of the run's candidate to ``cloud``.

    Args:
        cloud: The cloud the next deploy task rolls out to.
        project_root: The project root (its ``params.yaml``).
        timeout_s: ``deploy.approval_timeout_s``; no answer within it is a reject.
        **kwargs: ``BaseOperator`` arguments (``task_id`` ...).
    """

    ui_color = "#fcecd4"

    def __init__(
        self,
        *,
        cloud: str,
        project_root: str,
        timeout_s: float,
        **kwargs: Any,
    ) -> None:
        # the DAG's params (the run's form, merged in by Airflow) and the approver's own field
        params = ParamsDict(kwargs.pop("params", None) or {})
        params[REASON] = Param(
            "",
            type="string",
            title="Reason",
            description="Why: kept in the rollout record and, on reject, in the ledger.",
            source="task",
        )
        super().__init__(
            subject=f"Roll the candidate out to {cloud}?",
            body=f"The rollout's summary is written here when the task starts ({cloud}).",
            defaults=self.REJECT,
            response_timeout=dt.timedelta(seconds=timeout_s),
            params=params,
            # a decision is a person's: a retry would only ask again
            retries=0,
            **kwargs,
        )
        self.cloud = cloud
        self.rollout_version: str | None = None
        self.project_root = project_root
        self.timeout_s = timeout_s

    def _deploy_command(self, *args: str) -> str:
        """Run ``recflow deploy <args>`` in the project; its standard output.

        Raises:
            RuntimeError: The command failed; the message has its last lines.
        """
        command = [sys.executable, "-m", DEPLOY_COMMANDS, *args]
        env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        result = subprocess.run(
            command,
            cwd=self.project_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"recflow deploy {args[0]} failed: " + " | ".join(tail))
        return result.stdout

    def execute(self, context: Any) -> Any:
        """Skip when the run needs no approval; else show the summary and wait."""
        form = context["params"]
        if form.get(SKIP_DEPLOY):
            raise AirflowSkipException("the run's form sets skip_deploy")
        if not form.get(REQUIRE_APPROVAL):
            raise AirflowSkipException(
                f"the run's form does not require approval: {self.cloud} follows at once"
            )
        version, self.body = self.summary()
        self.subject = f"Roll {version} out to {self.cloud}?"
        return super().execute(context)

    def summary(self) -> tuple[str, str]:
        """The version waiting for the decision, and what the approver reads (markdown)."""
        version = self.waiting_version()
        return version, self._deploy_command(
            "status", version, "--params", PARAMS_FILE, "--summary"
        )

    def waiting_version(self) -> str:
        """The version of the latest rollout (the one waiting), from ``recflow deploy status``."""
        if self.rollout_version is None:
            status = json.loads(self._deploy_command("status", "--params", PARAMS_FILE, "--json"))
            self.rollout_version = str(status["version"])
        return self.rollout_version

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Record the decision (a timeout as a reject), then continue or skip the cloud."""
        if "error" not in event:
            decision, user = decision_of(event, (self.APPROVE, self.REJECT))
            timed_out = bool(event.get("timedout")) and user is None
            reason = str((event.get("params_input") or {}).get(REASON) or "").strip()
            if timed_out:
                actor = TIMEOUT_ACTOR
                reason = f"no decision within deploy.approval_timeout_s ({self.timeout_s:g} s)"
            else:
                actor = user or "unknown"
                reason = reason or f"{decision}d in the Airflow UI"
            outcome = self.record_decision(decision, actor, reason)
            self.log.info("%s %sd for %s (%s): %s", actor, decision, self.cloud, reason, outcome)
        return super().execute_complete(context, event)

    def record_decision(self, decision: str, actor: str, reason: str) -> str:
        """Record the decision in the rollout record (a reject rolls the deployed clouds back).

        Args:
            decision: ``approve`` or ``reject``.
            actor: The UI user's name, or :data:`TIMEOUT_ACTOR`.
            reason: Why.

        Returns:
            What the command says of the rollout now.
        """
        version = self.waiting_version()
        return self._deploy_command(
            decision,
            "--params",
            PARAMS_FILE,
            "--version",
            version,
            "--actor",
            actor,
            "--reason",
            reason,
            "--via",
            VIA,
        ).strip()
