"""The ``recflow`` command dispatches to each stage's own entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines import cli


def test_help_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.STAGES:
        assert name in out


def test_unknown_stage_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trian"]) == 2
    assert "unknown stage 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("stage", sorted(cli.STAGES))
def test_each_stage_module_has_a_main_and_help(stage: str) -> None:
    module = cli.STAGES[stage][0]
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--params" in result.stdout
