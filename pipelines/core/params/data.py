"""Sections of the data stages: the run, ``generate``, ``ingest``, ``validate``, ``prepare``."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from pipelines.core.params.base import Date, Items, StrictModel


class RunConfig(StrictModel):
    """The run: its logical date (set by Airflow per run, or by hand) and the global seed."""

    logical_date: Date
    seed: int = 42


class DriftConfig(StrictModel):
    """Knobs that shift the synthetic traffic away from the reference, for monitoring tests."""

    category_shift: float = Field(0.0, ge=0.0, le=1.0)
    price_inflation: float = Field(0.0, ge=-0.9, le=10.0)
    new_item_share: float = Field(0.0, ge=0.0, le=1.0)
    popularity_shift: float = Field(0.0, ge=0.0, le=1.0)


class GenerateConfig(StrictModel):
    """Synthetic clickstream generator: a preset plus drift knobs."""

    preset: Literal["tiny", "default", "medium", "large", "huge"] = "default"
    days: int = Field(35, ge=1, le=3650)
    drift: DriftConfig = DriftConfig()


class IngestConfig(StrictModel):
    """Where events come from and which window becomes the run's batch."""

    source: Literal["synthetic", "recbole", "movielens", "retailrocket", "table"] = "synthetic"
    path: str = "data/source/synthetic"
    window_days: int = Field(28, ge=1, le=3650)
    column_map: dict[str, str] = Field(default_factory=dict)
    default_price: float = Field(1.0, gt=0.0)
    default_category: str = "unknown"
    # For sources without timestamps in the logical window (historic public data sets):
    # shift all timestamps so that the newest event falls on the logical date.
    align_to_logical_date: bool = False


class ValidateConfig(StrictModel):
    """Thresholds of the Great Expectations suite over an event batch."""

    min_rows: int = Field(100, ge=1)
    max_rows: int = Field(50_000_000, ge=1)
    price_min: float = Field(0.01, gt=0.0)
    price_max: float = Field(100_000.0, gt=0.0)
    max_id_length: int = Field(128, ge=1)
    min_timestamp: Date = dt.date(1990, 1, 1)
    max_share_unseen_items: float = Field(0.5, ge=0.0, le=1.0)
    max_share_unseen_users: float = Field(0.95, ge=0.0, le=1.0)
    min_events_per_user: int = Field(3, ge=1)
    max_share_users_few_events: float = Field(0.8, ge=0.0, le=1.0)
    min_share_items_in_catalog: float = Field(1.0, ge=0.0, le=1.0)
    example_values: int = Field(5, ge=1, le=50)


class TimeSplitConfig(StrictModel):
    """Time split: the last ``test_days`` are test, the ``valid_days`` before are validation."""

    valid_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)


class PrepareConfig(StrictModel):
    """Sequence building and splitting."""

    split: Literal["leave_one_out", "time"] = "leave_one_out"
    time_split: TimeSplitConfig = TimeSplitConfig()
    event_types: Items[Literal["view", "add_to_cart", "purchase"]] = (
        "view",
        "add_to_cart",
        "purchase",
    )
    dedupe_consecutive: bool = True
    min_sequence_length: int = Field(3, ge=3)
    max_sequence_length: int = Field(200, ge=3)
    price_bins: int = Field(20, ge=2, le=1000)
