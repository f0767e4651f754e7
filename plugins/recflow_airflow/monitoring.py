"""The drift loop's Airflow side: the drift asset, the signal that emits it, and the trigger reason.

``recsys_drift_monitor`` runs ``recflow monitor`` once per cloud; each run leaves
``<monitor.out>/<cloud>/latest.json``, naming the window's ``summary.json`` and its sha256. The
DAG's ``signal_drift`` task reads those (checking each summary against its sha256) and, when a
cloud's verdict is ``drift``, emits one event on :data:`DRIFT_ASSET` whose extra is the reason
(``{"kind": "drift", "cloud", "window", "summary_sha256", "features"}``). At most one such event
is emitted per ``monitor.debounce_hours`` (:func:`debounce`, a pure function of the past events'
times): a drift that persists for a day asks for one retrain, not one per hour. Otherwise the
task is skipped, and a skipped task emits no event.

``recsys_retrain`` is scheduled on its cron or on :data:`DRIFT_ASSET`; its tasks see the reason
of the event that started the run as ``$RECFLOW_TRIGGER`` (:func:`trigger_text`, a Jinja filter
of the DAG), which ``register`` records in the version's lineage. :class:`DriftAlert` tells
people when a drift asked for a retrain: a warning in the task log, and a JSON POST to
``monitor.webhook_url`` when one is set.

Only the standard library reads the monitor's files here: the Airflow wiring stays light.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.core.errors import InputError
from recflow_airflow.alerts import WebhookNotifier
from recflow_airflow.scripts import TRIGGER_FILTER

log = logging.getLogger("recflow.monitor")

DRIFT_ASSET = Asset(name="recsys_drift", uri="recflow://monitoring/drift")
# what each monitor run leaves in <monitor.out>/<cloud>/
LATEST_FILE = "latest.json"
DRIFT_VERDICT = "drift"
# the ``kind`` of a reason this loop emits; other events of the asset (a person's) do not count
DRIFT_KIND = "drift"
SIGNAL_TASK = "signal_drift"


@dataclass(frozen=True)
class Finding:
    """What one cloud's latest monitor run found.

    Attributes:
        cloud: The cloud whose traffic was monitored.
        verdict: ``drift``, ``no_drift`` or ``insufficient_data``.
        window: The window's folder name under ``<monitor.out>/<cloud>/``.
        summary_sha256: The sha256 of its ``summary.json``.
        features: The drifted features, in the summary's order, each with its method, score
            and threshold (``{"feature", "method", "score", "threshold"}``).
    """

    cloud: str
    verdict: str
    window: str
    summary_sha256: str
    features: tuple[dict[str, Any], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The drifted features' names."""
        return tuple(str(entry["feature"]) for entry in self.features)


@dataclass(frozen=True)
class Debounce:
    """Whether a drift may ask for a retrain now.

    Attributes:
        emit: True when no drift event lies within the debounce window before ``now``.
        last: The newest drift event's time, None when there is none.
        next_allowed: When the next event may be emitted, None when one may be now.
    """

    emit: bool
    last: dt.datetime | None
    next_allowed: dt.datetime | None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from None


def read_finding(out: Path, cloud: str) -> Finding | None:
    """The finding of ``cloud``'s latest monitor run, checked against its recorded sha256.

    Args:
        out: The monitor's output folder (``monitor.out``, absolute).
        cloud: The cloud.

    Returns:
        The finding; None when the cloud has no ``latest.json`` (it was never monitored).

    Raises:
        InputError: ``latest.json`` or the summary it names is unreadable, of the wrong shape,
            outside the cloud's folder, or its sha256 does not match; the message names the file.
    """
    folder = out / cloud
    latest_path = folder / LATEST_FILE
    if not latest_path.is_file():
        return None
    latest = _read_json(latest_path)
    if (
        not isinstance(latest, dict)
        or not isinstance(latest.get("summary"), str)
        or not isinstance(latest.get("sha256"), str)
    ):
        raise InputError(f'{latest_path} must hold {{"summary": <path>, "sha256": <hex>}}')
    summary_path = (folder / latest["summary"]).resolve()
    if not summary_path.is_relative_to(folder.resolve()):
        raise InputError(f"{latest_path} names a summary outside {folder}: {latest['summary']}")
    try:
        data = summary_path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{latest_path} names {summary_path}, which is unreadable: {exc}"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != latest["sha256"]:
        raise InputError(
            f"{summary_path} does not match its sha256 in {latest_path} "
            f"(recorded {latest['sha256']}, found {digest}): the summary was changed or truncated"
        )
    summary = _read_json(summary_path)
    verdict = summary.get("verdict") if isinstance(summary, dict) else None
    drifted = summary.get("drifted", []) if isinstance(summary, dict) else None
    if not isinstance(verdict, str) or not isinstance(drifted, list):
        raise InputError(f"{summary_path} has no verdict or drifted features")
    try:
        features = tuple(
            {
                "feature": str(entry["feature"]),
                "method": str(entry.get("method", "")),
                "score": float(entry["score"]),
                "threshold": float(entry["threshold"]),
            }
            for entry in drifted
        )
    except (TypeError, KeyError, ValueError, AttributeError):
        raise InputError(
            f"{summary_path}: every drifted entry needs a feature, its score and threshold"
        ) from None
    window = summary_path.parent.name
    return Finding(cloud, verdict, window, digest, features)


