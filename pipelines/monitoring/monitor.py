"""One monitor run: a window of served traffic (or an incoming batch) against a version's reference.

The steps, each in its own module:

1. the reference: what the version was trained on, featurized once when it was built
   (``reference``) and kept with the version in the registry; or a prepare stage's folder;
2. the current rows: the request log of one cloud over a window (``traffic``), or an events
   batch that passed validation, turned into the same table of requests (``requests``);
3. the features of both (``features``), the drift of each with Evidently and recflow's own
   checks (``drift``), and online quality where feedback is given (``quality``);
4. the outputs of the window, written together (``summary``, ``gauges``, ``trend``), and the
   alerts (``alerts``).

The window's folder is written whole or not at all: a run that fails leaves what earlier runs
wrote as it was.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import atomic_dir, read_parquet, sha256_file
from pipelines.core.judgment import Check, Status, worst
from pipelines.core.params import Params
from pipelines.monitoring import alerts, gauges, summary, trend
from pipelines.monitoring.drift import DriftResult, drift_report, save_html
from pipelines.monitoring.features import featurize
from pipelines.monitoring.quality import (
    QualityFigure,
    feedback_from_events,
    feedback_from_sessions,
    online_quality,
)
from pipelines.monitoring.reference import Reference, load_reference, reference_from_prepared
from pipelines.monitoring.requests import events_as_requests
from pipelines.monitoring.traffic import TrafficRead, read_request_log, window_name

log = logging.getLogger("recflow.monitor")


@dataclass(frozen=True)
class Source:
    """What the current rows are: a cloud's traffic over a window, or an events batch."""

    cloud: str
    since: dt.datetime
    until: dt.datetime
    events: Path | None = None


@dataclass(frozen=True)
class Feedback:
    """Where users' later events come from: replayed sessions or an events batch (or none)."""

    prepared: Path | None = None
    split: str = "test"
    events: Path | None = None


@dataclass(frozen=True)
class Outcome:
    """What a monitor run wrote and found."""

    folder: Path
    verdict: str
    document: summary.MonitorSummary


def _shown(path: Path, root: Path) -> str:
    """``path`` as recorded: relative to the project root where it is under it."""
    path, base = path.resolve(), root.resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else path.name


def _events_table(path: Path, params: Params) -> tuple[pa.Table, str]:
    """The events of a batch that passes validation, and the sha256 of its events file.

    Raises:
        InputError: The batch cannot be read or fails validation (naming the file and what failed).
    """
    # validation's readers are heavy (Great Expectations): only an events run imports them
    from pipelines.data.validation.batch import validate_batch

    outcome = validate_batch(
        params.validate_,
        params.run,
        path,
        window_days=params.ingest.window_days,
        reports=None,
    )
    events_file = outcome.batch.events
    if not outcome.success:
        problems = "; ".join(str(f) for f in list(outcome.failures)[:5])
        raise InputError(f"{events_file} fails validation, so it is not monitored: {problems}")
    return read_parquet(events_file, "the events batch"), sha256_file(events_file)


def _quality(
    requests: pa.Table, feedback: Feedback, params: Params, pseudonymize: Any
) -> tuple[tuple[QualityFigure, ...], str | None]:
    """Online quality of ``requests`` per version and arm, or why there is none."""
    cfg = params.monitor.quality
    if feedback.prepared is not None:
        later = feedback_from_sessions(feedback.prepared, feedback.split, pseudonymize)
    elif feedback.events is not None:
        later, _ = _events_table(feedback.events, params)
        later = feedback_from_events(later, pseudonymize)
    else:
        return (), "no feedback source given (--feedback-prepared or --feedback-events)"
    figures = online_quality(
        requests,
        later,
        window_s=cfg.attribution_hours * 3600.0,
        k=cfg.k,
        confidence=cfg.confidence,
    )
    return figures, None


def _quality_checks(figures: tuple[QualityFigure, ...], params: Params) -> list[Check]:
    """One check per version and arm: fail when the interval lies wholly below the floor."""
    cfg = params.monitor.quality
    checks = []
    for figure in figures:
        record = summary.QualityRecord.of(figure)
        outcome: Status
        name = f"online_hit_rate[{figure.version or '-'}/{figure.arm}]"
        interval = f"interval {figure.low:.4f}..{figure.high:.4f}"
        if figure.with_feedback < cfg.min_feedback:
            outcome = "skipped"
            detail = (
                f"{figure.with_feedback} requests with feedback, fewer than {cfg.min_feedback}: "
                "not judged"
            )
        elif alerts.quality_low(record, cfg):
            outcome = "fail"
            detail = f"hit rate {figure.hit_rate:.4f} ({interval}) is below {cfg.min_hit_rate}"
        else:
            outcome = "pass"
            detail = f"hit rate {figure.hit_rate:.4f} ({interval})"
        checks.append(
            Check(
                metric=name,
                outcome=outcome,
                value=round(figure.hit_rate, 6),
                limit=cfg.min_hit_rate,
                detail=detail,
            )
        )
    return checks


