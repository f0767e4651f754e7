"""The validate stage end to end on small batches: outputs, quarantine, reruns, input untouched."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from great_expectations.execution_engine import pandas_execution_engine

from pipelines import cli
from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file
from pipelines.core.params import RunConfig, ValidateConfig
from pipelines.core.schema import CATALOG_FILE, EVENTS_FILE
from pipelines.data.validation.batch import BATCH_FILE, validate_batch
from pipelines.data.validation.inputs import find_previous_batch, resolve_batch
from pipelines.stages.validate import main
from tests.data.batches import make_batch, write_batch
from tests.data.conftest import LOGICAL_DATE, WINDOW_DAYS

Tables = tuple[pa.Table, pa.Table]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _stage_args(path: Path, params: Path, work: Path) -> list[str]:
    return [
        str(path),
        "--params",
        str(params),
        "--out",
        str(work / "validated"),
        "--reports",
        str(work / "reports"),
        "--quarantine",
        str(work / "quarantine"),
        "--metrics",
        str(work / "metrics.json"),
    ]


def _negative_prices(events: pa.Table) -> pa.Table:
    index = events.schema.get_field_index("price")
    return events.set_column(index, "price", pc.negate(events.column("price")))


def test_valid_batch_passes_and_writes_every_output(
    tmp_path: Path, store: Path, params_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree_digest(store)

    code = main(_stage_args(store, params_file, tmp_path))

    assert code == 0
    assert "Traceback" not in capsys.readouterr().err
    assert _tree_digest(store) == before, "the input store must not change"
    batch_dir = store / LOGICAL_DATE.isoformat()
    validated = tmp_path / "validated"
    assert sorted(p.name for p in validated.iterdir()) == [BATCH_FILE, CATALOG_FILE, EVENTS_FILE]
    assert sha256_file(validated / EVENTS_FILE) == sha256_file(batch_dir / EVENTS_FILE)
    marker = json.loads((validated / BATCH_FILE).read_text())
    assert marker["batch"] == marker["date"] == LOGICAL_DATE.isoformat()
    assert marker["sha256"] == {
        EVENTS_FILE: sha256_file(batch_dir / EVENTS_FILE),
        CATALOG_FILE: sha256_file(batch_dir / CATALOG_FILE),
    }
    reports = tmp_path / "reports"
    result = json.loads((reports / "result.json").read_text())
    assert result["success"] is True
    suites = [r["suite_name"] for r in result["validation_results"]]
    # the GX batch fingerprint (seconds per million rows) is switched off only during the run
    assert "pandas_data_fingerprint" not in json.dumps(result)
    assert pandas_execution_engine.HASH_THRESHOLD == 1e9
    assert suites == ["events", "catalog", "batch_metrics"]
    assert "passed" in (reports / "summary.txt").read_text()
    index = reports / "data_docs" / "index.html"
    assert index.is_file()
    html = index.read_text()
    for suite in suites:
        assert f"validations/{suite}/" in html
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["success"] is True
    assert metrics["rows"] == 2000
    assert metrics["users"] == 100 and metrics["items"] == 40
    assert metrics["previous_batch"] == (LOGICAL_DATE - dt.timedelta(days=1)).isoformat()
    for share in ("share_unseen_items", "share_unseen_users", "share_users_few_events"):
        assert 0.0 <= metrics[share] <= 1.0
    assert metrics["evaluated_expectations"] == metrics["successful_expectations"] > 30
    assert metrics["success_percent"] == 100.0
    assert not (tmp_path / "quarantine").exists()


def test_rerun_writes_the_same_bytes(tmp_path: Path, store: Path, params_file: Path) -> None:
    assert main(_stage_args(store, params_file, tmp_path / "a")) == 0
    assert main(_stage_args(store, params_file, tmp_path / "b")) == 0

    for name in (
        "metrics.json",
        "reports/result.json",
        "reports/summary.txt",
        "validated/batch.json",
    ):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # the Data Docs pages too: GX writes the clock and random ids into them
    pages_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.html"))
    pages_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.html"))
    assert pages_a == pages_b and pages_a
    for page in pages_a:
        assert (tmp_path / "a" / page).read_bytes() == (tmp_path / "b" / page).read_bytes(), page


def test_rejected_batch_is_quarantined_and_out_not_written(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    raw = write_batch(
        tmp_path / "raw" / LOGICAL_DATE.isoformat(), _negative_prices(events), catalog
    )
    before = _tree_digest(raw)

    outcome = validate_batch(
        cfg,
        run,
        raw,
        window_days=WINDOW_DAYS,
        out=tmp_path / "validated",
        reports=tmp_path / "reports",
        quarantine=tmp_path / "quarantine",
        metrics=tmp_path / "metrics.json",
    )

    assert not outcome.success
    assert _tree_digest(raw) == before
    assert not (tmp_path / "validated").exists()
    held = tmp_path / "quarantine" / LOGICAL_DATE.isoformat()
    assert outcome.quarantined == held
    assert sorted(p.name for p in held.iterdir()) == [
        CATALOG_FILE,
        EVENTS_FILE,
        "manifest.json",
        "result.json",
        "summary.txt",
    ]
    assert sha256_file(held / EVENTS_FILE) == sha256_file(raw / EVENTS_FILE)
    assert json.loads((held / "result.json").read_text())["success"] is False
    assert "expect_column_values_to_be_between(price)" in (held / "summary.txt").read_text()
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["success"] is False
    assert any("price" in line for line in metrics["failed_expectations"])


def test_rejection_removes_a_stale_validated_batch_but_never_foreign_folders(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    bad = write_batch(
        tmp_path / "raw" / LOGICAL_DATE.isoformat(), _negative_prices(events), catalog
    )
    stale = tmp_path / "validated"
    stale.mkdir()
    (stale / BATCH_FILE).write_text("{}")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")

    validate_batch(cfg, run, bad, window_days=WINDOW_DAYS, out=stale, reports=None)
    validate_batch(cfg, run, bad, window_days=WINDOW_DAYS, out=foreign, reports=None)

    assert not stale.exists()
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_events_file_with_catalog_beside_or_given(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    folder = write_batch(tmp_path / "adhoc", *valid_tables)
    events = folder / "clicks.parquet"
    events.write_bytes((folder / EVENTS_FILE).read_bytes())

    beside = validate_batch(cfg, run, events, window_days=WINDOW_DAYS, reports=None)
    elsewhere = tmp_path / "catalogs" / "items.parquet"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((folder / CATALOG_FILE).read_bytes())
    (folder / CATALOG_FILE).unlink()
    given = validate_batch(
        cfg, run, events, window_days=WINDOW_DAYS, catalog=elsewhere, reports=None
    )

    assert beside.success and given.success
    assert beside.batch.name == "clicks" and beside.batch.date == LOGICAL_DATE
    assert given.batch.catalog == elsewhere
    assert "no previous batch" in beside.summary


def test_ad_hoc_validation_writes_only_the_reports(
    tmp_path: Path, store: Path, params_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    code = cli.main(["validate", str(store), "--params", str(params_file)])

    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]
    assert (tmp_path / "reports" / "validation" / "data_docs" / "index.html").is_file()


def test_dated_batch_folder_is_judged_against_its_own_date(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig
) -> None:
    day = LOGICAL_DATE - dt.timedelta(days=5)
    folder = write_batch(tmp_path / day.isoformat(), *make_batch(2000, day, WINDOW_DAYS, seed=5))

    outcome = validate_batch(cfg, run, folder, window_days=WINDOW_DAYS, reports=None)

    assert outcome.success, outcome.summary
    assert outcome.batch.date == day


def test_unseen_items_against_the_previous_batch_reject(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    previous_day = LOGICAL_DATE - dt.timedelta(days=1)
    few_items = events.filter(pc.is_in(events.column("item_id"), pa.array(["i00", "i01"])))
    write_batch(tmp_path / previous_day.isoformat(), few_items, catalog)
    current = write_batch(tmp_path / LOGICAL_DATE.isoformat(), events, catalog)

    outcome = validate_batch(cfg, run, current, window_days=WINDOW_DAYS, reports=None)

    assert not outcome.success
    assert outcome.metrics["share_unseen_items"] == pytest.approx(38 / 40)
    assert "expect_column_values_to_be_between(share_unseen_items)" in outcome.summary


def test_quarantined_batches_are_never_the_previous_batch(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    events, catalog = valid_tables
    store = tmp_path / "raw"
    day_before = LOGICAL_DATE - dt.timedelta(days=1)
    two_before = LOGICAL_DATE - dt.timedelta(days=2)
    write_batch(store / two_before.isoformat(), events, catalog)
    strangers = make_batch(2000, day_before, seed=9, user_prefix="stranger")
    write_batch(store / day_before.isoformat(), *strangers)
    write_batch(store / LOGICAL_DATE.isoformat(), events, catalog)
    (store / "notes").mkdir()
    quarantine = tmp_path / "quarantine"
    (quarantine / day_before.isoformat()).mkdir(parents=True)

    assert find_previous_batch(store, LOGICAL_DATE, None) == store / day_before.isoformat()
    assert find_previous_batch(store, LOGICAL_DATE, quarantine) == store / two_before.isoformat()
    assert find_previous_batch(store, two_before, quarantine) is None
    outcome = validate_batch(
        cfg, run, store, window_days=WINDOW_DAYS, quarantine=quarantine, reports=None
    )
    assert outcome.success, outcome.summary
    assert outcome.metrics["previous_batch"] == two_before.isoformat()
    assert outcome.metrics["share_unseen_users"] == 0.0


def test_unreadable_previous_batch_is_skipped_with_a_note(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    store = tmp_path / "raw"
    previous = store / (LOGICAL_DATE - dt.timedelta(days=1)).isoformat()
    previous.mkdir(parents=True)
    (previous / EVENTS_FILE).write_text("not parquet", encoding="utf-8")
    write_batch(store / LOGICAL_DATE.isoformat(), *valid_tables)

    outcome = validate_batch(cfg, run, store, window_days=WINDOW_DAYS, reports=None)

    assert outcome.success, outcome.summary
    assert f"note: previous batch {previous.name} unreadable, skipped" in outcome.summary
    assert outcome.metrics["share_unseen_items"] is None


def test_a_batch_that_now_passes_leaves_quarantine(
    tmp_path: Path, cfg: ValidateConfig, run: RunConfig, valid_tables: Tables
) -> None:
    folder = write_batch(tmp_path / "raw" / LOGICAL_DATE.isoformat(), *valid_tables)
    held = tmp_path / "quarantine" / LOGICAL_DATE.isoformat()
    held.mkdir(parents=True)
    (held / "summary.txt").write_text("rejected earlier\n")

    validate_batch(
        cfg, run, folder, window_days=WINDOW_DAYS, quarantine=tmp_path / "quarantine", reports=None
    )

    assert not held.exists()


@pytest.mark.parametrize("option", ["--out", "--reports", "--quarantine"])
def test_outputs_overlapping_the_input_are_refused(
    tmp_path: Path, store: Path, params_file: Path, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree_digest(store)

    code = main([str(store), "--params", str(params_file), option, str(store.parent)])

    assert code == 2
    assert f"{option} {store.parent} overlaps the input" in capsys.readouterr().err
    assert _tree_digest(store) == before


def test_resolve_batch_takes_the_logical_date_from_a_store(store: Path) -> None:
    batch = resolve_batch(store, LOGICAL_DATE)

    assert batch.events == store / LOGICAL_DATE.isoformat() / EVENTS_FILE
    assert batch.manifest is not None and batch.store == store
    with pytest.raises(InputError, match="no batch for the logical date 2030-01-01"):
        resolve_batch(store, dt.date(2030, 1, 1))


@pytest.mark.slow
def test_module_entry_point_runs_as_in_dvc(
    tmp_path: Path, store: Path, params_file: Path, project_root: Path
) -> None:
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(project_root)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.stages.validate",
            *_stage_args(store, params_file, tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert "data docs:" in done.stderr
    assert (tmp_path / "validated" / BATCH_FILE).is_file()
