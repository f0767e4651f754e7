"""One worker's recommendation service: the models it serves and how a request is answered.

A worker holds the stable model, optionally a canary (a share of users by hash of the user id)
and a shadow (scores a copy of each stable request off the request path). Each model has its
own :class:`~pipelines.serving.server.batching.Batcher`. A request is answered from the cache,
else from its model through the batcher, else, when the model fails or misses its deadline,
from the popularity fallback: the shelf is never empty.

Each version encodes a request's catalog ids with its own item table and decodes its answer
with it. The shadow does the same with its table, and its answer is compared with stable's as
catalog ids: a version whose table maps indices to the wrong items shows up as a low overlap.

Models change only through :meth:`Service.reconcile`, which applies the run folder's desired
state: new versions load in a thread while the old ones keep serving, then the references are
swapped in one step of the event loop. A request keeps the model it was routed to, so a swap
never fails or drops it; the old model's batcher drains its queue before it stops. A version
that does not load is refused and reported, and the current model keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from cachetools import TTLCache

from pipelines.core.errors import RecflowError
from pipelines.core.params import ServeConfig
from pipelines.serving.server import state as run_state
from pipelines.serving.server.batching import Answer, Batcher, ModelFailure
from pipelines.serving.server.bundle import Bundle, load_bundle
from pipelines.serving.server.metrics import Metrics
from pipelines.serving.server.pseudonyms import Pseudonymizer
from pipelines.serving.server.requestlog import RequestLog, Row
from pipelines.serving.server.routing import goes_to_canary

log = logging.getLogger("recflow.serve")

_ENCODE = msgspec.json.Encoder().encode


class NotReady(RecflowError):
    """No model is loaded yet."""


@dataclass
class Served:
    """A loaded version and its batcher."""

    bundle: Bundle
    batcher: Batcher

    @property
    def version(self) -> str:
        return self.bundle.version


@dataclass
class ShadowStats:
    """Running totals of the shadow comparison in this worker.

    The overlap of one copy is the share of stable's answered catalog ids that the shadow's
    answer to the same history (encoded and decoded with the shadow's own item table) holds.
    """

    version: str
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    overlap_sum: float = 0.0
    latency_sum_s: float = 0.0

    def report(self) -> dict[str, Any]:
        n = max(self.scored, 1)
        return {
            "version": self.version,
            "scored": self.scored,
            "skipped": self.skipped,
            "failed": self.failed,
            "mean_overlap": self.overlap_sum / n if self.scored else None,
            "mean_latency_ms": 1000 * self.latency_sum_s / n if self.scored else None,
        }


@dataclass
class _Arms:
    stable: Served | None = None
    canary: Served | None = None
    canary_weight: float = 0.0
    shadow: Served | None = None


@dataclass
class Service:
    """The models of one worker and the answer to each request.

    The answer cache holds at most ``cfg.cache.size`` answers, each for ``cfg.cache.ttl_s``
    seconds of ``clock``; the least recently used goes first when it is full, and every model
    change clears it.
    """

    cfg: ServeConfig
    run_dir: Path
    metrics: Metrics
    pseudonymize: Pseudonymizer | None = None
    request_log: RequestLog | None = None
    arms: _Arms = field(default_factory=_Arms)
    loaded: dict[str, Served] = field(default_factory=dict)
    generation: int = -1
    last_error: str | None = None
    shadow_stats: ShadowStats | None = None
    clock: Callable[[], float] = time.monotonic
    _applied: tuple[int, int] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _shadow_pending: int = 0
    _last_report: float = 0.0

    def __post_init__(self) -> None:
        self.cache: TTLCache[tuple[Any, ...], Answer, float] = TTLCache(
            self.cfg.cache.size, self.cfg.cache.ttl_s, timer=self.clock
        )
        self._deadline_s = self.cfg.model_deadline_ms / 1000
        self._housekeeping: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def ready(self) -> bool:
        """A stable model is loaded and answered its warm-up."""
        return self.arms.stable is not None

    async def start(self) -> None:
        """Apply the desired state, then keep applying it and writing the request log."""
        await self.reconcile()
        self._housekeeping = asyncio.get_running_loop().create_task(self._keep_house())

    async def stop(self) -> None:
        """Stop housekeeping, drain every model, write the request log's last window."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self._tasks:  # shadow copies, draining models, request log windows being written
            await asyncio.wait(list(self._tasks), timeout=30)
        for served in list(self.loaded.values()):
            await served.batcher.close()
        if self.request_log is not None:
            with contextlib.suppress(Exception):
                self.request_log.flush()
        with contextlib.suppress(OSError):
            run_state.remove_report(self.run_dir)

    async def _keep_house(self) -> None:
        interval = self.cfg.reconcile_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
                self._write_log_if_due(time.time())
                if self.shadow_stats is not None and self.clock() - self._last_report > 1.0:
                    self.write_report()
            except Exception:  # housekeeping must outlive any single failure
                log.exception("housekeeping failed")

    # ---------------------------------------------------------------- models
    def _open(self, bundle: Bundle) -> Served:
        served: Served

        def on_batch(size: int) -> None:
            self.metrics.batch_size.labels(served.version, self.arm_of(served)).observe(size)

        batching = self.cfg.batching
        batcher = Batcher(
            bundle.answer,
            max_batch=batching.max_batch,
            max_wait_s=batching.max_wait_ms / 1000,
            deadline_s=self._deadline_s,
            on_batch=on_batch,
            enabled=batching.enabled,
        )
        served = Served(bundle, batcher)
        batcher.start()
        return served

    def arm_of(self, served: Served) -> str:
        """The arm ``served`` answers for now ("stable", "canary", "shadow" or "idle")."""
        if served is self.arms.stable:
            return "stable"
        if served is self.arms.canary:
            return "canary"
        if served is self.arms.shadow:
            return "shadow"
        return "idle"

    async def preload(self, version: str, folder: Path) -> None:
        """Load ``version`` here (off the request path) so a later change finds it loaded.

        Raises:
            RecflowError: It does not load (the message says why).
        """
        async with self._lock:
            if version not in self.loaded:
                bundle = await asyncio.to_thread(
                    load_bundle, version, folder, threads=self.cfg.threads
                )
                self.loaded[version] = self._open(bundle)

    async def reconcile(self, *, force: bool = False) -> None:
        """Apply the desired state if it changed since the last time."""
        async with self._lock:
            ident = run_state.identity(self.run_dir)
            if ident == self._applied and not force:
                return
            desired = run_state.read_desired(self.run_dir)
            errors = []
            for version in sorted(desired.served() - set(self.loaded)):
                folder = Path(desired.versions[version])
                try:
                    bundle = await asyncio.to_thread(
                        load_bundle, version, folder, threads=self.cfg.threads
                    )
                except Exception as exc:  # refused: the current models keep serving
                    errors.append(f"version {version} refused: {exc}")
                    log.error("version %s refused: %s", version, exc)
                    continue
                self.loaded[version] = self._open(bundle)
            warm = await self._warm_answers(desired)
            self._swap(desired)
            self.cache.clear()
            for key, answer in warm:
                self.cache[key] = answer
            self._retire(desired)
            self._applied = ident
            self.generation = desired.generation
            self.last_error = "; ".join(errors) or None
            self.write_report()

    def _swap(self, desired: run_state.DesiredState) -> None:
        """Point the arms at the desired versions (one step: no request sees a mix)."""
        old = {
            "stable": self.arms.stable,
            "canary": self.arms.canary,
            "shadow": self.arms.shadow,
        }
        stable = self.loaded.get(desired.stable) or self.arms.stable
        canary = self.loaded.get(desired.canary) if desired.canary else None
        shadow = self.loaded.get(desired.shadow) if desired.shadow else None
        self.arms = _Arms(
            stable=stable,
            canary=canary,
            canary_weight=desired.canary_weight if canary else 0.0,
            shadow=shadow if shadow is not stable else None,
        )
        if shadow is None:
            self.shadow_stats = None
        elif self.shadow_stats is None or self.shadow_stats.version != shadow.version:
            self.shadow_stats = ShadowStats(shadow.version)
        for arm, served in old.items():
            if served is not None:
                self.metrics.model.labels(served.version, arm, served.bundle.artifact).set(0)
        for arm, served in (("stable", stable), ("canary", canary), ("shadow", shadow)):
            if served is not None:
                self.metrics.model.labels(served.version, arm, served.bundle.artifact).set(1)

    def _retire(self, desired: run_state.DesiredState) -> None:
        """Drain and drop the models the desired state no longer holds."""
        held = desired.served() | {
            s.version for s in (self.arms.stable, self.arms.canary, self.arms.shadow) if s
        }
        for version in sorted(set(self.loaded) - held):
            served = self.loaded.pop(version)
            task = asyncio.get_running_loop().create_task(served.batcher.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _warm_answers(
        self, desired: run_state.DesiredState
    ) -> list[tuple[tuple[Any, ...], Answer]]:
        """Answers for the cold start and the one-item histories of the most popular items."""
        if not self.cfg.cache.enabled:
            return []
        out: list[tuple[tuple[Any, ...], Answer]] = []
        for version in (desired.stable, desired.canary):
            served = self.loaded.get(version) if version else None
            if served is None:
                continue
            bundle = served.bundle
            popular = [int(i) for i in bundle.items.by_popularity[: self.cfg.cache.warm_items]]
            histories: list[tuple[int, ...]] = [(), *((i,) for i in popular)]
            k = min(bundle.recommender.top_k, bundle.items.n_items)
            try:
                items, scores = await asyncio.to_thread(
                    bundle.answer, bundle.recommender.pad([list(h) for h in histories]), k
                )
            except Exception as exc:
                log.warning("cache warm-up of %s failed: %s", version, exc)
                continue
            for row, history in enumerate(histories):
                out.append(((bundle.version, history, k), (items[row], scores[row])))
        return out

    def report(self) -> dict[str, Any]:
        """What this worker serves, for ``GET /admin/state``."""

        def arm(served: Served | None) -> dict[str, Any] | None:
            if served is None:
                return None
            return {"version": served.version, "artifact": served.bundle.artifact}

        canary = arm(self.arms.canary)
        if canary is not None:
            canary["weight"] = self.arms.canary_weight
        return {
            "pid": os.getpid(),
            "generation": self.generation,
            "ready": self.ready,
            "stable": arm(self.arms.stable),
            "canary": canary,
            "shadow": self.shadow_stats.report() if self.shadow_stats else None,
            "loaded": sorted(self.loaded),
            "error": self.last_error,
            "time": time.time(),
        }

    def write_report(self) -> None:
        """Write :meth:`report` to the run folder."""
        self._last_report = self.clock()
        run_state.write_report(self.run_dir, self.report())

    # ---------------------------------------------------------------- requests
    async def recommend(self, user_id: str, history: list[str], k: int, started: float) -> bytes:
        """The JSON answer for one validated request.

        Raises:
            NotReady: No model is loaded yet.
        """
        arms = self.arms
        served = arms.stable
        if served is None:
            raise NotReady("no model is loaded yet")
        arm = "stable"
        if arms.canary is not None and goes_to_canary(user_id, arms.canary_weight):
            served, arm = arms.canary, "canary"
        bundle = served.bundle
        known = bundle.items.encode(history)
        unknown = len(history) - len(known)
        max_len = bundle.recommender.max_len
        recent = tuple(known[-max_len:])
        top_k = bundle.recommender.top_k
        n_items = bundle.items.n_items
        width = top_k if k <= top_k else k
        width = min(width, n_items)
        k = min(k, n_items)
        key = (bundle.version, recent, width)
        cached = self.cache.get(key) if self.cfg.cache.enabled else None
        fallback, reason = False, ""
        row = _row(recent, max_len)
        if cached is not None:
            items, scores = cached[0][:k], cached[1][:k]
        else:
            asked = time.perf_counter()
            try:
                answer = await served.batcher.submit(row, width)
            except ModelFailure as failure:
                fallback, reason = True, failure.kind
                items = bundle.items.by_popularity[:k]
                scores = bundle.items.popularity_share[items]
            else:
                self.metrics.arm(bundle.version, arm).model_latency.observe(
                    time.perf_counter() - asked
                )
                if self.cfg.cache.enabled:
                    self.cache[key] = answer
                items, scores = answer[0][:k], answer[1][:k]
        answered = bundle.items.decode(items.tolist())
        if arms.shadow is not None and arm == "stable" and not fallback:
            self._shadow(arms.shadow, history, answered)
        body = _ENCODE(
            {
                "model_version": bundle.version,
                "arm": arm,
                "items": [
                    {"item_id": item_id, "score": s}
                    for item_id, s in zip(answered, scores.tolist(), strict=True)
                ],
                "fallback": fallback,
            }
        )
        latency = time.perf_counter() - started
        self._count(bundle.version, arm, cached is not None, fallback, reason, unknown, latency)
        if self.request_log is not None:
            self._log(user_id, bundle, arm, known, items, latency, fallback, cached, unknown)
        return body

    def _count(
        self,
        version: str,
        arm: str,
        hit: bool,
        fallback: bool,
        reason: str,
        unknown: int,
        latency: float,
    ) -> None:
        labelled = self.metrics.arm(version, arm)
        labelled.answered.inc()
        labelled.latency.observe(latency)
        if self.cfg.cache.enabled:
            (labelled.cache_hits if hit else labelled.cache_misses).inc()
        if fallback:
            self.metrics.fallbacks.labels(version, arm, reason).inc()
            self.metrics.errors.labels(version, arm, reason).inc()
        if unknown:
            labelled.unknown_items.inc(unknown)

    def _log(
        self,
        user_id: str,
        bundle: Bundle,
        arm: str,
        known: list[int],
        items: np.ndarray,
        latency: float,
        fallback: bool,
        cached: Answer | None,
        unknown: int,
    ) -> None:
        assert self.request_log is not None and self.pseudonymize is not None
        row = Row(
            time=time.time(),
            user=self.pseudonymize(user_id),
            version=bundle.version,
            arm=arm,
            history=np.asarray(known, dtype=np.int64),
            items=np.asarray(items, dtype=np.int64),
            table=bundle.items,
            latency_ms=latency * 1000,
            fallback=fallback,
            cache_hit=cached is not None,
            unknown_items=unknown,
        )
        if self.request_log.add(row):
            self._write_log_now()

    def _write_log_if_due(self, now: float) -> None:
        if self.request_log is not None and self.request_log.due(now):
            self._write_log_now()

    def _write_log_now(self) -> None:
        assert self.request_log is not None
        taken = self.request_log.take()
        if taken is None:
            return
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.request_log.write, *taken)
        )
        self._tasks.add(task)
        task.add_done_callback(self._log_written)

    def _log_written(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request log window not written: %s", task.exception())

    def _shadow(self, shadow: Served, history: Sequence[str], stable: list[str]) -> None:
        """Score a copy of a stable request on the shadow, off the request path.

        At most ``cfg.shadow_max_pending`` copies wait at once; more are skipped and counted.
        """
        stats = self.shadow_stats
        if stats is None:
            return
        if self._shadow_pending >= self.cfg.shadow_max_pending:
            stats.skipped += 1
            self.metrics.shadow.labels(shadow.version, "skipped").inc()
            return
        self._shadow_pending += 1
        task = asyncio.get_running_loop().create_task(
            self._score_shadow(shadow, stats, history, stable)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score_shadow(
        self, shadow: Served, stats: ShadowStats, history: Sequence[str], stable: list[str]
    ) -> None:
        """The shadow's answer to ``history`` (catalog ids, encoded with the shadow's own item
        table), decoded to catalog ids and compared with stable's answer ``stable``."""
        table = shadow.bundle.items
        max_len = shadow.bundle.recommender.max_len
        k = min(len(stable), table.n_items)
        try:
            row = _row(table.encode(history)[-max_len:], max_len)
            started = time.perf_counter()
            items, _ = await shadow.batcher.submit(row, k)
        except ModelFailure:
            stats.failed += 1
            self.metrics.shadow.labels(shadow.version, "failed").inc()
            return
        finally:
            self._shadow_pending -= 1
        latency = time.perf_counter() - started
        answered = set(table.decode(items[:k].tolist()))
        overlap = len(answered & set(stable)) / max(len(stable), 1)
        stats.scored += 1
        stats.overlap_sum += overlap
        stats.latency_sum_s += latency
        m = self.metrics
        m.shadow.labels(shadow.version, "scored").inc()
        m.shadow_overlap.labels(shadow.version).observe(overlap)
        m.shadow_latency.labels(shadow.version).observe(latency)


def _row(recent: Sequence[int], max_len: int) -> np.ndarray:
    """One left-padded history row of item indices (the newest ``max_len`` kept by the caller)."""
    row = np.zeros(max_len, dtype=np.int64)
    if recent:
        row[max_len - len(recent) :] = recent
    return row
