"""Drift: does the current traffic look like what a model version was registered with?

One Evidently report compares the featurized current requests with the version's featurized
reference, one ``ValueDrift`` per feature (a distance method and its threshold from
``monitor.features``) plus a ``DriftedColumnsCount``. Every feature becomes a
:class:`~pipelines.core.judgment.Check`; recflow adds two checks of its own over item ids,
which the features cannot see: the Jensen-Shannon divergence of item popularity and the share
of traffic on items unseen in training.

The verdict is the monitor's word for the judgment's outcome (:data:`DRIFT`): ``drift`` when
the share of drifted features reaches ``monitor.drift_share`` or one of recflow's own checks
failed; ``insufficient_data`` when the current rows are fewer than ``monitor.min_requests``
(every drift check is then inconclusive, never failed); ``no_drift`` otherwise. The
per-feature checks are the evidence; the checks in :data:`DECIDING` decide.

Evidently is imported inside the functions that use it: importing it takes seconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import atomic_path, write_text
from pipelines.core.judgment import Check, Judgment, Outcome, Status, worst
from pipelines.core.params import FEATURE_NAMES, FeatureDrift, MonitorConfig
from pipelines.monitoring.features import (
    PREDICTION_FEATURES,
    ItemCounts,
    Profile,
    item_counts,
    unseen_share,
)
from pipelines.monitoring.summary import WORDS

# the monitor's words for the outcomes: one vocabulary, the summary contract's
DRIFT = WORDS

NUMERICAL_FEATURES: tuple[str, ...] = ("history_length", "history_price", "unknown_share")
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(
    name for name in FEATURE_NAMES if name not in NUMERICAL_FEATURES
)

# the checks that decide the verdict; the per-feature checks are their evidence
REQUESTS = "requests"
DRIFTED_FEATURES = "drifted_features"
POPULARITY_JS = "popularity_js"
UNSEEN_SHARE = "unseen_share"
DECIDING: tuple[str, ...] = (REQUESTS, DRIFTED_FEATURES, POPULARITY_JS, UNSEEN_SHARE)

# The popularity divergence compares the reference's most popular items one by one and the
# rest as one bin. With a bin per item, a few thousand occurrences spread over thousands of
# items differ by chance alone (the divergence's bias grows with bins / occurrences); so the
# head holds at most POPULARITY_HEAD items and at least OCCURRENCES_PER_BIN current
# occurrences per bin on average.
POPULARITY_HEAD = 1000
OCCURRENCES_PER_BIN = 50

NO_PREDICTIONS = "no model answers to compare (an events batch, or a reference without them)"


@dataclass(frozen=True)
class FeatureScore:
    """One feature's Evidently drift score, as the summary lists a drifted feature."""

    feature: str
    method: str
    score: float
    threshold: float


