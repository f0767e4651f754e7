"""Observing a step: replay traffic at the fleet over a window, read the metrics it moved,
judge them.

The window starts with a snapshot of the fleet's counters, replays held-out sessions (a fixed
number for a bake or a shadow, or until the canary arm has answered enough), takes a second
snapshot once every answer (and every shadow copy) is counted, and hands the difference and the
replay's tally to the step's judge. An inconclusive window is held: more traffic is replayed and
the judge sees the whole window so far, at most ``deploy.max_holds`` times
(``deploy.on_inconclusive: hold``), after which the step fails; with ``fail`` it fails at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from pipelines.core.params import DeployConfig
from pipelines.core.waiting import wait_until
from pipelines.rollout.analysis import Check, Verdict
from pipelines.rollout.metrics import Snapshot
from pipelines.rollout.replay import ReplayReport, ReplaySettings, replay
from pipelines.rollout.sessions import HeldOut
from pipelines.rollout.sources import MetricSource

log = logging.getLogger("recflow.rollout")

Judge = Callable[[Snapshot, ReplayReport], Verdict]
# (this round's report so far) -> stop replaying
StopWhen = Callable[[ReplayReport], bool]
# the copies the servers must have counted before the window closes: (window, report) -> done
Settled = Callable[[Snapshot, ReplayReport], bool]

SETTLE_S = 10.0


@dataclass
class Traffic:
    """Where and how a window's traffic is replayed.

    Attributes:
        endpoints: The fleet's servers.
        token: A client token.
        held_out: The sessions.
        cursor: The next session: every round goes on where the last one stopped.
        loopback_only: False for a cluster's pods (their addresses come from its API).
    """

    endpoints: list[str]
    token: str
    held_out: HeldOut
    cursor: int = 0
    loopback_only: bool = True


def settings_for(cfg: DeployConfig, max_requests: int, pair: bool = False) -> ReplaySettings:
    """The replay settings of one round of a window (``pair``: ask stable for each session a
    canary answers)."""
    replay_cfg = cfg.replay
    return ReplaySettings(
        rate=replay_cfg.rate,
        concurrency=replay_cfg.concurrency,
        max_requests=max_requests,
        max_s=replay_cfg.max_s,
        k=replay_cfg.k,
        timeout_s=replay_cfg.timeout_s,
        pair=pair,
    )


def observe(
    step: str,
    cfg: DeployConfig,
    traffic: Traffic,
    source: MetricSource,
    judge: Judge,
    *,
    max_requests: int,
    pair: bool = False,
    stop_when: StopWhen | None = None,
    settled: Settled | None = None,
    interrupted: Callable[[], bool] = lambda: False,
    on_verdict: Callable[[Verdict], None] = lambda verdict: None,
) -> Verdict:
    """Replay, measure and judge one step, holding it while it is inconclusive.

    Args:
        step: The step's name (``shadow``, ``canary 25%``).
        cfg: The ``deploy`` section.
        traffic: Endpoints, client token and sessions.
        source: The fleet's metrics.
        judge: The step's judge.
        max_requests: Requests of one round at most.
        pair: Ask stable for each session a canary answers (the paired hit rate).
        stop_when: Stops a round early (the canary arm answered enough).
        settled: Whether the servers counted everything of the window (shadow copies are
            scored after the answer); waited for up to ``SETTLE_S``.
        interrupted: Checked before every request: True stops the round (a rollback asked for).
        on_verdict: Called with each round's verdict (to record held rounds too).

    Returns:
        The final verdict; after ``max_holds`` inconclusive rounds, or one with
        ``on_inconclusive: fail``, a failed one that says so.
    """
    start = source.snapshot(time.time())
    report = ReplayReport()
    holds = 0
    while True:

        def until(round_report: ReplayReport) -> bool:
            return interrupted() or (stop_when is not None and stop_when(round_report))

        settings = settings_for(cfg, max_requests, pair)
        round_report = replay(
            traffic.endpoints,
            traffic.held_out,
            traffic.token,
            settings,
            until=until,
            offset=traffic.cursor,
            loopback_only=traffic.loopback_only,
        )
        traffic.cursor += round_report.sent
        report = report.merge(round_report)
        window = _settled_window(source, start, report, settled)
        verdict = judge(window, report)
        if holds:
            verdict = replace(verdict, window={**verdict.window, "holds": holds})
        if verdict.outcome != "inconclusive" or interrupted():
            on_verdict(verdict)
            return verdict
        if cfg.on_inconclusive == "fail" or holds >= cfg.max_holds:
            why = (
                "on_inconclusive is fail"
                if cfg.on_inconclusive == "fail"
                else f"still inconclusive after {holds} hold(s)"
            )
            check = Check(
                "inconclusive", "fail", None, None, None, f"{why}: " + "; ".join(verdict.reasons())
            )
            failed = Verdict(step, "fail", (*verdict.checks, check), verdict.window)
            on_verdict(failed)
            return failed
        on_verdict(verdict)
        holds += 1
        log.info(
            "%s: inconclusive (%s); holding for another window", step, "; ".join(verdict.reasons())
        )


def _settled_window(
    source: MetricSource, start: Snapshot, report: ReplayReport, settled: Settled | None
) -> Snapshot:
    last = [source.snapshot(time.time()).minus(start)]
    if settled is None or settled(last[0], report):
        return last[0]

    def counted() -> bool:
        last[0] = source.snapshot(time.time()).minus(start)
        return settled(last[0], report)

    wait_until(counted, timeout_s=SETTLE_S, interval_s=0.2)
    return last[0]
