"""How admin changes reach every worker: a desired-state file in the run folder.

An admin call, on whichever worker receives it, changes ``desired.json`` under a file lock
(read, change, write to a temporary name, rename) and bumps its generation. Every worker
compares the file's identity with the last it applied a few times a second (one ``stat``),
loads what is new off the request path, swaps it in, and writes its own report
``workers/<pid>.json``: what it serves, which generation, the last error. ``GET /admin/state``
reads the desired state beside the reports of the live workers.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from pipelines.core.errors import InputError
from pipelines.core.io import write_json

DESIRED = "desired.json"
WORKERS = "workers"
SETTINGS = "settings.json"
# the run folder of the server a worker belongs to
RUN_DIR_ENV = "RECFLOW_SERVE_RUN"
# where prometheus_client's multiprocess mode keeps each worker's values
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class StateError(InputError):
    """The desired state is missing or unreadable, or a change to it is not allowed."""


@dataclass(frozen=True)
class DesiredState:
    """What every worker should serve.

    Attributes:
        generation: Bumped by every change; a worker reports the last one it applied.
        stable: The version most users get.
        previous: Earlier stable versions, oldest first (a rollback returns to the last).
        canary: The canary version, if any, and the share of users it gets.
        canary_weight: Share of users (by hash of the user id) routed to the canary.
        shadow: A version that scores a copy of each stable request off the request path.
        staged: The version last loaded through the admin API, held ready by every worker.
        versions: Every version fetched so far and its local folder.
    """

    generation: int
    stable: str
    versions: dict[str, str]
    previous: tuple[str, ...] = ()
    canary: str | None = None
    canary_weight: float = 0.0
    shadow: str | None = None
    staged: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        out = asdict(self)
        out["previous"] = list(self.previous)
        return out

    @classmethod
    def from_json(cls, raw: Any) -> DesiredState:
        """Parse the file's content.

        Raises:
            StateError: A field is missing or of the wrong type.
        """
        try:
            state = cls(
                generation=int(raw["generation"]),
                stable=str(raw["stable"]),
                versions={str(k): str(v) for k, v in dict(raw["versions"]).items()},
                previous=tuple(str(v) for v in raw.get("previous", ())),
                canary=None if raw.get("canary") is None else str(raw["canary"]),
                canary_weight=float(raw.get("canary_weight", 0.0)),
                shadow=None if raw.get("shadow") is None else str(raw["shadow"]),
                staged=None if raw.get("staged") is None else str(raw["staged"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"the desired state is malformed: {exc!r}") from exc
        for name in (state.stable, state.canary, state.shadow, state.staged, *state.previous):
            if name is not None and name not in state.versions:
                raise StateError(f"the desired state names version {name} but has no folder")
        return state

    def served(self) -> set[str]:
        """Versions a worker holds loaded: the arms, the staged version, and the previous
        stable one (so a rollback is a swap, not a load)."""
        held = (self.stable, self.canary, self.shadow, self.staged, *self.previous[-1:])
        return {v for v in held if v is not None}


def desired_path(run_dir: Path) -> Path:
    """The desired-state file of a run folder."""
    return run_dir / DESIRED


def identity(run_dir: Path) -> tuple[int, int] | None:
    """A cheap fingerprint of the file (inode and mtime): it changes with every write."""
    try:
        st = os.stat(desired_path(run_dir))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def read_desired(run_dir: Path) -> DesiredState:
    """The desired state.

    Raises:
        StateError: The file is missing or unreadable.
    """
    path = desired_path(run_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StateError(f"{path} not found: the server's run folder is not initialised") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path} is not readable JSON: {exc}") from exc
    return DesiredState.from_json(raw)


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock: one change to the desired state at a time, across workers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir / ".lock", poll_interval=0.01):
        yield


def write_initial(run_dir: Path, state: DesiredState) -> None:
    """Start a run folder with ``state`` (replacing any earlier desired state)."""
    with _locked(run_dir):
        write_json(desired_path(run_dir), state.to_json())


def update_desired(run_dir: Path, change: Callable[[DesiredState], DesiredState]) -> DesiredState:
    """Apply ``change`` to the desired state under the lock, bump the generation, write it.

    Raises:
        StateError: ``change`` refuses (its own message), or the file is unreadable.
    """
    with _locked(run_dir):
        current = read_desired(run_dir)
        changed = change(current)
        new = replace(changed, generation=current.generation + 1)
        write_json(desired_path(run_dir), new.to_json())
        return new


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write this worker's report (atomically)."""
    write_json(run_dir / WORKERS / f"{os.getpid()}.json", report)


def remove_report(run_dir: Path) -> None:
    """Remove this worker's report (at shutdown)."""
    (run_dir / WORKERS / f"{os.getpid()}.json").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_reports(run_dir: Path) -> list[dict[str, Any]]:
    """Reports of the live workers, by pid (a dead worker's report is ignored)."""
    reports = []
    for path in sorted((run_dir / WORKERS).glob("*.json")):
        if not path.stem.isdigit() or not _alive(int(path.stem)):
            continue
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # being replaced right now: the next read sees it
    return sorted(reports, key=lambda r: int(r.get("pid", 0)))
