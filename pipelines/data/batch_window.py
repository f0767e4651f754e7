"""The batch window: the ``window_days`` whole UTC days that end on the run's logical date.

``ingest`` cuts it out of a source and records it in the batch's manifest; ``validate`` checks
that every event of the batch falls inside it and records it beside the accepted copy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchWindow:
    """The half-open time window ``[start, end)`` a batch's events fall into."""

    start: dt.datetime
    end: dt.datetime


def midnight_utc(day: dt.date) -> dt.datetime:
    """The start of ``day`` in UTC, as an aware datetime."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def batch_window(logical_date: dt.date, window_days: int) -> BatchWindow:
    """The window of the batch for ``logical_date``: its last ``window_days`` days, in UTC.

    Args:
        logical_date: The run's logical date, the last day of the window.
        window_days: How many days the window covers (``ingest.window_days``).

    Returns:
        ``[logical_date - window_days + 1 at 00:00 UTC, logical_date + 1 day at 00:00 UTC)``.
    """
    end = midnight_utc(logical_date + dt.timedelta(days=1))
    return BatchWindow(start=end - dt.timedelta(days=window_days), end=end)
