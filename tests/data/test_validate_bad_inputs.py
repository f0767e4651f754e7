"""Every bad input the validate stage claims to handle, fed to it, with its message checked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import BatchRejected, InputError
from pipelines.core.io import sha256_file
from pipelines.core.params import RunConfig, ValidateConfig
from pipelines.core.schema import CATALOG_FILE, EVENTS_FILE
from pipelines.data.validation.batch import validate_batch
from pipelines.stages.validate import main
from tests.data.batches import write_batch
from tests.data.conftest import LOGICAL_DATE, WINDOW_DAYS

Tables = tuple[pa.Table, pa.Table]


def _replace(events: pa.Table, column: str, rows: list[int], value: object) -> pa.Table:
    """Set ``column`` to ``value`` in ``rows``; the field becomes nullable so nulls can be set."""
    index = events.schema.get_field_index(column)
    values = events.column(column).to_pylist()
    for row in rows:
        values[row] = value
    kind = events.schema.field(column).type
    return events.set_column(index, pa.field(column, kind), pa.array(values, kind))


def _cast(events: pa.Table, column: str, kind: pa.DataType) -> pa.Table:
    index = events.schema.get_field_index(column)
    return events.set_column(index, pa.field(column, kind), events.column(column).cast(kind))


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


def _timestamps_as_int(events: pa.Table) -> pa.Table:
    index = events.schema.get_field_index("timestamp")
    seconds = pc.divide(events.column("timestamp").cast(pa.int64()), 1_000_000)
    return events.set_column(index, pa.field("timestamp", pa.int64()), seconds)


def _each_user_once(events: pa.Table) -> pa.Table:
    ids = pa.array([f"once{i}" for i in range(events.num_rows)], pa.string())
    return events.set_column(events.schema.get_field_index("user_id"), "user_id", ids)


def _drop(column: str) -> Callable[[pa.Table], pa.Table]:
    return lambda events: events.drop_columns([column])


# (change to the valid events, expectation, column, evidence in its summary line, unexpected count)
FAULTS = [
    pytest.param(
        _drop("category"),
        "expect_table_columns_to_match_set",
        None,
        "missing category",
        None,
        id="missing-column",
    ),
    pytest.param(
        lambda e: e.rename_columns(["cost" if n == "price" else n for n in e.column_names]),
        "expect_table_columns_to_match_set",
        None,
        "missing price; unexpected cost",
        None,
        id="renamed-column",
    ),
    pytest.param(
        lambda e: _cast(e, "price", pa.string()),
        "expect_column_values_to_be_of_type",
        "price",
        "observed 'str'",
        None,
        id="price-as-string",
    ),
    pytest.param(
        _timestamps_as_int,
        "expect_column_values_to_be_of_type",
        "timestamp",
        "observed 'int64'",
        None,
        id="timestamp-as-int",
    ),
    pytest.param(
        lambda e: _replace(e, "user_id", [3, 4, 5], None),
        "expect_column_values_to_not_be_null",
        "user_id",
        "3 unexpected of 2000 rows",
        3,
        id="null-user-ids",
    ),
    pytest.param(
        lambda e: _replace(e, "event_id", [9], None),
        "expect_column_values_to_not_be_null",
        "event_id",
        "1 unexpected of 2000 rows",
        1,
        id="null-event-id",
    ),
    pytest.param(
        lambda e: _replace(e, "price", [0, 1], 0.0),
        "expect_column_values_to_be_between",
        "price",
        "e.g. 0.0",
        2,
        id="zero-price",
    ),
    pytest.param(
        lambda e: _replace(e, "price", [5, 6, 7], -5.0),
        "expect_column_values_to_be_between",
        "price",
        "e.g. -5.0",
        3,
        id="negative-price",
    ),
    pytest.param(
        lambda e: _replace(e, "price", [8], 1e9),
        "expect_column_values_to_be_between",
        "price",
        "e.g. 1000000000.0",
        1,
        id="absurd-price",
    ),
    pytest.param(
        lambda e: _replace(e, "event_type", [0, 1, 2, 3], "click"),
        "expect_column_values_to_be_in_set",
        "event_type",
        "e.g. 'click'",
        4,
        id="unknown-event-type",
    ),
    pytest.param(
        lambda e: _replace(e, "timestamp", [10, 11], _utc(2026, 11, 25, 8)),
        "expect_column_values_to_be_between",
        "timestamp",
        "[no event after the logical date 2026-11-22]: 2 unexpected",
        2,
        id="timestamp-in-future",
    ),
    pytest.param(
        lambda e: _replace(e, "timestamp", [12], _utc(1985, 3, 1)),
        "expect_column_values_to_be_between",
        "timestamp",
        "[no event before 1990-01-01]: 1 unexpected",
        1,
        id="timestamp-before-1990",
    ),
    pytest.param(
        lambda e: _replace(e, "timestamp", [13], _utc(2026, 9, 1)),
        "expect_column_values_to_be_between",
        "timestamp",
        "[inside the 28-day batch window ending 2026-11-22]: 1 unexpected",
        1,
        id="timestamp-before-window",
    ),
    pytest.param(
        lambda e: _replace(e, "event_id", [1, 2], e.column("event_id")[0].as_py()),
        "expect_column_values_to_be_unique",
        "event_id",
        "3 unexpected of 2000 rows, e.g. 'e0000'",
        3,
        id="duplicate-event-ids",
    ),
    pytest.param(
        lambda e: _replace(e, "item_id", [0, 1, 2, 3, 4], "ghost-item"),
        "expect_column_values_to_be_null",
        "item_id_not_in_catalog",
        "5 unexpected of 2000 rows, e.g. 'ghost-item'",
        5,
        id="items-missing-from-catalog",
    ),
    pytest.param(
        lambda e: _replace(_replace(e, "user_id", [0], "u\x00bad"), "user_id", [1], "u\tbad"),
        "expect_column_values_to_not_match_regex",
        "user_id",
        r"e.g. 'u\x00bad', 'u\tbad'",
        2,
        id="control-characters-in-ids",
    ),
    pytest.param(
        lambda e: _replace(e, "event_id", [0], "x" * 10_000),
        "expect_column_value_lengths_to_be_between",
        "event_id",
        "(10000 chars)",
        1,
        id="10000-character-id",
    ),
    pytest.param(
        lambda e: _replace(e, "session_id", [0], ""),
        "expect_column_value_lengths_to_be_between",
        "session_id",
        "e.g. ''",
        1,
        id="empty-id",
    ),
    pytest.param(
        lambda e: _cast(e, "timestamp", pa.timestamp("us", tz="Europe/Berlin")),
        "expect_column_values_to_be_in_set",
        "timestamp_timezone",
        "e.g. 'Europe/Berlin'",
        1,
        id="timestamps-not-utc",
    ),
    pytest.param(
        lambda e: _cast(e, "timestamp", pa.timestamp("us")),
        "expect_column_values_to_be_of_type",
        "timestamp",
        "observed 'datetime64'",
        None,
        id="timestamps-without-zone",
    ),
    pytest.param(
        _each_user_once,
        "expect_column_values_to_be_between",
        "share_users_few_events",
        "e.g. 1.0",
        1,
        id="users-with-few-events",
    ),
    pytest.param(
        lambda e: e.slice(0, 50),
        "expect_table_row_count_to_be_between",
        None,
        "observed 50",
        None,
        id="too-few-rows",
    ),
]


def _validate(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, events: pa.Table, catalog: pa.Table
):
    folder = write_batch(tmp_path / LOGICAL_DATE.isoformat(), events, catalog, LOGICAL_DATE)
    return validate_batch(cfg, run, folder, window_days=WINDOW_DAYS, reports=None)


@pytest.mark.parametrize(("mutate", "expectation", "column", "evidence", "count"), FAULTS)
def test_fault_is_rejected_with_the_failed_expectation_named(
    tmp_path: Path,
    cfg: ValidateConfig,
    run: RunConfig,
    valid_tables: Tables,
    mutate: Callable[[pa.Table], pa.Table],
    expectation: str,
    column: str | None,
    evidence: str,
    count: int | None,
) -> None:
    events, catalog = valid_tables
    outcome = _validate(tmp_path, cfg, run, mutate(events), catalog)

    assert not outcome.success
    matching = [f for f in outcome.failures if f.expectation == expectation and f.column == column]
    assert matching, outcome.summary
    failure = next((f for f in matching if evidence in f.line()), None)
    assert failure is not None, outcome.summary
    assert failure.line() in outcome.summary
    if count is not None:
        assert failure.unexpected_count == count
    assert len(failure.line()) < 400, "summary lines stay short, even for huge values"
    with pytest.raises(BatchRejected, match=expectation):
        outcome.raise_for_rejection()


def test_missing_column_reports_dependent_expectations_as_not_evaluated(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    outcome = _validate(tmp_path, cfg, run, events.drop_columns(["price"]), catalog)

    lines = [f.line() for f in outcome.failures if f.column == "price"]
    assert lines
    assert all("not evaluated: column 'price' is missing" in line for line in lines), lines


def test_wrong_dtype_is_named_for_dependent_expectations(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    outcome = _validate(tmp_path, cfg, run, _timestamps_as_int(events), catalog)

    windows = [
        f for f in outcome.failures if f.column == "timestamp" and f.expectation.endswith("between")
    ]
    assert windows
    assert all("column 'timestamp' has type int64" in f.detail for f in windows), outcome.summary


def test_header_only_file_is_rejected_as_having_no_rows(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    outcome = _validate(tmp_path, cfg, run, events.slice(0, 0), catalog)

    assert not outcome.success
    assert f"{EVENTS_FILE} has no rows" in outcome.summary
    assert "expect_table_row_count_to_be_between: observed 0" in outcome.summary


def test_catalog_without_item_ids_fails_membership(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    outcome = _validate(tmp_path, cfg, run, events, catalog.drop_columns(["item_id"]))

    failed = {(f.suite, f.expectation, f.column) for f in outcome.failures}
    assert ("catalog", "expect_table_columns_to_match_set", None) in failed
    assert ("events", "expect_column_values_to_be_null", "item_id_not_in_catalog") in failed


def test_items_missing_from_catalog_pass_within_the_configured_share(
    tmp_path: Path, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    lenient = ValidateConfig(min_share_items_in_catalog=0.99)
    outcome = _validate(
        tmp_path, lenient, run, _replace(events, "item_id", [0, 1], "ghost"), catalog
    )

    assert outcome.success, outcome.summary


# --- unreadable inputs: InputError naming the file and the problem -----------------------------


def _batch_folder(tmp_path: Path, valid_tables: Tables) -> Path:
    return write_batch(tmp_path / LOGICAL_DATE.isoformat(), *valid_tables, LOGICAL_DATE)


def _empty_events(folder: Path) -> Path:
    (folder / EVENTS_FILE).write_bytes(b"")
    return folder


def _truncated_events(folder: Path) -> Path:
    data = (folder / EVENTS_FILE).read_bytes()
    (folder / EVENTS_FILE).write_bytes(data[: len(data) // 2])
    return folder


def _text_events(folder: Path) -> Path:
    (folder / EVENTS_FILE).write_text("event_id,user_id\ne1,u1\n", encoding="utf-8")
    return folder


def _text_catalog(folder: Path) -> Path:
    (folder / CATALOG_FILE).write_text("not parquet", encoding="utf-8")
    return folder


def _no_events(folder: Path) -> Path:
    (folder / EVENTS_FILE).unlink()
    return folder


def _missing_path(folder: Path) -> Path:
    return folder.parent / "nowhere"


def _store_without_the_date(folder: Path) -> Path:
    return folder.rename(folder.with_name("2026-11-01")).parent


def _file_without_catalog(folder: Path) -> Path:
    (folder / CATALOG_FILE).unlink()
    return folder / EVENTS_FILE


UNREADABLE = [
    pytest.param(_missing_path, "input not found: {path}", id="path-does-not-exist"),
    pytest.param(_empty_events, "events file {events} is empty (0 bytes)", id="empty-file"),
    pytest.param(
        _truncated_events, "events file {events} is not a readable Parquet file", id="truncated"
    ),
    pytest.param(
        _text_events, "events file {events} is not a readable Parquet file", id="text-as-parquet"
    ),
    pytest.param(
        _text_catalog, "catalog {catalog} is not a readable Parquet file", id="corrupt-catalog"
    ),
    pytest.param(_no_events, "{path} is not a batch: it holds no events.parquet", id="no-events"),
    pytest.param(
        _store_without_the_date,
        "no batch for the logical date 2026-11-22 in {path}",
        id="store-without-batch",
    ),
    pytest.param(_file_without_catalog, "catalog not found: {catalog}", id="no-catalog"),
]


@pytest.mark.parametrize(("spoil", "message"), UNREADABLE)
def test_unreadable_input_raises_input_error_naming_the_file(
    tmp_path: Path,
    cfg: ValidateConfig,
    run: RunConfig,
    valid_tables: Tables,
    spoil: Callable[[Path], Path],
    message: str,
) -> None:
    folder = _batch_folder(tmp_path, valid_tables)
    path = spoil(folder)
    expected = message.format(path=path, events=folder / EVENTS_FILE, catalog=folder / CATALOG_FILE)

    with pytest.raises(InputError) as caught:
        validate_batch(cfg, run, path, window_days=WINDOW_DAYS, reports=tmp_path / "reports")

    assert expected in str(caught.value)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(("spoil", "message"), UNREADABLE[:4])
def test_main_exits_2_on_unreadable_input_without_traceback(
    tmp_path: Path,
    params_file: Path,
    valid_tables: Tables,
    capsys: pytest.CaptureFixture[str],
    spoil: Callable[[Path], Path],
    message: str,
) -> None:
    folder = _batch_folder(tmp_path, valid_tables)
    path = spoil(folder)

    code = main([str(path), "--params", str(params_file), "--reports", str(tmp_path / "r")])

    err = capsys.readouterr().err
    assert code == 2
    assert "error: " in err
    assert str(path if "path" in message else folder / EVENTS_FILE) in err
    assert "Traceback" not in err


def test_main_exits_1_with_a_short_summary_on_a_rejected_batch(
    tmp_path: Path,
    params_file: Path,
    valid_tables: Tables,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events, catalog = valid_tables
    events = _replace(_replace(events, "price", [0, 1], -5.0), "event_type", [2], "click")
    folder = write_batch(tmp_path / LOGICAL_DATE.isoformat(), events, catalog, LOGICAL_DATE)
    before = sha256_file(folder / EVENTS_FILE)

    code = main([str(folder), "--params", str(params_file), "--reports", str(tmp_path / "r")])

    err = capsys.readouterr().err
    assert code == 1
    assert "error: batch 2026-11-22 rejected" in err
    assert "expect_column_values_to_be_between(price): 2 unexpected of 2000 rows, e.g. -5.0" in err
    assert "expect_column_values_to_be_in_set(event_type): 1 unexpected" in err
    assert "'click'" in err
    assert "Traceback" not in err
    assert sha256_file(folder / EVENTS_FILE) == before


def test_main_example_values_follow_params(
    tmp_path: Path,
    params_file: Path,
    valid_tables: Tables,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events, catalog = valid_tables
    events = _replace(events, "item_id", list(range(10)), None)
    events = events.set_column(
        events.schema.get_field_index("item_id"),
        "item_id",
        pa.array(
            [f"ghost{i}" if i < 10 else v for i, v in enumerate(events["item_id"].to_pylist())]
        ),
    )
    folder = write_batch(tmp_path / LOGICAL_DATE.isoformat(), events, catalog, LOGICAL_DATE)

    code = main([str(folder), "--params", str(params_file), "--reports", str(tmp_path / "r")])

    err = capsys.readouterr().err
    assert code == 1
    line = next(x for x in err.splitlines() if "item_id_not_in_catalog" in x)
    # params_file sets validate.example_values to 3
    assert line.count("'ghost") == 3, line


def test_parquet_helpers_write_what_the_tests_claim(tmp_path: Path, valid_tables: Tables) -> None:
    """Guard for the fixtures: a truncated file is really unreadable by pyarrow."""
    folder = _truncated_events(_batch_folder(tmp_path, valid_tables))
    with pytest.raises(pa.ArrowException):
        pq.read_table(folder / EVENTS_FILE)
