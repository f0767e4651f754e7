"""The summary of one monitor window: ``summary.json`` as a typed contract, and ``latest.json``.

Each window's folder ``reports/monitoring/<cloud>/<window>/`` holds a :class:`MonitorSummary`
in ``summary.json`` with ``summary.schema.json`` beside it: the verdict in the monitor's words,
every check (the drift of each feature, recflow's own popularity checks, online quality), the
features that drifted, the online quality of each version and arm, the request-log files that
were left out and the alerts raised. Whatever reads a window (the trend plot, the drift signal
of the loop, a person) reads it through this model.

``reports/monitoring/<cloud>/latest.json`` points at the newest window's summary with its
sha256: :func:`read_latest` follows the pointer and refuses a summary whose bytes changed since,
naming the file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, cast

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AwareDatetime, ConfigDict, Field, ValidationError, model_validator

from pipelines.core.contracts import Contract, problems, read_contract, write_contract
from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file, write_json
from pipelines.core.judgment import Check, Judgment, Outcome, Vocabulary

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
LATEST_FILE = "latest.json"
SUMMARY_VERSION: Final = 1

# the monitor's words for a judgment's outcomes (a failing one is drift)
WORDS = Vocabulary(passed="no_drift", failed="drift", inconclusive="insufficient_data")
Verdict = Literal["no_drift", "drift", "insufficient_data"]

# recflow's own drift checks beside Evidently's per-feature ones (a failure is drift)
OWN_DRIFT_CHECKS = ("popularity_js", "unseen_share")

# a window's folder: a traffic window's bounds, or an events batch's sha256 prefix
WINDOW_PATTERN = r"^(\d{8}T\d{6}Z--\d{8}T\d{6}Z|events-[0-9a-f]{12})$"


class Window(Contract):
    """What was monitored: a span of served traffic, or one events batch."""

    name: str = Field(pattern=WINDOW_PATTERN)
    """The window's folder: ``YYYYMMDDTHHMMSSZ--YYYYMMDDTHHMMSSZ`` (since, until) for traffic,
    ``events-<sha256[:12]>`` of the events file for a batch."""
    since: AwareDatetime | None
    """Its first instant (requests at or after it); null for an events batch."""
    until: AwareDatetime | None
    """The instant after its last request; null for an events batch."""


class ReferenceInfo(Contract):
    """What the window was compared with."""

    version: str | None
    """The model version whose stored reference was used; null for a prepare stage's folder."""
    kind: Literal["version", "prepared"]
    """``version``: the reference stored with a registered version; ``prepared``: built from a
    prepare stage's folder (no prediction features)."""


class DriftedFeature(Contract):
    """A feature whose drift score reached its threshold."""

    feature: str
    method: str
    """Evidently's drift method (a distance, e.g. ``wasserstein``, ``jensenshannon``)."""
    score: float
    threshold: float

    @classmethod
    def of(cls, found: Any) -> DriftedFeature:
        """The record of ``found``: a mapping or an object with these fields' names."""
        get = _getter(found)
        return cls(
            feature=str(get("feature")),
            method=str(get("method")),
            score=float(get("score")),
            threshold=float(get("threshold")),
        )


