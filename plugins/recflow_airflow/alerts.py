"""Tells people a task failed: the failure callback of every task of every recflow DAG.

:class:`FailureAlert` logs an error naming the DAG, run, task, try and the exception, and, with
``monitor.webhook_url`` set (the project's one alert webhook), POSTs the same as JSON. A
webhook that fails is logged with its host only (a webhook's path often holds its secret); the
alert never raises.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger("recflow.alerts")


def failure_payload(context: Any) -> dict[str, Any]:
    """The alert of a failed task, from its Airflow context.

    Returns:
        ``{"kind": "task_failed", "dag_id", "run_id", "task_id", "try_number", "error",
        "summary"}``.
    """
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    error = context.get("exception")
    payload: dict[str, Any] = {
        "kind": "task_failed",
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", ""),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", ""),
        "task_id": getattr(ti, "task_id", ""),
        "try_number": getattr(ti, "try_number", None),
        "error": f"{type(error).__name__}: {error}" if error is not None else None,
    }
    payload["summary"] = (
        f"recflow: {payload['dag_id']}.{payload['task_id']} failed in run {payload['run_id']} "
        f"(try {payload['try_number']})" + (f": {payload['error']}" if payload["error"] else "")
    )
    return payload


class WebhookNotifier(BaseNotifier):
    """A notifier that logs its alert and POSTs it as JSON to the project's webhook, if set.

    A webhook that fails is logged with its host only (a webhook's path or query often holds
    its secret); the notifier never raises.

    Args:
        webhook_url: ``monitor.webhook_url``; None: the log line only.
        timeout_s: ``monitor.webhook_timeout_s``.
    """

    # what the alert is, in the log line of a failed webhook
    what = "alert"

    def __init__(self, webhook_url: str | None, timeout_s: float) -> None:
        super().__init__()
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s

    def post(self, payload: dict[str, Any]) -> None:
        """POST ``payload`` as JSON to the webhook; nothing without one."""
        if self.webhook_url is None:
            return
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            host = urllib.parse.urlsplit(self.webhook_url).hostname
            log.warning("the %s's webhook at %s failed: %s", self.what, host, exc)


class FailureAlert(WebhookNotifier):
    """A failed task's alert: an error in the log, and a JSON POST to a webhook when one is set.

    Args:
        webhook_url: ``monitor.webhook_url``; None: the log line only.
        timeout_s: ``monitor.webhook_timeout_s``.
    """

    what = "failure alert"

    def notify(self, context: Any) -> None:
        """Log the failure, and POST it when a webhook is set.

        Args:
            context: The failed task's Airflow context.
        """
        payload = failure_payload(context)
        log.error("%s", payload["summary"])
        self.post(payload)