def run_monitor(
    params: Params,
    root: Path,
    source: Source,
    *,
    reference: Reference,
    reference_version: str | None,
    reference_kind: Literal["version", "prepared"],
    feedback: Feedback,
    pseudonymize: Any,
    now: dt.datetime,
) -> Outcome:
    """Monitor ``source`` against ``reference``; write the window's folder and raise the alerts.

    Args:
        params: The project's params (``monitor``, ``serve.request_log``, ``validate``).
        root: The project root; relative paths of params are under it.
        source: The traffic window of a cloud, or an events batch.
        reference: The reference frames and profile.
        reference_version: The version the reference belongs to (None for a prepared folder).
        reference_kind: ``version`` or ``prepared``.
        feedback: Where online quality's later events come from.
        pseudonymize: The keyed hash of user ids (the request log's).
        now: When the run happened (recorded; the window was resolved by the caller).

    Returns:
        The folder written, the verdict word and the summary.

    Raises:
        InputError: The events batch is unreadable or fails validation.
    """
    cfg = params.monitor
    skipped: tuple[Any, ...] = ()
    files = 0
    if source.events is not None:
        events, digest = _events_table(source.events, params)
        # the items the version knows: the others count as unknown, as the server counts them
        requests = events_as_requests(events, reference.profile.item_ids, params.train.max_len)
        window = f"events-{digest[:12]}"
        kind = "events"
    else:
        read: TrafficRead = read_request_log(
            root / params.serve.request_log.dir / source.cloud, source.since, source.until
        )
        requests, skipped, files = read.table, tuple(read.skipped), read.files
        window = window_name(source.since, source.until)
        kind = "traffic"
    for item in skipped:
        log.warning("skipped %s: %s", item.path, item.reason)

    current = featurize(requests, reference.profile)
    predictions = kind == "traffic" and reference.has_predictions
    if predictions and reference_version is not None:
        # the answers of other versions (a canary, a stable arm) say nothing about this one's
        served = requests.column("model_version").to_numpy(zero_copy_only=False)
        prediction_rows = current.loc[served == reference_version]
    else:
        prediction_rows = None
    result: DriftResult = drift_report(
        reference.frame,
        current,
        cfg,
        seed=params.run.seed,
        predictions=predictions,
        prediction_rows=prediction_rows,
        reference_counts=reference.popularity,
        current_requests=requests,
        profile=reference.profile,
    )
    figures: tuple[QualityFigure, ...] = ()
    quality_note = None
    if kind == "traffic" and requests.num_rows:
        figures, quality_note = _quality(requests, feedback, params, pseudonymize)
    quality_checks = _quality_checks(figures, params)
    checks = (*result.checks, *quality_checks)
    traffic = kind == "traffic"
    document = summary.build_summary(
        outcome=result.outcome,
        overall=worst(c.outcome for c in checks),
        cloud=source.cloud,
        window=window,
        since=source.since if traffic else None,
        until=source.until if traffic else None,
        source="traffic" if traffic else "events",
        events=_shown(source.events, root) if source.events is not None else None,
        reference_version=reference_version,
        reference_kind=reference_kind,
        requests=requests,
        sampled=result.sampled,
        checks=checks,
        drifted=result.drifted,
        quality=figures,
        quality_note=quality_note,
        skipped=[
            summary.SkippedFile(path=_shown(Path(item.path), root), reason=item.reason)
            for item in skipped
        ],
        files=files,
        created=now,
    )
    alert_list = alerts.alerts_for(document, cfg.quality)
    document = document.model_copy(update={"alerts": tuple(alert_list)})
    verdict = document.verdict

    cloud_dir = root / cfg.out / source.cloud
    folder = cloud_dir / window
    with atomic_dir(folder) as tmp:
        save_html(result, tmp / summary.REPORT_FILE)
        summary.write_summary(tmp / summary.SUMMARY_FILE, document)
        gauges.write_textfile(tmp / gauges.TEXTFILE, document, now=now)
    summary.write_latest(cloud_dir, folder / summary.SUMMARY_FILE)
    gauges.write_textfile(cloud_dir / gauges.TEXTFILE, document, now=now)
    trend.write_trend(cloud_dir, cfg.history_windows, min_hit_rate=cfg.quality.min_hit_rate)
    alerts.raise_alerts(alert_list, cfg)
    return Outcome(folder=folder, verdict=verdict, document=document)


__all__ = [
    "Feedback",
    "Outcome",
    "Source",
    "load_reference",
    "reference_from_prepared",
    "run_monitor",
]