class QualityRecord(Contract):
    """Online quality of one version in one arm: was the user's next event among the first k
    items served before it."""

    version: str
    arm: str
    requests: int
    """Requests of this version and arm in the window."""
    with_feedback: int
    """Requests followed by a next event of the same user within the attribution time."""
    hits: int
    """Of those, requests whose next event's item was among the first k served."""
    hit_rate: float | None
    """``hits / with_feedback``; null without feedback."""
    low: float | None
    """Lower end of the hit rate's Wilson interval; null without feedback."""
    high: float | None
    """Upper end of the interval; null without feedback."""
    no_feedback_share: float
    """Share of the requests with no next event (unknown: neither hit nor miss)."""

    @model_validator(mode="after")
    def _consistent(self) -> QualityRecord:
        if not self.hits <= self.with_feedback <= self.requests:
            raise ValueError(
                f"{self.version} ({self.arm}): needs hits {self.hits} <= with_feedback "
                f"{self.with_feedback} <= requests {self.requests}"
            )
        if len({self.hit_rate is None, self.low is None, self.high is None}) != 1:
            raise ValueError(f"{self.version} ({self.arm}): hit_rate, low and high go together")
        return self

    @classmethod
    def of(cls, figure: Any) -> QualityRecord:
        """The record of ``figure``: a mapping or an object with these fields' names (numpy
        numbers become plain ones; without feedback, or where NaN, the rate and its interval
        become null rather than a placeholder such as 0 and 0..1)."""
        get = _getter(figure)
        with_feedback = int(get("with_feedback"))
        rates = [
            _rate(get(name)) if with_feedback else None for name in ("hit_rate", "low", "high")
        ]
        return cls(
            version=str(get("version")),
            arm=str(get("arm")),
            requests=int(get("requests")),
            with_feedback=with_feedback,
            hits=int(get("hits")),
            hit_rate=rates[0],
            low=rates[1],
            high=rates[2],
            no_feedback_share=float(get("no_feedback_share")),
        )


class SkippedFile(Contract):
    """A request-log file that was left out, and why."""

    path: str
    reason: str

    @classmethod
    def of(cls, skipped: Any) -> SkippedFile:
        """The record of ``skipped``: a mapping or an object with ``path`` and ``reason``."""
        get = _getter(skipped)
        return cls(path=str(get("path")), reason=str(get("reason")))


class Alert(Contract):
    """An alert raised by a window (logged, and posted to the webhook when one is set)."""

    kind: Literal["drift", "online_quality"]
    cloud: str
    window: str
    detail: str
    """The alert in words, one sentence for a person."""
    features: tuple[str, ...] = ()
    """The drifted features and failed checks (a drift alert)."""
    version: str | None = None
    """The version whose online quality is low (an online-quality alert)."""
    arm: str | None = None


class MonitorSummary(Contract, Judgment):
    """``summary.json``: what one monitor window found.

    A judgment (:mod:`pipelines.core.judgment`): ``outcome`` is the drift judgment's, and
    ``verdict`` says it in the monitor's words.
    """

    model_config = ConfigDict(validate_by_name=True)

    schema_version: Literal[1]
    """Version of this layout; a reader refuses another one."""
    verdict: Verdict
    """``drift``, ``no_drift`` or ``insufficient_data`` (too few requests: never drift)."""
    outcome: Outcome
    """The drift judgment's outcome (``fail`` is drift)."""
    overall: Outcome
    """The worst outcome of every check, online quality included."""
    cloud: str
    window: Window
    source: Literal["traffic", "events"]
    """``traffic``: the request log of the cloud; ``events``: an incoming events batch."""
    events: str | None = None
    """The events file of a batch; null for traffic."""
    created: AwareDatetime
    """When the monitor ran."""
    reference: ReferenceInfo
    versions: tuple[str, ...]
    """Model versions that answered requests in the window (none for an events batch)."""
    arms: tuple[str, ...]
    """Arms seen (``stable``, ``canary``; ``batch`` for an events batch)."""
    rows: int = Field(ge=0)
    """Requests in the window."""
    sampled_rows: int = Field(ge=0)
    """Of those, the rows Evidently compared (a seeded sample)."""
    files: int = Field(ge=0)
    """Request-log files read (0 for an events batch)."""
    checks: tuple[Check, ...]
    """Every check, in the order they ran (skipped ones too)."""
    drifted: tuple[DriftedFeature, ...]
    """The features whose score reached their threshold."""
    quality: tuple[QualityRecord, ...]
    """Online quality per version and arm; empty without feedback."""
    quality_note: str | None = None
    """Why there is no online quality, where there is none."""
    skipped: tuple[SkippedFile, ...]
    """Request-log files left out (empty, truncated, unreadable, another layout)."""
    alerts: tuple[Alert, ...] = ()
    """The alerts the window raised."""

    @model_validator(mode="after")
    def _consistent(self) -> MonitorSummary:
        if self.verdict != WORDS.word(self.outcome):
            raise ValueError(
                f"verdict {self.verdict!r} does not say outcome {self.outcome!r} "
                f"(that is {WORDS.word(self.outcome)!r})"
            )
        if (self.window.since is None) != (self.source == "events"):
            raise ValueError("a traffic window has since and until; an events batch has neither")
        if self.sampled_rows > self.rows:
            raise ValueError(f"sampled_rows {self.sampled_rows} exceeds rows {self.rows}")
        return self