def debounce(past: Iterable[dt.datetime], now: dt.datetime, hours: float) -> Debounce:
    """Whether a drift event may be emitted at ``now``, given the drift events emitted before.

    An event at ``t`` holds back the next one until ``t + hours``; an event stamped after
    ``now`` (another clock) holds it back too.

    Args:
        past: The times of the drift events emitted so far (any order, timezone-aware).
        now: The time of the decision.
        hours: ``monitor.debounce_hours``; 0 lets every drift through.

    Returns:
        The decision.
    """
    last = max(past, default=None)
    if last is None:
        return Debounce(emit=True, last=None, next_allowed=None)
    until = last + dt.timedelta(hours=hours)
    if now >= until:
        return Debounce(emit=True, last=last, next_allowed=None)
    return Debounce(emit=False, last=last, next_allowed=until)


def drift_reason(finding: Finding) -> dict[str, Any]:
    """The extra of the drift event: why a retrain was asked for, and where the evidence is.

    Args:
        finding: A finding whose verdict is ``drift``.

    Returns:
        ``{"kind": "drift", "cloud", "window", "summary_sha256", "features"}``, each feature
        with its method, score and threshold.
    """
    return {
        "kind": DRIFT_KIND,
        "cloud": finding.cloud,
        "window": finding.window,
        "summary_sha256": finding.summary_sha256,
        "features": list(finding.features),
    }


def drift_times(events: Iterable[Any]) -> list[dt.datetime]:
    """The times of the events this loop emitted (extra ``kind`` ``drift``) among ``events``.

    Args:
        events: Asset events, each with ``timestamp`` and ``extra`` (Airflow's
            ``AssetEventResult`` or anything shaped like it).

    Returns:
        Their timestamps.
    """
    return [
        event.timestamp
        for event in events
        if isinstance(event.extra, Mapping) and event.extra.get("kind") == DRIFT_KIND
    ]


def signal_drift(
    out: str,
    clouds: Sequence[str],
    debounce_hours: float,
    now: dt.datetime | None = None,
    **context: Any,
) -> dict[str, Any]:
    """The ``signal_drift`` task: emit the drift asset's event with its reason, or skip.

    The first cloud (in ``clouds``' order) whose verdict is drift gives the reason; a drift in
    another cloud is logged.

    Args:
        out: The monitor's output folder, absolute.
        clouds: ``monitor.clouds``.
        debounce_hours: ``monitor.debounce_hours``.
        now: The time of the decision; None: the clock's (the asset events' times are the
            clock's too).
        **context: The task's Airflow context (``inlet_events``, ``outlet_events``).

    Returns:
        The reason, also set as the event's extra (and so the task's XCom).

    Raises:
        AirflowSkipException: No cloud drifted, or a drift event was emitted within the
            debounce window: no event.
        InputError: A cloud's ``latest.json`` or summary is broken (the task fails).
    """
    findings = [f for cloud in clouds if (f := read_finding(Path(out), cloud)) is not None]
    for cloud in sorted(set(clouds) - {f.cloud for f in findings}):
        log.info("%s: no monitor run found (no %s)", cloud, Path(out) / cloud / LATEST_FILE)
    for finding in findings:
        drifted = ", ".join(finding.names) or "none"
        log.info(
            "%s: %s in %s (drifted: %s)", finding.cloud, finding.verdict, finding.window, drifted
        )
    drift = [f for f in findings if f.verdict == DRIFT_VERDICT]
    if not drift:
        raise AirflowSkipException("no drift: no retrain asked for")
    if now is None:
        now = dt.datetime.now(dt.UTC)
    since = (now - dt.timedelta(hours=debounce_hours)).isoformat()
    past = drift_times(context["inlet_events"][DRIFT_ASSET].after(since))
    decision = debounce(past, now, debounce_hours)
    if not decision.emit:
        raise AirflowSkipException(
            f"drift in {', '.join(f.cloud for f in drift)}, but a drift asked for a retrain at "
            f"{decision.last}: the next may come from {decision.next_allowed} "
            f"(monitor.debounce_hours {debounce_hours:g})"
        )
    reason = drift_reason(drift[0])
    context["outlet_events"][DRIFT_ASSET].extra = reason
    log.info("drift in %s: %s asks recsys_retrain for a retrain", drift[0].cloud, DRIFT_ASSET.uri)
    return reason