@dataclass(frozen=True)
class DriftResult(Judgment):
    """What :func:`drift_report` found.

    Attributes:
        checks: One check per configured feature (in ``FEATURE_NAMES`` order), then the
            deciding checks ``requests``, ``drifted_features``, ``popularity_js`` and
            ``unseen_share``.
        scores: Each scored feature's Evidently drift score, and ``drifted_share``,
            ``popularity_js`` and ``unseen_share`` where computed (never NaN).
        features: The scored features, drifted or not, in ``FEATURE_NAMES`` order.
        rows: Current rows given.
        sampled: Current rows Evidently compared (a seeded sample when ``rows`` exceeds
            ``monitor.sample_rows``).
        predicted: Current rows whose answers the prediction features compare (those the
            compared version answered; 0 for an events batch).
        reference_rows: Reference rows Evidently compared.
        snapshot: Evidently's report (``evidently.core.report.Snapshot``); ``None`` where
            nothing could be compared (no current rows, or no feature with values).
    """

    checks: tuple[Check, ...]
    scores: dict[str, float]
    features: tuple[FeatureScore, ...]
    rows: int
    sampled: int
    predicted: int
    reference_rows: int
    snapshot: Any = field(default=None, compare=False, repr=False)

    @property
    def outcome(self) -> Outcome:
        """The worst outcome of the deciding checks (:data:`DECIDING`)."""
        return worst(c.outcome for c in self.checks if c.metric in DECIDING)

    @property
    def verdict(self) -> str:
        """The outcome in the monitor's words: ``no_drift``, ``drift`` or ``insufficient_data``."""
        return DRIFT.word(self.outcome)

    @property
    def drifted(self) -> tuple[FeatureScore, ...]:
        """The features whose check failed (score at or above the threshold)."""
        failed = {c.metric for c in self.checks if c.outcome == "fail"}
        return tuple(f for f in self.features if f.feature in failed)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorConfig,
    *,
    seed: int,
    predictions: bool,
    prediction_rows: pd.DataFrame | None = None,
    reference_counts: ItemCounts | None = None,
    current_requests: pa.Table | None = None,
    profile: Profile | None = None,
) -> DriftResult:
    """Judge the drift of ``current`` from ``reference``, feature by feature and by item ids.

    Args:
        reference: The version's featurized reference (columns ``FEATURE_NAMES``).
        current: The featurized current requests (columns ``FEATURE_NAMES``).
        cfg: The ``monitor`` section: methods and thresholds, sample size, minimum requests.
        seed: Seeds the sample of current rows given to Evidently.
        predictions: Whether the current rows hold the model's answers; for an events batch
            (``False``) the prediction features are skipped.
        prediction_rows: The rows of ``current`` (by index) whose answers the prediction
            features compare, e.g. those the compared version answered (a canary's answers
            say nothing about the stable version); ``None``: all rows.
        reference_counts: History item occurrences of the reference, for ``popularity_js``.
        current_requests: The table of requests ``current`` was featurized from, for the
            current history item occurrences (all rows, not only the sample).
        profile: The version's popularity buckets, for ``unseen_share``.

    Returns:
        The checks, scores, sample sizes and Evidently's snapshot. ``popularity_js`` is
        skipped without ``reference_counts`` and ``current_requests``; ``unseen_share``
        without ``current_requests`` and ``profile``.

    Raises:
        InputError: A frame lacks a feature column, or the reference has no rows.
    """
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in FEATURE_NAMES if c not in frame.columns]
        if missing:
            raise InputError(f"the {name} features lack the columns {missing}")
    if len(reference) == 0:
        raise InputError("the reference features have no rows: there is nothing to compare with")

    rows = len(current)
    enough = rows >= cfg.min_requests
    if predictions and prediction_rows is not None:
        answered = current.index.isin(prediction_rows.index)
    else:
        answered = np.ones(rows, dtype=bool)
    predicted = int(answered.sum()) if predictions else 0
    sample = _sample(current, answered, cfg.sample_rows, seed)
    specs = _specs(cfg)
    judged = [name for name in FEATURE_NAMES if name in specs]
    skipped = set() if predictions else set(PREDICTION_FEATURES)
    empty = {
        name: side
        for name in judged
        if name not in skipped
        for side, frame in (("current", sample), ("reference", reference))
        if frame[name].notna().sum() == 0
    }
    compared = [name for name in judged if name not in skipped and name not in empty]

    snapshot, values = _evidently(reference, sample, cfg, compared)
    checks: list[Check] = []
    features: list[FeatureScore] = []
    for name in judged:
        spec = specs[name]
        if name in skipped:
            checks.append(Check(metric=name, outcome="skipped", detail=NO_PREDICTIONS))
            continue
        if name in empty:
            checks.append(
                Check(
                    metric=name,
                    outcome="inconclusive",
                    limit=spec.threshold,
                    detail=f"{name}: no values in the {empty[name]} requests to compare",
                )
            )
            continue
        score = values[name]
        features.append(FeatureScore(name, spec.method, score, spec.threshold))
        if name in PREDICTION_FEATURES and predicted < rows:
            judged_rows, whose = predicted, " answered by the compared version"
        else:
            judged_rows, whose = rows, ""
        checks.append(_feature_check(name, spec, score, judged_rows, whose, cfg.min_requests))

    scores = {f.feature: f.score for f in features}
    # the share counts the features judged, or with too few rows overall the ones measured
    status = {c.metric: c.outcome for c in checks}
    counted = [
        f
        for f in features
        if not math.isnan(f.score) and (status[f.feature] != "inconclusive" or not enough)
    ]
    drifted = sum(f.score >= f.threshold for f in counted)
    share = drifted / len(counted) if counted else math.nan
    checks.append(_requests_check(rows, cfg.min_requests))
    checks.append(_share_check(share, drifted, len(counted), cfg.drift_share, enough))
    if not math.isnan(share):
        scores["drifted_share"] = share
    counts = item_counts(current_requests) if current_requests is not None else None
    divergence = (
        popularity_divergence(reference_counts, counts)
        if reference_counts is not None and counts is not None
        else None
    )
    unseen = unseen_share(counts, profile) if counts is not None and profile is not None else None
    checks.append(
        _item_check(
            POPULARITY_JS,
            "Jensen-Shannon divergence of item popularity",
            divergence,
            cfg.popularity_js_threshold,
            strict=False,
            enough=enough,
            scores=scores,
        )
    )
    checks.append(
        _item_check(
            UNSEEN_SHARE,
            "share of history items unseen in training",
            unseen,
            cfg.max_unseen_share,
            strict=True,
            enough=enough,
            scores=scores,
        )
    )
    return DriftResult(
        checks=tuple(checks),
        scores=scores,
        features=tuple(features),
        rows=rows,
        sampled=len(sample),
        predicted=predicted,
        reference_rows=len(reference),
        snapshot=snapshot,
    )


