"""Child processes the controller starts (fleet servers, Prometheus): bound to 127.0.0.1,
stopped with their parent, and always stopped.

On Linux a child asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a
controller killed mid-rollout leaves no server behind; a new controller starts fresh ones and
resumes from the rollout record.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("recflow.rollout.processes")

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def ask() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return ask


def start(command: list[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output in ``log_file``; it gets SIGTERM if we die."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as output:
        return subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # only a prctl call runs between fork and exec
            preexec_fn=_die_with_parent(),
        )


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM (in-flight requests finish), then SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        log.warning("process %d ignored SIGTERM for %.0f s: killed", process.pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


def tail(path: Path, chars: int = 2000) -> str:
    """The end of a log file ('' when there is none)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""
