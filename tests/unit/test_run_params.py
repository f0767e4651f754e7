"""Setting run.logical_date in params.yaml: the date changes, no other byte, atomically."""

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'run: {logical_date: "2026-01-01", seed: 1}  # flow style\n',
            'run: {logical_date: "2027-02-03", seed: 1}  # flow style\n',
        ),
        (
            "run:\n  {seed: 1, logical_date: 2026-01-01}\n",
            "run:\n  {seed: 1, logical_date: 2027-02-03}\n",
        ),
        (
            "run:\n  logical_date: !!str &day '2026-01-01'\n",
            "run:\n  logical_date: !!str &day '2027-02-03'\n",
        ),
    ],
    ids=["flow-section", "flow-mapping-under-run", "tagged-and-anchored"],
)
def test_any_yaml_style_of_the_value_is_edited_in_place(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")

    assert set_logical_date(path, NEW_DATE) is True

    assert path.read_text(encoding="utf-8") == expected


def test_a_date_elsewhere_in_the_file_is_left_alone(tmp_path: Path) -> None:
    text = (
        "generate:\n  preset: tiny  # logical_date: 2026-01-01 in a comment\n"
        'run:\n  seed: 1\n  logical_date: "2026-01-01"\n'
    )
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")

    assert set_logical_date(path, NEW_DATE) is True

    assert path.read_text(encoding="utf-8") == text.replace(
        '  logical_date: "2026-01-01"', '  logical_date: "2027-02-03"'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # valid YAML that Params accepts, but with no date of its own under run: to edit
        ('run:\n  <<: {logical_date: "2026-01-01"}\n  seed: 1\n', "no 'logical_date' under 'run:'"),
        ("run:\n  logical_date: >-\n    2026-01-01\n", "is a block scalar"),
    ],
    ids=["merge-key", "block-scalar"],
)
def test_a_value_that_cannot_be_edited_in_place_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
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
