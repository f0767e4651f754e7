"""A closed reader of ``recflow``'s standard output ends it quietly; other broken pipes do not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.core import cli as core_cli
from pipelines.core.cli import BROKEN_PIPE_EXIT, quiet_on_broken_pipe


def _closed_pipe() -> int:
    """The writing end of a pipe whose reader has gone."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize(
    "args",
    [["--help"], ["deploy", "manifests", "--cloud", "private", "--version", "0123456789abcdef"]],
    ids=["usage", "a subcommand"],
)
def test_a_closed_reader_ends_recflow_without_a_traceback(args: list[str]) -> None:
    write = _closed_pipe()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert result.returncode == BROKEN_PIPE_EXIT, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_a_broken_pipe_elsewhere_is_raised_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_cli, "_stdout_reader_gone", lambda: False)

    def body() -> int:
        raise BrokenPipeError("a child process went away")

    with pytest.raises(BrokenPipeError, match="a child process went away"):
        quiet_on_broken_pipe(body)


def test_the_reader_check_sees_a_closed_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    write = _closed_pipe()
    open_read, open_write = os.pipe()
    try:
        with os.fdopen(write, "w", closefd=False) as gone:
            monkeypatch.setattr(sys, "stdout", gone)
            assert core_cli._stdout_reader_gone()
        with os.fdopen(open_write, "w", closefd=False) as listened:
            monkeypatch.setattr(sys, "stdout", listened)
            assert not core_cli._stdout_reader_gone()
    finally:
        for fd in (write, open_read, open_write):
            os.close(fd)