def build_summary(
    *,
    outcome: Outcome,
    overall: Outcome,
    cloud: str,
    window: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    source: Literal["traffic", "events"],
    reference_version: str | None,
    reference_kind: Literal["version", "prepared"],
    requests: pa.Table,
    sampled: int,
    checks: Iterable[Check],
    drifted: Iterable[Any],
    quality: Iterable[Any],
    skipped: Iterable[Any],
    files: int,
    created: dt.datetime,
    events: str | None = None,
    quality_note: str | None = None,
    alerts: Iterable[Alert] = (),
) -> MonitorSummary:
    """The summary of a window, from what the monitor computed.

    Args:
        outcome: The drift judgment's outcome; the verdict word follows from it.
        overall: The worst outcome of all checks, online quality included.
        cloud: The cloud monitored.
        window: The window's folder name.
        since: A traffic window's first instant (None for an events batch).
        until: The instant after its last request (None for an events batch).
        source: ``traffic`` or ``events``.
        reference_version: The version of the reference (None for a prepared folder).
        reference_kind: ``version`` or ``prepared``.
        requests: The window's table of requests (versions and arms are read from it).
        sampled: Rows Evidently compared.
        checks: Every check.
        drifted: The drifted features (mappings or objects with ``feature``, ``method``,
            ``score``, ``threshold``).
        quality: Quality figures per version and arm (see :meth:`QualityRecord.of`).
        skipped: Skipped files (objects or mappings with ``path`` and ``reason``).
        files: Request-log files read.
        created: When the monitor ran (timezone-aware).
        events: The events file of a batch.
        quality_note: Why there is no online quality.
        alerts: The alerts raised.

    Raises:
        InputError: The parts do not make a valid summary (the message names the fields).
    """
    versions = sorted(v for v in _distinct(requests, "model_version") if v)
    arms = sorted(a for a in _distinct(requests, "arm") if a)
    try:
        return MonitorSummary(
            schema_version=SUMMARY_VERSION,
            verdict=cast(Verdict, WORDS.word(outcome)),
            outcome=outcome,
            overall=overall,
            cloud=cloud,
            # as mappings, so a problem is named by its full place (``window.name``)
            window={"name": window, "since": since, "until": until},  # type: ignore[arg-type]
            source=source,
            events=events,
            created=created,
            reference={"version": reference_version, "kind": reference_kind},  # type: ignore[arg-type]
            versions=tuple(versions),
            arms=tuple(arms),
            rows=requests.num_rows,
            sampled_rows=int(sampled),
            files=int(files),
            checks=tuple(checks),
            drifted=tuple(DriftedFeature.of(d) for d in drifted),
            quality=tuple(QualityRecord.of(q) for q in quality),
            quality_note=quality_note,
            skipped=tuple(SkippedFile.of(s) for s in skipped),
            alerts=tuple(alerts),
        )
    except ValidationError as exc:
        raise InputError(f"the summary of window {window} is not valid: {problems(exc)}") from exc


def write_summary(path: Path, summary: MonitorSummary) -> str:
    """Write ``summary`` to ``path`` (``summary.json``) with its schema beside it, atomically.

    Returns:
        The sha256 of the bytes written.
    """
    write_contract(path, summary)
    return sha256_file(path)


