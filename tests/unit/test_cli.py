"""The ``recflow`` command dispatches to each stage of the registry through its own entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.stages.registry import COMMANDS, STAGES


def test_help_lists_every_stage_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for spec in (*STAGES, *COMMANDS):
        assert f"  {spec.name} " in out and spec.help in out
    assert out.index("commands:") > out.index(f"  {STAGES[-1].name} ")


def test_unknown_stage_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trian"]) == 2
    assert "unknown stage 'trian'" in capsys.readouterr().err


def test_every_stage_module_is_in_the_registry(project_root: Path) -> None:
    modules = {p.stem for p in (project_root / "pipelines" / "stages").glob("*.py")}
    assert modules - {"__init__", "registry"} == {spec.name for spec in STAGES}


def test_every_command_module_is_in_the_registry(project_root: Path) -> None:
    modules = {p.stem for p in (project_root / "pipelines" / "commands").glob("*.py")}
    assert modules - {"__init__"} == {spec.name for spec in COMMANDS}
    assert not {spec.name for spec in COMMANDS} & {spec.name for spec in STAGES}


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
