"""Setting run.logical_date in params.yaml: one line changes, nothing else, atomically."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from pipelines.core.params import ConfigError, load_params
from pipelines.core.run_date import parse_logical_date, set_logical_date
from pipelines.stages.set_logical_date import main

NEW_DATE = dt.date(2027, 2, 3)


@pytest.fixture
def params_file(project_root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "params.yaml"
    shutil.copy(project_root / "params.yaml", target)
    target.chmod(0o644)
    return target


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def test_only_the_logical_date_line_changes(params_file: Path) -> None:
    before = params_file.read_text(encoding="utf-8")
    old_date = load_params(params_file).run.logical_date

    assert set_logical_date(params_file, NEW_DATE) is True

    after = params_file.read_text(encoding="utf-8")
    ((old_line, new_line),) = _changed_lines(before, after)
    assert new_line == old_line.replace(old_date.isoformat(), NEW_DATE.isoformat())
    assert load_params(params_file).run.logical_date == NEW_DATE
    assert params_file.stat().st_mode & 0o777 == 0o644


def test_same_date_writes_nothing(params_file: Path) -> None:
    current = load_params(params_file).run.logical_date
    before = params_file.stat()

    assert set_logical_date(params_file, current) is False

    after = params_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('  logical_date: "2026-01-01"\n', '  logical_date: "2027-02-03"\n'),
        ("  logical_date: '2026-01-01'\n", "  logical_date: '2027-02-03'\n"),
        ("  logical_date: 2026-01-01\n", "  logical_date: 2027-02-03\n"),
        (
            '    logical_date:   "2026-01-01"   # set by Airflow\n',
            '    logical_date:   "2027-02-03"   # set by Airflow\n',
        ),
        ('  logical_date: "2026-01-01"\r\n', '  logical_date: "2027-02-03"\r\n'),
    ],
    ids=["double-quoted", "single-quoted", "bare", "spacing-and-comment", "crlf"],
)
def test_quoting_spacing_and_comments_are_kept(tmp_path: Path, line: str, expected: str) -> None:
    indent = line[: len(line) - len(line.lstrip())]
    newline = "\r\n" if line.endswith("\r\n") else "\n"
    head = f"# the run{newline}run:{newline}{indent}seed: 7{newline}"
    tail = f"{newline}ingest:{newline}{indent}window_days: 7{newline}"
    path = tmp_path / "params.yaml"
    path.write_bytes((head + line + tail).encode())

    assert set_logical_date(path, NEW_DATE) is True

    assert path.read_bytes().decode() == head + expected + tail


def test_flow_style_run_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text('run: {logical_date: "2026-01-01", seed: 1}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="no block-style top-level 'run:' section"):
        set_logical_date(path, NEW_DATE)
    assert path.read_text(encoding="utf-8") == 'run: {logical_date: "2026-01-01", seed: 1}\n'


def test_logical_date_in_flow_mapping_under_run_is_refused(tmp_path: Path) -> None:
    text = 'run:\n  {logical_date: "2026-01-01"}\n'
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="no 'logical_date: <date>' line under 'run:'"):
        set_logical_date(path, NEW_DATE)
    assert path.read_text(encoding="utf-8") == text


def test_invalid_params_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text('run:\n  logical_date: "2026-01-01"\n  sede: 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"run\.sede: unknown key"):
        set_logical_date(path, NEW_DATE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-02-30", "is not a calendar date"),
        ("20260203", "must be YYYY-MM-DD"),
        ("2026-02-03T00:00:00", "must be YYYY-MM-DD"),
        ("", "must be YYYY-MM-DD"),
    ],
)
def test_parse_logical_date_rejects_non_dates(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_logical_date(text)


def test_cli_sets_the_date(params_file: Path) -> None:
    assert main(["--params", str(params_file), "--set-logical-date", "2027-02-03"]) == 0
    assert load_params(params_file).run.logical_date == NEW_DATE


def test_cli_rejects_a_bad_date_without_touching_the_file(
    params_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = params_file.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["--params", str(params_file), "--set-logical-date", "2027-13-01"])
    assert exit_info.value.code == 2
    assert "is not a calendar date" in capsys.readouterr().err
    assert params_file.read_bytes() == before


def test_cli_reports_a_missing_params_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert main(["--params", str(missing), "--set-logical-date", "2027-02-03"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params file not found")
    assert "Traceback" not in err
