"""Alerts of a monitor window: a drift verdict, or online quality below its floor.

:func:`alerts_for` decides, from a window's summary alone, which alerts it raises (a pure
function: the same summary always raises the same alerts). :func:`raise_alerts` says them: a
WARNING line on the ``recflow.monitor`` logger for each, and one JSON POST of all of them to
``monitor.webhook_url`` when it is set. An alert is advisory: a webhook that is down, slow or
refuses is logged and the monitor goes on; it never fails the run.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Sequence
from typing import Literal

from pipelines.core.params.monitor import MonitorConfig, QualityConfig
from pipelines.monitoring.summary import OWN_DRIFT_CHECKS, Alert, MonitorSummary, QualityRecord

log = logging.getLogger("recflow.monitor")

Delivery = Literal["none", "logged", "posted", "failed"]


def quality_low(figure: QualityRecord, cfg: QualityConfig) -> bool:
    """Whether ``figure``'s online quality is below the floor: enough requests with feedback
    (``cfg.min_feedback``) and the whole interval under ``cfg.min_hit_rate``."""
    return (
        figure.with_feedback >= cfg.min_feedback
        and figure.high is not None
        and figure.high < cfg.min_hit_rate
    )


def alerts_for(summary: MonitorSummary, cfg: QualityConfig) -> tuple[Alert, ...]:
    """The alerts ``summary`` raises: one for a drift verdict, one per version and arm whose
    online quality is low (:func:`quality_low`)."""
    found: list[Alert] = []
    where = f"{summary.cloud} {summary.window.name}"
    if summary.verdict == "drift":
        features = [d.feature for d in summary.drifted]
        features += [
            c.metric
            for c in summary.checks
            if c.outcome == "fail" and c.metric in OWN_DRIFT_CHECKS and c.metric not in features
        ]
        found.append(
            Alert(
                kind="drift",
                cloud=summary.cloud,
                window=summary.window.name,
                features=tuple(features),
                detail=f"{where}: drift in {', '.join(features) or 'the traffic'} "
                f"against the reference of {summary.reference.version or 'a prepared folder'}",
            )
        )
    for figure in summary.quality:
        if quality_low(figure, cfg):
            found.append(
                Alert(
                    kind="online_quality",
                    cloud=summary.cloud,
                    window=summary.window.name,
                    version=figure.version,
                    arm=figure.arm,
                    detail=f"{where}: online hit rate of {figure.version} ({figure.arm}) is "
                    f"{figure.hit_rate:.4f} (interval {figure.low:.4f}..{figure.high:.4f}, "
                    f"{figure.with_feedback} requests with feedback), below {cfg.min_hit_rate}",
                )
            )
    return tuple(found)


def payload(alerts: Sequence[Alert]) -> bytes:
    """The webhook's JSON body: ``{"source": "recflow.monitor", "alerts": [...]}``."""
    body = {
        "source": "recflow.monitor",
        "alerts": [alert.model_dump(mode="json") for alert in alerts],
    }
    return json.dumps(body, sort_keys=True).encode("utf-8")


def raise_alerts(alerts: Sequence[Alert], cfg: MonitorConfig) -> Delivery:
    """Log each alert as a WARNING and POST them all to ``cfg.webhook_url`` when it is set.

    Never raises: a webhook failure (refused, timed out, an error status) is logged.

    Returns:
        ``none`` (no alerts), ``logged`` (no webhook set), ``posted`` or ``failed``.
    """
    if not alerts:
        return "none"
    for alert in alerts:
        log.warning("monitor alert (%s): %s", alert.kind, alert.detail)
    if cfg.webhook_url is None:
        return "logged"
    request = urllib.request.Request(
        cfg.webhook_url,
        data=payload(alerts),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=cfg.webhook_timeout_s) as answer:
            status = answer.status
    # an alert is advisory: whatever goes wrong with the webhook must not fail the monitor
    except Exception as exc:
        log.warning("alert webhook %s failed: %s", cfg.webhook_url, str(exc) or type(exc).__name__)
        return "failed"
    if not 200 <= status < 300:
        log.warning("alert webhook %s answered %d", cfg.webhook_url, status)
        return "failed"
    log.info("posted %d alert(s) to %s", len(alerts), cfg.webhook_url)
    return "posted"
