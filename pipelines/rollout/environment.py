"""What a rollout acts on: each target's fleet, the metrics it exposes, and the traffic replayed
at it.

The state machine (``pipelines.rollout.controller``) asks an :class:`Environment` for every
change and every observation, naming the target by its cloud; it never reaches a server
itself. :class:`LocalEnvironment` is today's: local fleets of ``recflow serve`` processes on
127.0.0.1 (``pipelines.rollout.fleet``), their metrics from each server's ``/metrics`` or from
a local Prometheus (``deploy.metrics.source``), and the held-out sessions replayed at them.
:class:`~pipelines.rollout.cluster.ClusterEnvironment` drives the Deployments of each cloud's
cluster with the same operations; both share :class:`FleetEnvironment`.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from pipelines.core.errors import InputError
from pipelines.core.waiting import wait_until
from pipelines.registry.clouds import Registry
from pipelines.registry.pseudonyms import served_key
from pipelines.rollout.analysis import Check, Verdict
from pipelines.rollout.context import Context, short
from pipelines.rollout.fleet.client import Fleet, Tokens
from pipelines.rollout.fleet.local import LocalFleet
from pipelines.rollout.observation import Judge, Settled, StopWhen, Traffic, observe
from pipelines.rollout.prometheus import LocalPrometheus, PrometheusError, find_binary
from pipelines.rollout.sessions import HeldOut, load_sessions
from pipelines.rollout.sources import MetricSource, PrometheusSource, ScrapeSource

# where the fleets a rollout drives run: local server processes, or each cloud's Deployment
Fleets = Literal["local", "kubernetes"]


class Environment(Protocol):
    """The operations the state machine needs, per target (named by its cloud).

    A change applies to every server of the target's fleet or raises
    :class:`~pipelines.rollout.fleet.client.FleetError` naming the one that refused; metrics
    that cannot be read raise :class:`~pipelines.rollout.metrics.MetricsError`.
    """

    def start(self, cloud: str, version: str) -> None:
        """Start the target's fleet serving ``version`` (its stable version, or the candidate
        on a first rollout); nothing if this environment started it already.

        Raises:
            FleetStartError: A server did not start.
        """
        ...

    def running(self, cloud: str) -> bool:
        """Whether this environment started the target's fleet (and has not stopped it)."""
        ...

    def check(self, cloud: str, expected: str) -> list[Check]:
        """The infra checks ``fleet`` (every server alive, ready, converged, serving
        ``expected`` as stable) and ``metrics`` (the metrics cover every server), waiting a
        while for both to pass."""
        ...

    def load(self, cloud: str, version: str) -> None:
        """Fetch ``version`` from the target's store and hold it ready on every server."""
        ...

    def shadow(self, cloud: str, version: str | None) -> None:
        """Let ``version`` score a copy of each stable request (None: stop shadowing)."""
        ...

    def canary(self, cloud: str, version: str | None, weight: float) -> None:
        """Route ``weight`` of the users to ``version`` (None or 0: every user to stable)."""
        ...

    def promote(self, cloud: str, version: str) -> None:
        """Make ``version`` stable on every server."""
        ...

    def not_serving(self, cloud: str, version: str) -> list[str]:
        """The servers whose stable version is not ``version`` (empty: every one serves it)."""
        ...

    def roll_back(self, cloud: str, stable: str, candidate: str) -> None:
        """Every user back to ``stable`` at once, no shadow, and ``candidate`` unloaded."""
        ...

    def stop(self, cloud: str) -> None:
        """Stop the target's fleet: nothing serves there afterwards."""
        ...

    def observe(
        self,
        cloud: str,
        step: str,
        judge: Judge,
        *,
        max_requests: int,
        pair: bool = False,
        stop_when: StopWhen | None = None,
        settled: Settled | None = None,
        interrupted: Callable[[], bool],
        on_verdict: Callable[[Verdict], None],
    ) -> Verdict:
        """Replay traffic at the target's fleet, measure and judge the step (see
        :func:`pipelines.rollout.observation.observe` for the arguments)."""
        ...

    def close(self) -> None:
        """Release everything this environment started (the rollout's process ends)."""
        ...