def trigger_text(events: Any) -> str:
    """Jinja filter: the reason of the drift event that started a run, as JSON text.

    ``{{ triggering_asset_events | recflow_trigger }}`` in a task's environment.

    Args:
        events: The run's ``triggering_asset_events`` (a mapping from asset to its events).

    Returns:
        The newest event of :data:`DRIFT_ASSET`'s extra as compact JSON with sorted keys (or
        ``{"kind": "asset", "asset": <uri>}`` for an event without one); ``""`` when the run
        was not started by that asset (a scheduled or manual run).
    """
    if events is None or isinstance(events, jinja2.Undefined):
        return ""
    ours = [
        event
        for asset, asset_events in events.items()
        if getattr(asset, "uri", None) == DRIFT_ASSET.uri
        for event in asset_events
    ]
    if not ours:
        return ""
    newest = max(ours, key=lambda event: event.timestamp)
    extra = dict(newest.extra or {}) or {"kind": "asset", "asset": DRIFT_ASSET.uri}
    return json.dumps(extra, sort_keys=True, separators=(",", ":"))


# a DAG whose tasks render TRIGGER_TEMPLATE passes these as its ``user_defined_filters``
TEMPLATE_FILTERS: dict[str, Any] = {TRIGGER_FILTER: trigger_text}


def alert_payload(reason: Mapping[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """The JSON body :class:`DriftAlert` POSTs.

    Args:
        reason: The drift event's extra.
        dag_id: The DAG that emitted it.
        run_id: Its run.

    Returns:
        ``{"alert": "recflow_drift_retrain", "summary", "reason", "asset", "dag_id", "run_id"}``.
    """
    named = [f.get("feature") if isinstance(f, dict) else f for f in reason.get("features", [])]
    features = ", ".join(map(str, named)) or "none"
    return {
        "alert": "recflow_drift_retrain",
        "summary": (
            f"drift in {reason.get('cloud')} (drifted: {features}, window {reason.get('window')}): "
            "recsys_retrain asked for a retrain"
        ),
        "reason": dict(reason),
        "asset": DRIFT_ASSET.uri,
        "dag_id": dag_id,
        "run_id": run_id,
    }


class DriftAlert(WebhookNotifier):
    """Tells people a drift asked for a retrain: a warning, and a JSON POST to a webhook.

    The ``on_success_callback`` of ``signal_drift``: the task succeeds only when it emitted the
    drift event, whose extra (the reason) the alert reports. A webhook that fails is logged;
    the alert never fails the task.

    Args:
        webhook_url: ``monitor.webhook_url``; None: the log line only.
        timeout_s: ``monitor.webhook_timeout_s``.
    """

    what = "drift alert"

    def notify(self, context: Any) -> None:
        """Log the alert and POST it when a webhook is set.

        Args:
            context: The task's Airflow context, after ``signal_drift`` emitted its event.
        """
        reason = context["outlet_events"][DRIFT_ASSET].extra
        if not reason:
            return
        dag_run = context.get("dag_run")
        payload = alert_payload(
            reason,
            dag_id=getattr(dag_run, "dag_id", ""),
            run_id=getattr(dag_run, "run_id", ""),
        )
        log.warning("%s", payload["summary"])
        self.post(payload)
