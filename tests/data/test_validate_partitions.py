"""A batch validated in partitions says what it says validated whole.

The partition size is forced down so that the small test batch spans several partitions; every
check compares with the one-partition run or names the row that spans partitions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InputError
from pipelines.core.params import RunConfig, ValidateConfig
from pipelines.core.schema import EVENTS_FILE
from pipelines.data.validation import partitions
from pipelines.data.validation.batch import ValidationOutcome, validate_batch
from tests.data.batches import make_batch, write_batch
from tests.data.conftest import LOGICAL_DATE, ROWS, WINDOW_DAYS
from tests.data.test_validate_bad_inputs import FAULTS, _replace

Tables = tuple[pa.Table, pa.Table]

# three partitions of the 2,000-row test batch: rows 0-699, 700-1399, 1400-1999
PARTITION = 700


def _validate(folder: Path, cfg: ValidateConfig, run: RunConfig) -> ValidationOutcome:
    return validate_batch(cfg, run, folder, window_days=WINDOW_DAYS, reports=None)


def _both(
    folder: Path, cfg: ValidateConfig, run: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[ValidationOutcome, ValidationOutcome]:
    """The outcome validated whole, then in partitions."""
    whole = _validate(folder, cfg, run)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", PARTITION)
    return whole, _validate(folder, cfg, run)


def _events_result(outcome: ValidationOutcome, expectation: str, column: str) -> dict:
    events = next(r for r in outcome.result["validation_results"] if r["suite_name"] == "events")
    return next(
        r["result"]
        for r in events["results"]
        if r["expectation_config"]["type"] == expectation
        and r["expectation_config"]["kwargs"].get("column") == column
    )


def _folder(tmp_path: Path, events: pa.Table, catalog: pa.Table) -> Path:
    return write_batch(tmp_path / LOGICAL_DATE.isoformat(), events, catalog, LOGICAL_DATE)


# one fault of each kind of expectation: column map (nulls, regex, catalog membership), whole
# batch (uniqueness, events per user), schema (a missing column, a dtype)
COMPARED = {
    "null-user-ids",
    "control-characters-in-ids",
    "items-missing-from-catalog",
    "duplicate-event-ids",
    "users-with-few-events",
    "missing-column",
    "timestamp-as-int",
}


@pytest.mark.parametrize(
    "mutate",
    [pytest.param(lambda e: e, id="valid")]
    + [pytest.param(p.values[0], id=p.id) for p in FAULTS if p.id in COMPARED],
)
def test_partitions_give_the_one_partition_result(
    tmp_path: Path,
    cfg: ValidateConfig,
    run: RunConfig,
    valid_tables: Tables,
    monkeypatch: pytest.MonkeyPatch,
    mutate,
) -> None:
    events, catalog = valid_tables
    whole, parts = _both(_folder(tmp_path, mutate(events), catalog), cfg, run, monkeypatch)

    assert parts.success == whole.success
    assert parts.statistics == whole.statistics
    assert parts.failures == whole.failures
    assert parts.summary == whole.summary
    assert parts.metrics == whole.metrics
    assert parts.result == whole.result


def test_a_bad_row_in_the_second_partition_is_found_and_named(
    tmp_path: Path,
    cfg: ValidateConfig,
    run: RunConfig,
    valid_tables: Tables,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, catalog = valid_tables
    folder = _folder(tmp_path, _replace(events, "price", [1000], -5.0), catalog)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", PARTITION)

    outcome = _validate(folder, cfg, run)

    assert not outcome.success
    line = "events: expect_column_values_to_be_between(price): 1 unexpected of 2000 rows, e.g. -5.0"
    assert line in outcome.summary
    result = _events_result(outcome, "expect_column_values_to_be_between", "price")
    assert result["partial_unexpected_index_list"] == [1000], "rows are named by file position"


def test_a_duplicate_event_id_across_partitions_is_found(
    tmp_path: Path,
    cfg: ValidateConfig,
    run: RunConfig,
    valid_tables: Tables,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, catalog = valid_tables
    first = events.column("event_id")[5].as_py()
    folder = _folder(tmp_path, _replace(events, "event_id", [1500], first), catalog)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", PARTITION)

    outcome = _validate(folder, cfg, run)

    assert not outcome.success
    line = f"expect_column_values_to_be_unique(event_id): 2 unexpected of 2000 rows, e.g. {first!r}"
    assert line in outcome.summary
    result = _events_result(outcome, "expect_column_values_to_be_unique", "event_id")
    assert result["partial_unexpected_index_list"] == [5, 1500]


def test_events_per_user_count_whole_users_across_partitions(
    tmp_path: Path, run: RunConfig, valid_tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, catalog = valid_tables
    # user k has the four events k, k + 500, k + 1000, k + 1500: never three in one partition
    users = pa.array([f"w{row % 500:03d}" for row in range(ROWS)], pa.string())
    events = events.set_column(events.schema.get_field_index("user_id"), "user_id", users)
    folder = _folder(tmp_path, events, catalog)
    strict = ValidateConfig(min_events_per_user=3, max_share_users_few_events=0.0)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", PARTITION)

    outcome = _validate(folder, strict, run)

    assert outcome.success, outcome.summary
    assert outcome.metrics["users"] == 500
    assert outcome.metrics["share_users_few_events"] == 0.0


def test_unseen_shares_against_the_previous_batch_are_the_same_in_partitions(
    tmp_path: Path,
    cfg: ValidateConfig,
    run: RunConfig,
    valid_tables: Tables,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "raw"
    previous_day = LOGICAL_DATE - dt.timedelta(days=1)
    previous = make_batch(ROWS, previous_day, seed=3, users=50)
    write_batch(store / previous_day.isoformat(), *previous, previous_day)
    write_batch(store / LOGICAL_DATE.isoformat(), *valid_tables, LOGICAL_DATE)

    whole = validate_batch(cfg, run, store, window_days=WINDOW_DAYS, reports=None)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", PARTITION)
    parts = validate_batch(cfg, run, store, window_days=WINDOW_DAYS, reports=None)

    assert 0.0 < whole.metrics["share_unseen_users"] < 1.0
    assert parts.metrics == whole.metrics
    assert parts.result == whole.result


def test_partitions_are_cut_at_fixed_rows_whatever_the_row_groups(
    tmp_path: Path, valid_tables: Tables
) -> None:
    events, _ = valid_tables
    path = tmp_path / EVENTS_FILE
    pq.write_table(events, path, row_group_size=300)

    cut = list(partitions.event_partitions(path, PARTITION))

    assert [(offset, table.num_rows) for offset, table in cut] == [
        (0, 700),
        (700, 700),
        (1400, 600),
    ]
    assert pa.concat_tables(table for _, table in cut).equals(events)


def test_a_damaged_row_group_is_an_input_error_naming_the_file(
    tmp_path: Path,
    cfg: ValidateConfig,
    run: RunConfig,
    valid_tables: Tables,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, catalog = valid_tables
    folder = _folder(tmp_path, events, catalog)
    path = folder / EVENTS_FILE
    pq.write_table(events, path, row_group_size=PARTITION)
    data = bytearray(path.read_bytes())
    footer = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = footer.data_page_offset
    data[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    monkeypatch.setattr(partitions, "PARTITION_ROWS", PARTITION)

    with pytest.raises(InputError, match="is not a readable Parquet file") as caught:
        _validate(folder, cfg, run)

    assert f"events file {path}" in str(caught.value)