class FleetEnvironment:
    """What every environment of :class:`Fleet` s shares: the changes over each server's admin
    API, the infra check, and the held-out sessions replayed at the servers.

    A subclass starts and stops the fleets (:meth:`start`, :meth:`stop`, :meth:`close`) and
    fills :attr:`fleets` and :attr:`sources`.

    Args:
        ctx: The context (params, their file, the project root, the prepared folder).
        registry: The registry (its store of record holds the pseudonymization key).
        tokens: The fleets' admin token and a client token.
    """

    def __init__(self, ctx: Context, registry: Registry, tokens: Tokens) -> None:
        self.ctx = ctx
        self.cfg = ctx.params.deploy
        self.registry = registry
        self.tokens = tokens
        self.fleets: dict[str, Fleet] = {}
        self.sources: dict[str, MetricSource] = {}
        self._held_out: HeldOut | None = None
        self._traffics: dict[str, Traffic] = {}

    def start(self, cloud: str, version: str) -> None:
        raise NotImplementedError

    def stop(self, cloud: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def running(self, cloud: str) -> bool:
        return cloud in self.fleets

    def _workers(self, cloud: str) -> int:
        """The worker processes each server of ``cloud`` runs."""
        workers: int = getattr(self.cfg.fleets, cloud).workers
        return workers

    def check(self, cloud: str, expected: str) -> list[Check]:
        fleet, source = self.fleets[cloud], self.sources[cloud]
        workers = self._workers(cloud)
        problems: dict[str, list[str]] = {}

        def ready() -> bool:
            found = fleet.health()
            for state in fleet.states():
                if state.stable != expected:
                    found.append(f"{state.url} serves {state.stable}, not {expected}")
                if not state.converged or state.workers < workers:
                    found.append(f"{state.url}: {state.workers} of {workers} workers converged")
                found.extend(f"{state.url}: {error}" for error in state.errors)
            problems["fleet"], problems["metrics"] = found, source.problems()
            return not (problems["fleet"] or problems["metrics"])

        wait_until(ready, timeout_s=self.cfg.metrics.start_timeout_s, interval_s=0.5)
        servers = len(fleet.urls)
        return [
            Check(
                "fleet",
                "fail" if problems["fleet"] else "pass",
                float(servers),
                None,
                None,
                "; ".join(problems["fleet"]) or f"{servers} server(s) ready on {short(expected)}",
            ),
            Check(
                "metrics",
                "fail" if problems["metrics"] else "pass",
                None,
                None,
                None,
                "; ".join(problems["metrics"]) or source.describe(),
            ),
        ]

    def load(self, cloud: str, version: str) -> None:
        self.fleets[cloud].load(version)

    def shadow(self, cloud: str, version: str | None) -> None:
        self.fleets[cloud].shadow(version)

    def canary(self, cloud: str, version: str | None, weight: float) -> None:
        self.fleets[cloud].canary(version, weight)

    def promote(self, cloud: str, version: str) -> None:
        self.fleets[cloud].promote(version)

    def not_serving(self, cloud: str, version: str) -> list[str]:
        return [s.url for s in self.fleets[cloud].states() if s.stable != version]

    def roll_back(self, cloud: str, stable: str, candidate: str) -> None:
        fleet = self.fleets[cloud]
        fleet.canary(None, 0.0)
        fleet.shadow(None)
        fleet.rollback_to(stable)
        fleet.unload(candidate)

    def _traffic(self, fleet: Fleet) -> Traffic:
        """The fleet's traffic; every window goes on with the sessions the last one left."""
        if self._held_out is None:
            self._held_out = load_sessions(
                self.ctx.prepared, self.cfg.replay.split, seed=self.ctx.params.run.seed
            )
        traffic = self._traffics.get(fleet.cloud)
        if traffic is None or traffic.endpoints != fleet.urls:
            cursor = 0 if traffic is None else traffic.cursor
            traffic = self._traffics[fleet.cloud] = Traffic(
                fleet.urls,
                self.tokens.client,
                self._held_out,
                cursor,
                loopback_only=fleet.loopback_only,
            )
        return traffic

    def observe(
        self,
        cloud: str,
        step: str,
        judge: Judge,
        *,
        max_requests: int,
        pair: bool = False,
        stop_when: StopWhen | None = None,
        settled: Settled | None = None,
        interrupted: Callable[[], bool],
        on_verdict: Callable[[Verdict], None],
    ) -> Verdict:
        return observe(
            step,
            self.cfg,
            self._traffic(self.fleets[cloud]),
            self.sources[cloud],
            judge,
            max_requests=max_requests,
            pair=pair,
            stop_when=stop_when,
            settled=settled,
            interrupted=interrupted,
            on_verdict=on_verdict,
        )


class LocalEnvironment(FleetEnvironment):
    """Local fleets, their metrics, and the held-out sessions replayed at them.

    Args:
        ctx: The context (params, their file, the project root, the prepared folder).
        folder: The rollout's folder: the servers' run folders and Prometheus' data go under it.
        registry: The registry (its store of record holds the pseudonymization key).
    """

    def __init__(self, ctx: Context, folder: Path, registry: Registry) -> None:
        super().__init__(
            ctx, registry, Tokens(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        )
        self.folder = folder
        self.locals: dict[str, LocalFleet] = {}
        self.prometheus: LocalPrometheus | None = None
        self._key: str | None = None

    def pseudonym_key(self) -> str:
        """The request log's pseudonymization key (read once; it reaches the servers through
        their environment only)."""
        if self._key is None:
            self._key = served_key(self.registry.record)
        return self._key

    # ------------------------------------------------------------------ fleets
    def start(self, cloud: str, version: str) -> None:
        if cloud in self.fleets:
            return
        local = LocalFleet(
            cloud,
            self.ctx.params_file,
            self.folder / "fleets" / cloud,
            getattr(self.cfg.fleets, cloud),
            self.ctx.root / self.ctx.params.serve.request_log.dir / cloud,
            self.tokens,
            self.pseudonym_key(),
        )
        self.locals[cloud] = local
        fleet = local.start(version, self.cfg.fleet_start_timeout_s)
        self.fleets[cloud] = fleet
        self.sources[cloud] = self._source(cloud, fleet)

    def stop(self, cloud: str) -> None:
        local = self.locals.pop(cloud, None)
        if local is not None:
            local.stop()
        self.fleets.pop(cloud, None)

    def close(self) -> None:
        for local in self.locals.values():
            local.stop()
        self.locals.clear()
        self.fleets.clear()
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None

    # ------------------------------------------------------------------ metrics
    def _source(self, cloud: str, fleet: Fleet) -> MetricSource:
        metrics = self.cfg.metrics
        binary = None if metrics.source == "scrape" else find_binary(metrics.prometheus)
        if binary is None:
            if metrics.source == "prometheus":
                raise InputError(
                    f"deploy.metrics.source is prometheus but {metrics.prometheus!r} is not "
                    "installed (make setup installs Debian's package), or set source: scrape"
                )
            return ScrapeSource(fleet.urls)
        if self.prometheus is None:
            folder = self.folder / "prometheus"
            # a fresh database: series of an earlier controller's fleets must not count
            shutil.rmtree(folder / "data", ignore_errors=True)
            server = LocalPrometheus(binary, folder, metrics.scrape_interval_s)
            try:
                server.start(metrics.start_timeout_s)
            except PrometheusError as exc:
                raise InputError(str(exc)) from exc
            self.prometheus = server
        self.prometheus.watch(cloud, fleet.urls)
        return PrometheusSource(
            self.prometheus.url, cloud, len(fleet.urls), metrics.scrape_interval_s
        )
