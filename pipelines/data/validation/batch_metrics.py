"""Recommendation statistics of a batch, computed by DuckDB for the ``batch_metrics`` suite.

Shares of items and users not seen in the previous batch, the share of users with few events,
and the zone of the timestamps; a statistic that cannot be computed is left out with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.params import ValidateConfig
from pipelines.data.validation.batch_wide import (
    connect,
    distinct_count,
    unseen_count,
    user_counts,
)


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


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _timezone(schema: pa.Schema) -> str | None:
    """The zone of a timezone-aware ``timestamp`` column, named as pandas names it."""
    if "timestamp" not in schema.names:
        return None
    kind = schema.field("timestamp").type
    if not (pa.types.is_timestamp(kind) and kind.tz):
        return None
    dtype = pa.array([], kind).to_pandas().dtype
    return str(dtype.tz) if isinstance(dtype, pd.DatetimeTZDtype) else None


def compute_batch_metrics(
    events: Path,
    schema: pa.Schema,
    rows: int,
    cfg: ValidateConfig,
    previous: Path | None = None,
    previous_name: str | None = None,
) -> BatchMetrics:
    """Compute the recommendation statistics of a batch with DuckDB, in bounded memory.

    Args:
        events: The batch's events Parquet file (any columns; missing ones are noted).
        schema: Its Arrow schema.
        rows: Its row count.
        cfg: Thresholds; ``min_events_per_user`` defines "few events".
        previous: The previous batch's events file, or ``None`` if there is none.
        previous_name: Name of the previous batch, for the report.

    Returns:
        The statistics, with a note for each one that was skipped.

    Raises:
        InputError: DuckDB cannot read a file.
    """
    notes: list[str] = []
    users = items = None
    share_unseen_items = share_unseen_users = share_few = None
    if rows == 0:
        notes.append("batch has no rows: recommendation checks skipped")
        return BatchMetrics(rows=0, notes=tuple(notes), previous_batch=previous_name)
    if previous is None:
        notes.append("no previous batch: unseen item and user shares skipped")
    previous_columns = pq.read_schema(previous).names if previous is not None else []
    with connect() as con:
        if "user_id" in schema.names:
            users, few = user_counts(con, events, cfg.min_events_per_user)
            share_few = _share(few, users)
            if previous is not None and "user_id" in previous_columns:
                seen_now, unseen = unseen_count(con, events, previous, "user_id")
                share_unseen_users = _share(unseen, seen_now)
        else:
            notes.append("column 'user_id' missing: user checks skipped")
        if "item_id" in schema.names:
            items = distinct_count(con, events, "item_id")
            if previous is not None and "item_id" in previous_columns:
                seen_now, unseen = unseen_count(con, events, previous, "item_id")
                share_unseen_items = _share(unseen, seen_now)
        else:
            notes.append("column 'item_id' missing: item checks skipped")
    return BatchMetrics(
        rows=rows,
        users=users,
        items=items,
        share_unseen_items=share_unseen_items,
        share_unseen_users=share_unseen_users,
        share_users_few_events=share_few,
        timestamp_timezone=_timezone(schema),
        previous_batch=previous_name,
        notes=tuple(notes),
    )
