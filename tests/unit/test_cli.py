"""The ``recflow`` command dispatches to each stage of the stage table through its entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.stages.table import COMMANDS, STAGES, stage


def test_help_lists_every_stage_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for spec in (*STAGES, *COMMANDS):
        assert f"  {spec.name} " in out and spec.help in out
    assert out.index("commands:") > out.index(f"  {STAGES[-1].name} ")


def test_unknown_stage_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trian"]) == 2
    assert "unknown stage 'trian'" in capsys.readouterr().err


def test_every_stage_module_is_in_the_table(project_root: Path) -> None:
    modules = {p.stem for p in (project_root / "pipelines" / "stages").glob("*.py")}
    assert modules - {"__init__", "table"} == {spec.name for spec in STAGES}


def test_every_command_module_is_in_the_table(project_root: Path) -> None:
    modules = {p.stem for p in (project_root / "pipelines" / "commands").glob("*.py")}
    operator = {spec.name for spec in STAGES if spec.subcommands}
    assert modules - {"__init__"} == {spec.name for spec in COMMANDS} | operator
    assert not {spec.name for spec in COMMANDS} & {spec.name for spec in STAGES}


def test_a_stages_subcommands_are_its_command_modules() -> None:
    from pipelines.commands import deploy

    assert stage("deploy").subcommands == tuple(deploy.SUBCOMMANDS)
    assert [s.name for s in STAGES if s.subcommands] == ["deploy"]


@pytest.mark.parametrize("sub", stage("deploy").subcommands)
def test_a_stages_subcommand_runs_its_command_module(
    sub: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["deploy", sub, "--help"])
    assert stopped.value.code == 0
    assert f"recflow deploy {sub}" in capsys.readouterr().out


def test_a_stage_without_a_subcommand_runs_the_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["deploy", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "recflow deploy" in out and "--from-alias" in out


@pytest.mark.parametrize("name", [spec.name for spec in STAGES])
def test_each_stage_module_has_a_main_and_help(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", name, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--params" in result.stdout
    assert f"recflow {name}" in result.stdout


def test_registry_command_dispatches_with_its_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "registry", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "recflow registry" in result.stdout and "--params" in result.stdout
    for sub in ("list", "show", "promote", "rollback", "history", "verify", "backup", "restore"):
        assert sub in result.stdout
