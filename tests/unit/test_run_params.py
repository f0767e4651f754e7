"""A run's values reach the stages through the run overlay, never by editing params.yaml.

The first task (``set_logical_date``) turns the trigger form into ``params.run.yaml``, which
``load_params`` reads over ``params.yaml``; :func:`set_logical_date` still edits a scratch
copy's date in place, byte for byte, for tools that own the copy.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.params import ConfigError, load_params
from pipelines.core.params.loading import set_run, write_overlay
from pipelines.core.params.run_form import (
    RUN_KEYS,
    overlay_lock,
    overlay_path,
    overlay_text,
    read_overlay,
)
from pipelines.core.run_date import parse_logical_date, set_logical_date
from pipelines.stages.set_logical_date import main
from pipelines.stages.table import LOGICAL_DATE_ENV

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


# ------------------------------------------------------------------ the run overlay


@pytest.fixture
def project(project_root: Path, tmp_path: Path) -> Path:
    """A params.yaml with its committed overlay, and the source folder a form may name."""
    shutil.copy(project_root / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").chmod(0o644)
    (tmp_path / "params.run.yaml").write_text(overlay_text({}), encoding="utf-8")
    (tmp_path / "data" / "source" / "movies").mkdir(parents=True)
    return tmp_path / "params.yaml"


def _run(params: Path, *args: str) -> int:
    return main(["--params", str(params), *args])


def _overlay(params: Path) -> dict[str, Any]:
    return read_overlay(overlay_path(params))


def test_the_project_overlay_has_every_run_key(project_root: Path) -> None:
    # dvc.yaml lists these keys: DVC refuses to run a stage whose listed key is missing
    raw = yaml.safe_load((project_root / "params.run.yaml").read_text(encoding="utf-8"))
    assert {section: tuple(keys) for section, keys in raw.items()} == RUN_KEYS
    load_params(project_root / "params.yaml")  # and it passes the strict checks


def test_cli_sets_the_date_in_the_overlay_not_in_params_yaml(project: Path) -> None:
    before = project.read_bytes()

    assert _run(project, "--set-logical-date", "2027-02-03") == 0

    assert project.read_bytes() == before
    assert _overlay(project) == {"run.logical_date": "2027-02-03"}
    assert load_params(project).run.logical_date == NEW_DATE
    assert load_params(project, overlay=False).run.logical_date != NEW_DATE


def test_form_values_reach_load_params(project: Path) -> None:
    form = {
        "data_date": "2027-02-03",
        "source": "tiny",
        "epochs": 1,
        "nproc_per_node": 4,
        "execution": "local",
        "skip_deploy": True,
        "require_approval": False,
        "force_retrain": False,
    }
    assert _run(project, "--form", json.dumps(form)) == 0

    params = load_params(project)
    assert params.run.logical_date == NEW_DATE
    assert params.generate.preset == "tiny"
    assert (params.train.epochs, params.train.nproc_per_node) == (1, 4)
    # params.yaml already ingests the synthetic output: only what differs is written
    assert set(_overlay(project)) == {
        "run.logical_date",
        "generate.preset",
        "train.epochs",
        "train.nproc_per_node",
    }


def test_a_source_path_sets_ingest_path(project: Path) -> None:
    assert (
        _run(
            project,
            "--set-logical-date",
            "2027-02-03",
            "--form",
            '{"source": "data/source/movies"}',
        )
        == 0
    )
    assert load_params(project).ingest.path == "data/source/movies"


def test_the_date_falls_back_to_the_dag_runs(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOGICAL_DATE_ENV, "2027-02-03")
    assert _run(project, "--form", '{"data_date": null, "epochs": 3}') == 0
    params = load_params(project)
    assert (params.run.logical_date, params.train.epochs) == (NEW_DATE, 3)
    # the form's own date wins over the DAG run's
    assert _run(project, "--form", '{"data_date": "2027-02-05"}') == 0
    assert load_params(project).run.logical_date == dt.date(2027, 2, 5)


def test_a_second_run_does_not_see_the_first_runs_values(project: Path) -> None:
    defaults = load_params(project, overlay=False)
    assert defaults.train.epochs != 1

    assert (
        _run(
            project, "--set-logical-date", "2027-02-03", "--form", '{"epochs": 1, "source": "tiny"}'
        )
        == 0
    )
    assert load_params(project).train.epochs == 1
    assert _run(project, "--set-logical-date", "2027-02-04", "--form", "{}") == 0

    params = load_params(project)
    assert params.train.epochs == defaults.train.epochs
    assert params.generate.preset == defaults.generate.preset
    assert params.run.logical_date == dt.date(2027, 2, 4)


def test_values_equal_to_params_yaml_leave_the_overlay_empty(project: Path) -> None:
    base = load_params(project, overlay=False)
    form = {"epochs": base.train.epochs, "source": base.generate.preset}
    set_run(project, form, base.run.logical_date)
    assert overlay_path(project).read_text(encoding="utf-8") == overlay_text({})


def test_the_same_run_twice_writes_nothing(project: Path) -> None:
    set_run(project, {"epochs": 2}, NEW_DATE)
    before = overlay_path(project).stat()
    assert write_overlay(project, {"run.logical_date": NEW_DATE, "train.epochs": 2}) is False
    after = overlay_path(project).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"data_date": "2027-13-01"}, "data_date: '2027-13-01' is not a calendar date"),
        ({"data_date": "03/02/2027"}, "data_date: expected YYYY-MM-DD"),
        ({"data_date": "2027-02-04"}, "data_date: 2027-02-04 disagrees with --set-logical-date"),
        ({"epochs": 0}, "epochs: must be >= 1, got 0"),
        ({"epochs": "3"}, "epochs: expected a whole number"),
        ({"epochs": 2.5}, "epochs: expected a whole number"),
        ({"epochs": True}, "epochs: expected a whole number"),
        ({"nproc_per_node": 65}, "nproc_per_node: must be 1..64, got 65"),
        ({"source": "enormous"}, "source: 'enormous' is neither a preset"),
        ({"source": "/data/events.csv"}, "source: '/data/events.csv' is neither a preset"),
        ({"source": "data/source/../../etc"}, "source: 'data/source/../../etc' is neither"),
        ({"source": "data/source/nowhere"}, "source: no file or folder 'data/source/nowhere'"),
        ({"epoch": 3}, "epoch: unknown field"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_a_bad_form_value_is_refused_naming_the_field(
    project: Path, form: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    set_run(project, {"epochs": 5}, NEW_DATE)
    before = overlay_path(project).read_bytes()

    assert _run(project, "--set-logical-date", "2027-02-03", "--form", json.dumps(form)) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: --form: ") and message in err, err
    assert overlay_path(project).read_bytes() == before


def test_a_form_that_is_not_a_json_object_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(project, "--set-logical-date", "2027-02-03", "--form", "[1]")
    assert exit_info.value.code == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_no_date_anywhere_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(LOGICAL_DATE_ENV, raising=False)
    assert _run(project, "--form", "{}") == 2
    assert "data_date: null and the run has no logical date" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lr: 0.1\n", r"params\.run\.yaml: train\.lr: not a key a run may set"),
        ("serve:\n  port: 1\n", r"params\.run\.yaml: serve: not a key a run may set"),
        ("train:\n  epochs: '3'\n", r"params\.run\.yaml over .*\n  train\.epochs: Input should"),
        ("generate:\n  preset: enormous\n", r"generate\.preset: Input should be 'tiny'"),
        ("[1, 2]\n", "must be a mapping of sections"),
    ],
    ids=["unknown-key", "unknown-section", "wrong-type", "bad-preset", "not-a-mapping"],
)
def test_load_params_reads_the_overlay_strictly(project: Path, text: str, message: str) -> None:
    overlay_path(project).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_params(project)
    load_params(project, overlay=False)  # params.yaml alone is fine


def test_a_missing_or_empty_overlay_sets_nothing(project: Path) -> None:
    base = load_params(project, overlay=False)
    overlay_path(project).write_text("", encoding="utf-8")
    assert load_params(project) == base
    overlay_path(project).unlink()
    assert load_params(project) == base


def test_editing_the_date_in_place_is_refused_when_the_overlay_sets_it(project: Path) -> None:
    set_run(project, {}, NEW_DATE)
    before = project.read_bytes()
    with pytest.raises(ConfigError, match="set by the run overlay"):
        set_logical_date(project, dt.date(2027, 3, 1))
    assert project.read_bytes() == before


def test_cli_reports_a_missing_params_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert main(["--params", str(missing), "--set-logical-date", "2027-02-03"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params file not found")
    assert "Traceback" not in err


# ------------------------------------------------------------------ two first tasks at once

WRITERS = 4
ROUNDS = 4


def _write_runs(params: str, index: int, barrier: Any) -> None:
    barrier.wait()  # every writer starts at once
    for round_ in range(ROUNDS):
        n = 3 + index * ROUNDS + round_  # never params.yaml's 2 processes
        # epochs and processes of one form are equal: a reader seeing them differ saw a mix
        set_run(Path(params), {"epochs": n, "nproc_per_node": n}, NEW_DATE)


def _hold_lock(params: str, marker: str, barrier: Any, overlaps: Any) -> None:
    barrier.wait()
    for _ in range(ROUNDS):
        with overlay_lock(overlay_path(Path(params))):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                with overlaps.get_lock():
                    overlaps.value += 1
                continue
            os.close(fd)
            os.unlink(marker)


def test_concurrent_first_tasks_leave_one_whole_overlay(project: Path) -> None:
    set_run(project, {"epochs": 1, "nproc_per_node": 1}, NEW_DATE)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WRITERS + 1)
    writers = [
        context.Process(target=_write_runs, args=(str(project), i, barrier)) for i in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    seen = []
    barrier.wait()
    while any(w.is_alive() for w in writers):
        # a stage reading meanwhile sees one run's overlay, whole
        values = read_overlay(overlay_path(project))
        seen.append(values["train.epochs"])
        assert values["train.epochs"] == values["train.nproc_per_node"]
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    final = load_params(project).train
    assert final.epochs == final.nproc_per_node
    text = overlay_path(project).read_text(encoding="utf-8")
    assert text == overlay_text(read_overlay(overlay_path(project)))  # one run's file, whole
    assert not [p.name for p in project.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(seen) > 0


def test_the_overlay_lock_admits_one_holder_at_a_time(project: Path, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WRITERS)
    overlaps = context.Value("i", 0)
    marker = str(tmp_path / "holder")
    holders = [
        context.Process(target=_hold_lock, args=(str(project), marker, barrier, overlaps))
        for _ in range(WRITERS)
    ]
    for holder in holders:
        holder.start()
    for holder in holders:
        holder.join()
        assert holder.exitcode == 0
    assert overlaps.value == 0
