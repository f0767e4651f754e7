"""The admin API's operations on the desired state, and waiting for every worker to apply them.

Each operation checks its request against the current desired state (a refusal is a
:class:`AdminRefused` with the status code and a message naming the problem), writes the new
state under the run folder's lock, applies it on this worker at once and waits until every
live worker reports the new generation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.core.errors import RecflowError
from pipelines.core.names import BadVersionName
from pipelines.serving.server import state as run_state
from pipelines.serving.server.service import Service
from pipelines.serving.server.sources import ModelSource, SourceError
from pipelines.serving.server.state import DesiredState


class AdminRefused(RecflowError):
    """An admin request that cannot be carried out; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _loaded(state: DesiredState, version: str) -> None:
    if version not in state.versions:
        raise AdminRefused(
            409, f"version {version} is not loaded: POST /admin/load {{'version': ...}} first"
        )


def set_canary(version: str | None, weight: float) -> Callable[[DesiredState], DesiredState]:
    """Route ``weight`` of the users to ``version``; no version or weight 0 ends the canary."""

    def change(state: DesiredState) -> DesiredState:
        if version is None or weight == 0.0:
            return replace(state, canary=None, canary_weight=0.0)
        _loaded(state, version)
        if version == state.stable:
            raise AdminRefused(409, f"version {version} is the stable version, not a canary")
        return replace(state, canary=version, canary_weight=weight)

    return change


def start_shadow(version: str) -> Callable[[DesiredState], DesiredState]:
    """Score a copy of each stable request with ``version``."""

    def change(state: DesiredState) -> DesiredState:
        _loaded(state, version)
        if version == state.stable:
            raise AdminRefused(409, f"version {version} is the stable version: nothing to compare")
        return replace(state, shadow=version)

    return change


def stop_shadow(state: DesiredState) -> DesiredState:
    """Stop shadow scoring (a no-op when none runs)."""
    return replace(state, shadow=None)


def promote(version: str | None) -> Callable[[DesiredState], DesiredState]:
    """Make ``version`` (default: the canary) stable; the canary ends."""

    def change(state: DesiredState) -> DesiredState:
        target = version or state.canary
        if target is None:
            raise AdminRefused(409, "no canary to promote and no version given")
        _loaded(state, target)
        if target == state.stable:
            raise AdminRefused(409, f"version {target} is already stable")
        return replace(
            state,
            stable=target,
            previous=(*state.previous, state.stable),
            canary=None,
            canary_weight=0.0,
            shadow=None if state.shadow == target else state.shadow,
            staged=None if state.staged == target else state.staged,
        )

    return change


def unload(version: str) -> Callable[[DesiredState], DesiredState]:
    """Stop holding ``version``: it leaves the canary, the shadow and the staged slot, and
    every worker drops it. The stable version and the previous one (a rollback's target) stay.
    """

    def change(state: DesiredState) -> DesiredState:
        if version not in state.versions:
            raise AdminRefused(409, f"version {version} was never loaded here")
        if version == state.stable:
            raise AdminRefused(409, f"version {version} is the stable version: promote another")
        if state.previous and version == state.previous[-1]:
            raise AdminRefused(
                409, f"version {version} is the previous stable version, kept for a rollback"
            )
        canary = state.canary == version
        return replace(
            state,
            canary=None if canary else state.canary,
            canary_weight=0.0 if canary else state.canary_weight,
            shadow=None if state.shadow == version else state.shadow,
            staged=None if state.staged == version else state.staged,
        )

    return change


def rollback(state: DesiredState) -> DesiredState:
    """Return to the previous stable version; canary and shadow end."""
    if not state.previous:
        raise AdminRefused(409, f"no previous stable version to roll back to from {state.stable}")
    return replace(
        state,
        stable=state.previous[-1],
        previous=state.previous[:-1],
        canary=None,
        canary_weight=0.0,
        shadow=None,
    )


class Admin:
    """The admin operations of one worker."""

    def __init__(self, service: Service, source: ModelSource | None, workers: int = 1) -> None:
        self.service = service
        self.source = source
        self.workers = workers
        self.run_dir = service.run_dir

    async def load(self, version: str) -> dict[str, Any]:
        """Fetch ``version`` from the registry (verified), load it here, stage it everywhere.

        Raises:
            AdminRefused: 409 without a registry or when it does not load (the current
                models keep serving), 404 when the registry lacks it, 409 when an object
                fails its sha256.
        """
        if self.source is None:
            raise AdminRefused(409, "this server has no registry to load versions from")
        source = self.source
        try:
            folder = await asyncio.to_thread(source.fetch, version, self.run_dir / "versions")
        except (SourceError, BadVersionName) as exc:
            raise AdminRefused(404 if "not in the registry" in str(exc) else 409, str(exc)) from exc
        try:
            await self.service.preload(version, folder)
        except Exception as exc:
            raise AdminRefused(409, f"version {version} refused: {exc}") from exc

        def change(state: DesiredState) -> DesiredState:
            return replace(state, versions={**state.versions, version: str(folder)}, staged=version)

        return await self.apply(change)

    async def apply(self, change: Callable[[DesiredState], DesiredState]) -> dict[str, Any]:
        """Write ``change`` to the desired state, apply it here, wait for every worker.

        Raises:
            AdminRefused: The change is refused (409), or a worker did not apply it within
                ``serve.admin_timeout_s`` (504).
        """
        try:
            desired = run_state.update_desired(self.run_dir, change)
        except run_state.StateError as exc:
            raise AdminRefused(409, str(exc)) from exc
        await self.service.reconcile()
        deadline = time.monotonic() + self.service.cfg.admin_timeout_s
        while True:
            workers = run_state.read_reports(self.run_dir)
            done = [w for w in workers if w.get("generation", -1) >= desired.generation]
            # a worker still starting has no report yet: it must show up too
            if len(done) >= self.workers and len(done) == len(workers):
                return state_report(self.run_dir)
            if time.monotonic() > deadline:
                raise AdminRefused(
                    504,
                    f"{len(done)} of {self.workers} workers applied generation "
                    f"{desired.generation} within serve.admin_timeout_s",
                )
            await asyncio.sleep(0.05)


def state_report(run_dir: Path) -> dict[str, Any]:
    """The desired state beside what each live worker serves."""
    desired = run_state.read_desired(run_dir)
    workers = run_state.read_reports(run_dir)
    return {
        "desired": desired.to_json(),
        "workers": workers,
        "converged": all(w.get("generation") == desired.generation for w in workers),
    }