def read_summary(path: Path) -> MonitorSummary:
    """The summary in ``path``.

    Raises:
        InputError: It is missing, unreadable, of another schema version, or does not match
            :class:`MonitorSummary`; the message names the file.
    """
    return read_contract(path, MonitorSummary, "monitor summary", stage="monitor")


@dataclass(frozen=True)
class Latest:
    """The newest window of a cloud, as ``latest.json`` points at it.

    Attributes:
        path: Its ``summary.json``.
        sha256: The sha256 of that file, as recorded and as found.
        summary: The summary read through the contract.
    """

    path: Path
    sha256: str
    summary: MonitorSummary


def write_latest(cloud_dir: Path, summary_file: Path) -> str:
    """Point ``cloud_dir/latest.json`` at ``summary_file`` (a window's ``summary.json`` in
    ``cloud_dir``), with the file's sha256.

    Returns:
        The sha256 recorded.

    Raises:
        InputError: ``summary_file`` is not a window's summary inside ``cloud_dir``.
    """
    try:
        relative = summary_file.resolve().relative_to(cloud_dir.resolve())
    except ValueError:
        raise InputError(f"{summary_file} is not inside {cloud_dir}") from None
    pointer = PurePosixPath(*relative.parts)
    _check_pointer(pointer, cloud_dir / LATEST_FILE)
    digest = sha256_file(summary_file)
    write_json(cloud_dir / LATEST_FILE, {"summary": str(pointer), "sha256": digest})
    return digest


def read_latest(cloud_dir: Path) -> Latest:
    """The summary ``cloud_dir/latest.json`` points at, checked against its recorded sha256.

    Raises:
        InputError: The pointer is missing or malformed, points outside ``cloud_dir`` or at a
            missing file, or the summary's bytes do not match the recorded sha256 (the message
            names the file), or the summary is not valid.
    """
    latest = cloud_dir / LATEST_FILE
    if not latest.is_file():
        raise InputError(f"{latest} not found (run the monitor stage first)")
    try:
        raw = json.loads(latest.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"{latest} is not readable JSON: {exc}") from exc
    if (
        not isinstance(raw, Mapping)
        or set(raw) != {"summary", "sha256"}
        or not all(isinstance(v, str) for v in raw.values())
    ):
        raise InputError(f"{latest} must hold exactly the strings 'summary' and 'sha256'")
    pointer = PurePosixPath(raw["summary"])
    _check_pointer(pointer, latest)
    path = cloud_dir.joinpath(*pointer.parts)
    if not path.is_file():
        raise InputError(f"{latest} points at {path}, which does not exist")
    found = sha256_file(path)
    if found != raw["sha256"]:
        raise InputError(
            f"{path} was changed after {latest} recorded it: sha256 {found}, "
            f"recorded {raw['sha256']}"
        )
    return Latest(path=path, sha256=found, summary=read_summary(path))


def _check_pointer(pointer: PurePosixPath, latest: Path) -> None:
    parts = pointer.parts
    if pointer.is_absolute() or len(parts) != 2 or parts[1] != SUMMARY_FILE:
        raise InputError(f"{latest}: {pointer} is not <window>/{SUMMARY_FILE}")
    window = parts[0]
    try:
        Window(name=window, since=None, until=None)
    except ValidationError:
        raise InputError(f"{latest}: {window!r} is not a window's folder name") from None


def _distinct(requests: pa.Table, column: str) -> list[str]:
    if column not in requests.column_names or requests.num_rows == 0:
        return []
    return [str(v) for v in pc.unique(requests.column(column)).to_pylist() if v is not None]


def _getter(found: Any) -> Any:
    if isinstance(found, Mapping):
        return found.__getitem__
    return lambda name: getattr(found, name)


def _rate(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if number != number else number