def popularity_divergence(reference: ItemCounts, current: ItemCounts) -> float:
    """Jensen-Shannon divergence (base 2, from 0 to 1) of item popularity.

    The bins are the reference's most popular items, one each, and one bin for every other
    item (items the reference never saw and the history items the model did not know among
    them); the head holds at most :data:`POPULARITY_HEAD` items and at most one per
    :data:`OCCURRENCES_PER_BIN` current occurrences, so that chance alone keeps the divergence
    far below its threshold.

    Args:
        reference: Occurrences of each item id in the reference histories.
        current: Occurrences of each item id in the current histories.

    Returns:
        The divergence; NaN when either side has no history items.
    """
    ref_total, cur_total = float(reference.total), float(current.total)
    if cur_total <= 0 or ref_total <= 0:
        return math.nan
    ref_ids = reference.ids.astype(str)
    ref_counts = reference.counts.astype(np.float64)
    head_size = int(min(POPULARITY_HEAD, max(1, cur_total // OCCURRENCES_PER_BIN)))
    # most popular first, ties by id: the same counts give the same head
    head = np.lexsort((ref_ids, -ref_counts))[:head_size]
    cur_ids = current.ids.astype(str)
    order = np.argsort(cur_ids, kind="stable")
    found = np.searchsorted(cur_ids, ref_ids[head], sorter=order).clip(max=max(len(cur_ids) - 1, 0))
    q_head = np.zeros(len(head), dtype=np.float64)
    if len(cur_ids):
        at = order[found]
        hit = cur_ids[at] == ref_ids[head]
        q_head[hit] = current.counts[at[hit]]
    p = np.append(ref_counts[head], ref_total - ref_counts[head].sum())
    q = np.append(q_head, cur_total - q_head.sum())
    return _js_divergence(p / p.sum(), q / q.sum())


def save_html(result: DriftResult, path: Path) -> None:
    """Write Evidently's report (self-contained, renders offline) to ``path`` atomically.

    Where nothing was compared (no snapshot) a short page says why.

    Args:
        result: What :func:`drift_report` found.
        path: The HTML file to write.
    """
    if result.snapshot is None:
        reasons = "".join(f"<li>{_escape(c.detail)}</li>" for c in result.checks if c.detail)
        write_text(
            path,
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>recflow drift</title>"
            f"</head><body><h1>Drift: {result.verdict}</h1>"
            f"<p>{result.rows} requests; nothing for Evidently to compare.</p>"
            f"<ul>{reasons}</ul></body></html>\n",
        )
        return
    with atomic_path(path) as tmp:
        result.snapshot.save_html(str(tmp))


def _specs(cfg: MonitorConfig) -> dict[str, FeatureDrift]:
    """The configured features' methods and thresholds, by feature name."""
    return {str(name): spec for name, spec in cfg.features.items()}


def _sample(
    current: pd.DataFrame, answered: np.ndarray, sample_rows: int, seed: int
) -> pd.DataFrame:
    """At most ``sample_rows`` of ``current`` (all for 0), a seeded sample in the rows' order,
    with the prediction features blanked (NaN, which Evidently leaves out) where not
    ``answered``."""
    picked = np.arange(len(current))
    if 0 < sample_rows < len(current):
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(current), size=sample_rows, replace=False))
    sample = current.iloc[picked]
    if answered[picked].all():
        return sample
    sample = sample.copy()
    blank = ~answered[picked]
    for name in PREDICTION_FEATURES:
        sample[name] = sample[name].astype(object).where(~blank, None)
    return sample


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The ``columns`` with the dtypes Evidently handles fastest: float64 and category."""
    return pd.DataFrame(
        {
            name: (
                frame[name].astype("float64")
                if name in NUMERICAL_FEATURES
                else frame[name].astype("category")
            )
            for name in columns
        }
    )


def _evidently(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig, compared: list[str]
) -> tuple[Any, dict[str, float]]:
    """Run one Evidently report over the ``compared`` features: the snapshot and each score."""
    if not compared or len(current) == 0:
        return None, {}
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    definition = DataDefinition(
        numerical_columns=[c for c in compared if c in NUMERICAL_FEATURES],
        categorical_columns=[c for c in compared if c in CATEGORICAL_FEATURES],
    )
    configured = _specs(cfg)
    specs = {name: configured[name] for name in compared}
    metrics: list[Any] = [
        ValueDrift(column=name, method=spec.method, threshold=spec.threshold)
        for name, spec in specs.items()
    ]
    metrics.append(
        DriftedColumnsCount(
            columns=compared,
            drift_share=cfg.drift_share,
            per_column_method={name: spec.method for name, spec in specs.items()},
            per_column_threshold={name: spec.threshold for name, spec in specs.items()},
        )
    )
    with warnings.catch_warnings():
        # small samples make Evidently's summary statistics divide by zero; the scores stand
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(metrics).run(
            Dataset.from_pandas(_typed(current, compared), data_definition=definition),
            Dataset.from_pandas(_typed(reference, compared), data_definition=definition),
        )
    values: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        column = metric["config"].get("column")
        if column in specs:
            values[column] = float(metric["value"])
    return snapshot, values


def _feature_check(
    name: str, spec: FeatureDrift, score: float, rows: int, whose: str, min_requests: int
) -> Check:
    """A feature's check: its Evidently score against its threshold, from ``rows`` requests."""
    method, threshold = spec.method, spec.threshold
    if math.isnan(score):
        return Check(
            metric=name,
            outcome="inconclusive",
            limit=threshold,
            detail=f"{name}: Evidently's {method} gave no score",
        )
    if rows < min_requests:
        return Check(
            metric=name,
            outcome="inconclusive",
            value=score,
            limit=threshold,
            detail=(
                f"{name}: {method} {score:.3f} from {rows} requests{whose}, fewer than the "
                f"{min_requests} needed to judge drift"
            ),
        )
    drifted = score >= threshold
    relation = "reaches" if drifted else "is below"
    return Check(
        metric=name,
        outcome="fail" if drifted else "pass",
        value=score,
        limit=threshold,
        detail=f"{name}: {method} {score:.3f} {relation} the threshold {threshold:g}",
    )


def _requests_check(rows: int, min_requests: int) -> Check:
    enough = rows >= min_requests
    return Check(
        metric=REQUESTS,
        outcome="pass" if enough else "inconclusive",
        value=rows,
        limit=min_requests,
        detail=(
            f"{rows} requests"
            + ("" if enough else f", fewer than the {min_requests} needed to judge drift")
        ),
    )


def _share_check(share: float, drifted: int, scored: int, limit: float, enough: bool) -> Check:
    if math.isnan(share):
        return Check(
            metric=DRIFTED_FEATURES,
            outcome="inconclusive",
            limit=limit,
            detail="no feature could be compared",
        )
    outcome: Status = "fail" if share >= limit else "pass"
    return Check(
        metric=DRIFTED_FEATURES,
        outcome=outcome if enough else "inconclusive",
        value=share,
        limit=limit,
        detail=f"{drifted} of {scored} features drifted (share {share:.2f}, limit {limit:g})",
    )


def _item_check(
    metric: str,
    what: str,
    value: float | None,
    limit: float,
    *,
    strict: bool,
    enough: bool,
    scores: dict[str, float],
) -> Check:
    """One of recflow's own checks: ``value`` fails at ``limit`` (above it where ``strict``);
    records the value in ``scores``."""
    if value is None:
        return Check(metric=metric, outcome="skipped", detail=f"{what}: no item counts given")
    if math.isnan(value):
        return Check(
            metric=metric,
            outcome="inconclusive",
            limit=limit,
            detail=f"{what}: no history items to count",
        )
    value = float(value)
    scores[metric] = value
    failed = value > limit if strict else value >= limit
    outcome: Status = "fail" if failed else "pass"
    return Check(
        metric=metric,
        outcome=outcome if enough else "inconclusive",
        value=value,
        limit=limit,
        detail=f"{what} {value:.3f} (limit {limit:g})",
    )


def _js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits of two probability vectors over the same bins."""
    m = 0.5 * (p + q)
    return float(0.5 * _kl_bits(p, m) + 0.5 * _kl_bits(q, m))


def _kl_bits(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
