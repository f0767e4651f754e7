"""Recommendation statistics of a batch, computed in pandas for the ``batch_metrics`` suite.

Shares of items and users not seen in the previous batch, the share of users with few events,
and the zone of the timestamps; a statistic that cannot be computed is left out with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.params import ValidateConfig
from pipelines.data.validation.frames import not_in


@dataclass(frozen=True)
class BatchMetrics:
    """Recommendation statistics of a batch; ``None`` where they could not be computed."""

    rows: int
    users: int | None = None
    items: int | None = None
    share_unseen_items: float | None = None
    share_unseen_users: float | None = None
    share_users_few_events: float | None = None
    timestamp_timezone: str | None = None
    previous_batch: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def frame(self) -> pd.DataFrame:
        """The one-row frame the ``batch_metrics`` suite runs on (computed values only)."""
        values = {name: [value] for name, value in self.checked().items()}
        return pd.DataFrame(values if values else {"rows": [self.rows]})

    def checked(self) -> dict[str, float | str]:
        """The metrics the suite checks, those that could be computed."""
        names = (
            "share_unseen_items",
            "share_unseen_users",
            "share_users_few_events",
            "timestamp_timezone",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _share(mask: pd.Series | pd.Index) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def _share_unseen(current: pd.Index, previous: pd.Series) -> float | None:
    if not len(current):
        return 0.0
    unseen = not_in(pa.array(current.to_numpy(dtype=object)), pa.array(previous.dropna().unique()))
    return None if unseen is None else pc.mean(pc.cast(unseen, pa.float64())).as_py()


def compute_batch_metrics(
    events: pd.DataFrame,
    cfg: ValidateConfig,
    previous: pd.DataFrame | None = None,
    previous_name: str | None = None,
) -> BatchMetrics:
    """Compute the recommendation statistics of a batch in pandas.

    Args:
        events: The batch's events (any columns; missing ones are noted, not raised).
        cfg: Thresholds; ``min_events_per_user`` defines "few events".
        previous: ``user_id`` and ``item_id`` of the previous batch, or ``None`` if there is none.
        previous_name: Name of the previous batch, for the report.

    Returns:
        The statistics, with a note for each one that was skipped.
    """
    notes: list[str] = []
    users = items = None
    share_unseen_items = share_unseen_users = share_few = None
    if events.empty:
        notes.append("batch has no rows: recommendation checks skipped")
        return BatchMetrics(rows=0, notes=tuple(notes), previous_batch=previous_name)
    if previous is None:
        notes.append("no previous batch: unseen item and user shares skipped")
    if "user_id" in events.columns:
        counts = events["user_id"].value_counts(dropna=True)
        users = len(counts)
        share_few = _share(counts < cfg.min_events_per_user)
        if previous is not None and "user_id" in previous.columns:
            unique_users = pd.Index(counts.index)
            share_unseen_users = _share_unseen(unique_users, previous["user_id"])
    else:
        notes.append("column 'user_id' missing: user checks skipped")
    if "item_id" in events.columns:
        unique_items = pd.Index(events["item_id"].dropna().unique())
        items = len(unique_items)
        if previous is not None and "item_id" in previous.columns:
            share_unseen_items = _share_unseen(unique_items, previous["item_id"])
    else:
        notes.append("column 'item_id' missing: item checks skipped")
    timezone = None
    if "timestamp" in events.columns and isinstance(events["timestamp"].dtype, pd.DatetimeTZDtype):
        timezone = str(events["timestamp"].dtype.tz)
    return BatchMetrics(
        rows=len(events),
        users=users,
        items=items,
        share_unseen_items=share_unseen_items,
        share_unseen_users=share_unseen_users,
        share_users_few_events=share_few,
        timestamp_timezone=timezone,
        previous_batch=previous_name,
        notes=tuple(notes),
    )
