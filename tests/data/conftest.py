"""Fixtures for the validation tests: one small valid batch store, shared and never modified."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from pipelines.core.params import RunConfig, ValidateConfig
from tests.data.batches import make_batch, write_batch

LOGICAL_DATE = dt.date(2026, 11, 22)
WINDOW_DAYS = 28
ROWS = 2000


@pytest.fixture(scope="session")
def run() -> RunConfig:
    """The run every test validates against."""
    return RunConfig(logical_date=LOGICAL_DATE)


@pytest.fixture(scope="session")
def cfg() -> ValidateConfig:
    """Thresholds: the defaults, which a valid batch of a few thousand rows passes."""
    return ValidateConfig()


@pytest.fixture(scope="session")
def valid_tables() -> tuple[pa.Table, pa.Table]:
    """A valid ``(events, catalog)`` pair for the logical date."""
    return make_batch(ROWS, LOGICAL_DATE, WINDOW_DAYS, seed=7)


@pytest.fixture(scope="session")
def store(
    tmp_path_factory: pytest.TempPathFactory, valid_tables: tuple[pa.Table, pa.Table]
) -> Path:
    """A raw batch store: the batch of the day before and the valid batch of the logical date.

    Shared by many tests: validation must only ever read it (a test checks the bytes).
    """
    root = tmp_path_factory.mktemp("raw") / "events"
    previous_day = LOGICAL_DATE - dt.timedelta(days=1)
    write_batch(
        root / previous_day.isoformat(), *make_batch(ROWS, previous_day, seed=3), previous_day
    )
    write_batch(root / LOGICAL_DATE.isoformat(), *valid_tables, LOGICAL_DATE)
    return root


@pytest.fixture(scope="session")
def params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A params.yaml with the test's logical date and window."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    params = {
        "run": {"logical_date": LOGICAL_DATE.isoformat(), "seed": 1},
        "ingest": {"window_days": WINDOW_DAYS},
        "validate": {"example_values": 3},
    }
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path
