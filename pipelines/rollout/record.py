"""The rollout record: where a rollout stands, persisted after every transition.

``<deploy.run_dir>/<version>/rollout.json`` holds, per target, its phase (``pending``, ``infra``,
``shadow``, ``canary`` with the canary step, ``full``, ``done``; after a failure ``rolled_back``
or ``kept``), the stable version it started from, each step's verdict, and the ledger entries
written; and the rollout's status (``running``, ``awaiting_approval``, ``succeeded``,
``rolled_back``). A controller killed mid-rollout leaves it at the last completed transition;
the next one resumes from there.

Beside it, what other processes leave for the controller: ``approval.json``, the decision
before the later targets (``pipelines.rollout.approval``: approve or reject, written once, the
first decision wins and stays), and ``rollback.json`` (``recflow deploy --rollback``), which a
running controller picks up. One controller at a time holds ``<run_dir>/.lock``;
``latest.json`` names the latest rollout.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.io import write_json

FORMAT = 1
RECORD = "rollout.json"
APPROVAL = "approval.json"
ROLLBACK = "rollback.json"
LATEST = "latest.json"
LOCK = ".lock"

# a target whose rollout is over: it serves the new version, or stable again
SETTLED = ("done", "rolled_back", "kept")
FINISHED = ("succeeded", "rolled_back")


class RolloutBusy(RecflowError):
    """Another controller holds the deploy lock."""

    exit_code = 75  # EX_TEMPFAIL


@dataclass
class TargetRecord:
    """One target's progress.

    Attributes:
        cloud: The target (a cloud: its fleet and its store).
        phase: ``pending``, ``infra``, ``shadow``, ``canary``, ``full``, ``done``; after a
            failure ``rolled_back`` (stable serves again) or ``kept`` (a first version, with
            nothing to go back to).
        canary_step: The canary weight the target is at (index into the weights).
        stable: The version serving when the target's rollout began (None: a first rollout).
        steps: Each step's verdict, in order (a held step appears once per window).
        ledger: Numbers of the ledger entries this rollout wrote for the target.
        started_at, finished_at: ISO times.
        note: Anything a person should know (why a target was kept).
    """

    cloud: str
    phase: str = "pending"
    canary_step: int = 0
    stable: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[int] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    note: str | None = None

    @property
    def first_model(self) -> bool:
        """A first rollout: nothing served in the target before."""
        return self.phase != "pending" and self.stable is None


@dataclass
class RolloutRecord:
    """One version's rollout across the targets."""

    version: str
    targets: list[TargetRecord]
    actor: str
    created_at: str
    updated_at: str
    run: dict[str, Any] | None = None
    status: str = "running"
    approval: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    resumes: int = 0

    def target(self, cloud: str) -> TargetRecord:
        """The record of target ``cloud``."""
        for target in self.targets:
            if target.cloud == cloud:
                return target
        raise KeyError(cloud)

    @property
    def current(self) -> TargetRecord | None:
        """The first target whose rollout is not over (None: all are)."""
        return next((t for t in self.targets if t.phase not in SETTLED), None)

    @property
    def touched(self) -> list[TargetRecord]:
        """The targets whose fleet the rollout changed or may have changed."""
        return [t for t in self.targets if t.phase != "pending"]

    def where(self) -> str:
        """Where it stands, in words: ``public canary 25%``."""
        if self.status in FINISHED:
            return self.status.replace("_", " ")
        target = self.current
        if target is None:
            return "every target done"
        if self.status == "awaiting_approval":
            return f"waiting for approval before {target.cloud}"
        return f"{target.cloud} {target.phase}"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: Any, where: Path) -> RolloutRecord:
        """Parse a record.

        Raises:
            InputError: It is not a rollout record of this format.
        """
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            targets = [TargetRecord(**t) for t in raw["targets"]]
            fields = {k: v for k, v in raw.items() if k not in ("format", "targets")}
            return cls(targets=targets, **fields)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"rollout record {where} is malformed: {exc}") from exc


class Records:
    """The rollout records under ``deploy.run_dir``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def folder(self, version: str) -> Path:
        """The folder of ``version``'s rollout (record, requests, local fleets, Prometheus)."""
        return self.run_dir / version

    def load(self, version: str) -> RolloutRecord | None:
        """``version``'s record, None when it has never been rolled out.

        Raises:
            InputError: The record is unreadable or malformed.
        """
        path = self.folder(version) / RECORD
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"rollout record {path} is not readable JSON: {exc}") from exc
        return RolloutRecord.from_json(raw, path)

    def save(self, record: RolloutRecord) -> None:
        """Write ``record`` (atomically) and make it the latest."""
        write_json(self.folder(record.version) / RECORD, record.to_json())
        write_json(self.run_dir / LATEST, {"version": record.version})

    def latest(self) -> RolloutRecord | None:
        """The most recent rollout's record, None when there was none."""
        try:
            pointer = json.loads((self.run_dir / LATEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.run_dir / LATEST} is not readable JSON: {exc}") from exc
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
            raise InputError(f"{self.run_dir / LATEST} names no version")
        return self.load(pointer["version"])

    # ------------------------------------------------------------ requests from other commands
    def write_request(self, version: str, name: str, payload: dict[str, Any]) -> None:
        """Leave a request (approval, rollback) for the controller of ``version``."""
        write_json(self.folder(version) / name, payload)

    def write_request_once(
        self, version: str, name: str, payload: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Leave a request unless one is there already: create-if-absent, atomically (the whole
        file appears at once, and of two writers exactly one creates it).

        Returns:
            The request that stands (``payload``, or the one found), and whether it is
            ``payload``.
        """
        path = self.folder(version) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)
            # link(2) never replaces an existing name: the first writer's file stands
            os.link(tmp_name, path)
            return payload, True
        except FileExistsError:
            found = self.read_request(version, name)
            if found is None:
                raise InputError(f"{path} holds no request object") from None
            return found, False
        finally:
            os.unlink(tmp_name)

    def read_request(self, version: str, name: str) -> dict[str, Any] | None:
        """A request left for ``version``'s controller, if any."""
        path = self.folder(version) / name
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path} is not readable JSON: {exc}") from exc
        return payload if isinstance(payload, dict) else None

    def clear_request(self, version: str, name: str) -> None:
        """Remove a request once carried out."""
        (self.folder(version) / name).unlink(missing_ok=True)

    # ------------------------------------------------------------ one controller at a time
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the deploy lock for the block; the lock file names the holder's pid meanwhile.

        Raises:
            RolloutBusy: Another controller holds it (its pid is in the message).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK
        # one try, no waiting: a second controller is refused at once
        lock = FileLock(path, blocking=False)
        try:
            lock.acquire()
        except Timeout:
            holder = path.read_text(encoding="utf-8").strip() or "unknown"
            raise RolloutBusy(
                f"another deploy controller (pid {holder}) is running; wait for it, or "
                "ask it to stop with recflow deploy --rollback --reason ..."
            ) from None
        try:
            path.write_text(str(os.getpid()), encoding="utf-8")
            yield
        finally:
            path.write_text("", encoding="utf-8")
            lock.release()

    def controller_running(self) -> bool:
        """Whether a controller holds the deploy lock now."""
        try:
            with self.lock():
                return False
        except RolloutBusy:
            return True
