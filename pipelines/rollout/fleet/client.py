"""A fleet as the controller sees it: servers reached over HTTP, changed through the admin API.

Every change goes to every server of the fleet, in order, and each answers only when all its
workers applied it (or refuses, naming the problem). A refusal stops the change and names the
server; :meth:`Fleet.ensure_state` reads what each server serves first, so a change that is in
place already is not sent again (a resumed controller re-applies its step this way).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from pipelines.core.errors import RecflowError
from pipelines.rollout.replay import check_loopback

log = logging.getLogger("recflow.rollout.fleet")


class FleetError(RecflowError):
    """A server of the fleet did not answer, or refused a change."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Tokens:
    """The fleet's admin token and a client token (never logged, never written)."""

    admin: str
    client: str

    def __repr__(self) -> str:
        return "Tokens(admin=..., client=...)"


@dataclass(frozen=True)
class ServerState:
    """What one server says it serves (its desired state, and whether its workers caught up)."""

    url: str
    stable: str | None
    canary: str | None
    canary_weight: float
    shadow: str | None
    staged: str | None
    previous: tuple[str, ...]
    versions: tuple[str, ...]
    converged: bool
    workers: int
    errors: tuple[str, ...]


class Fleet:
    """The servers of one cloud's fleet.

    Args:
        cloud: Its cloud (its metrics label).
        urls: Its servers' base URLs, on loopback.
        tokens: Its tokens.
        timeout_s: Per call (an admin change waits for every worker).
        loopback_only: False for a cluster's pods, whose addresses come from its API.
    """

    def __init__(
        self,
        cloud: str,
        urls: list[str],
        tokens: Tokens,
        timeout_s: float = 120.0,
        loopback_only: bool = True,
    ):
        self.cloud = cloud
        self.loopback_only = loopback_only
        self.urls = [check_loopback(url, loopback_only) for url in urls]
        self.tokens = tokens
        self.timeout_s = timeout_s

    def _call(self, method: str, url: str, body: Any = None, admin: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens.admin}"} if admin else {}
        try:
            answer = httpx.request(method, url, json=body, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise FleetError(f"{url} did not answer: {type(exc).__name__}: {exc}") from exc
        try:
            payload = answer.json()
        except ValueError:
            payload = {"detail": answer.text[:300]}
        if answer.status_code != 200:
            detail = payload.get("detail") if isinstance(payload, dict) else payload
            raise FleetError(f"{url} answered {answer.status_code}: {detail}", answer.status_code)
        return payload

    def post(self, path: str, body: Any = None) -> list[dict[str, Any]]:
        """``POST path`` on every server; their answers.

        Raises:
            FleetError: A server refused or did not answer (later servers were not asked).
        """
        return [self._call("POST", f"{url}{path}", body) for url in self.urls]

    def states(self) -> list[ServerState]:
        """What each server serves.

        Raises:
            FleetError: A server did not answer.
        """
        out = []
        for url in self.urls:
            report = self._call("GET", f"{url}/admin/state")
            desired = report["desired"]
            workers = report.get("workers", [])
            out.append(
                ServerState(
                    url=url,
                    stable=desired.get("stable"),
                    canary=desired.get("canary"),
                    canary_weight=float(desired.get("canary_weight") or 0.0),
                    shadow=desired.get("shadow"),
                    staged=desired.get("staged"),
                    previous=tuple(desired.get("previous") or ()),
                    versions=tuple(sorted(desired.get("versions") or {})),
                    converged=bool(report.get("converged")),
                    workers=len(workers),
                    errors=tuple(str(w["error"]) for w in workers if w.get("error")),
                )
            )
        return out

    def health(self) -> list[str]:
        """Problems of the fleet's servers: not alive, not ready (empty: every one is both)."""
        problems = []
        for url in self.urls:
            for path in ("/healthz", "/readyz"):
                try:
                    self._call("GET", f"{url}{path}", admin=False)
                except FleetError as exc:
                    problems.append(str(exc))
        return problems

    # ---------------------------------------------------------------- changes
    def load(self, version: str) -> None:
        """Fetch ``version`` from the fleet's store and load it on every server."""
        self.post("/admin/load", {"version": version})

    def shadow(self, version: str | None) -> None:
        """Shadow ``version`` (None: stop shadowing)."""
        if version is None:
            self.post("/admin/shadow/stop")
        else:
            self.post("/admin/shadow/start", {"version": version})

    def canary(self, version: str | None, weight: float) -> None:
        """Route ``weight`` of the users to ``version`` (None or 0: every user to stable)."""
        self.post("/admin/canary", {"version": version, "weight": weight})

    def promote(self, version: str) -> None:
        """Make ``version`` stable on every server where it is not yet."""
        for state in self.states():
            if state.stable != version:
                self._call("POST", f"{state.url}/admin/promote", {"version": version})

    def rollback_to(self, version: str) -> None:
        """Return every server whose stable is not ``version`` to its previous stable, which
        must be ``version``.

        Raises:
            FleetError: A server's previous stable version is another one.
        """
        for state in self.states():
            if state.stable == version:
                continue
            if not state.previous or state.previous[-1] != version:
                raise FleetError(
                    f"{state.url} serves {state.stable} and would roll back to "
                    f"{state.previous[-1] if state.previous else 'nothing'}, not {version}"
                )
            self._call("POST", f"{state.url}/admin/rollback")

    def unload(self, version: str) -> None:
        """Stop holding ``version`` wherever it is a canary, a shadow or staged (never the
        stable version or the previous one)."""
        for state in self.states():
            held = version in (state.canary, state.shadow, state.staged)
            if held and state.stable != version and version not in state.previous[-1:]:
                self._call("POST", f"{state.url}/admin/unload", {"version": version})

    def metrics_urls(self) -> list[str]:
        """The servers' base URLs (their ``/metrics`` pages)."""
        return list(self.urls)
