"""Traffic replay: held-out sessions sent as users to a fleet, at a rate and a concurrency,
bounded in requests and in time, to loopback endpoints only.

Requests are paced open-loop (request ``i`` is due ``i / rate`` seconds after the start, as a
user population would send them, not as fast as the answers come back), at most
``concurrency`` in flight, spread round-robin over the endpoints as a load balancer would. Each
answer is checked (items present, scores finite, at most ``k``) and tallied by the model version
and arm that answered it: requests, hits of the session's true next item, fallbacks, malformed
answers, and whether the popularity shelf would have hit too.

With ``pair``, each session a canary answers is also asked of stable: the same history under
another user id (``<user>~probe<n>``, tried until the fleet's sticky routing sends it to stable,
at most ``max_probe_tries`` times). The two answers to the same session make a pair, so the
canary's hit rate is compared with stable's on the same sessions, free of the difference between
the users each arm happens to get. A rollout reads its canary's online metric from these pairs;
the load tests and, later, drift monitoring use the same replay.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from pipelines.core.errors import InputError
from pipelines.core.stats import percentile
from pipelines.rollout.sessions import HeldOut, Session

_DECODE = msgspec.json.Decoder().decode


def check_loopback(url: str, loopback_only: bool = True) -> str:
    """``url`` without a trailing slash if it is ``http://`` on a loopback address.

    Args:
        url: The endpoint.
        loopback_only: False for the pod addresses of a cluster's fleet, which come from the
            Kubernetes API rather than from a person (any host is accepted then).

    Raises:
        InputError: It is not http, or its host is not a loopback address (the replay never
            sends load anywhere else).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not host:
        raise InputError(f"endpoint {url[:200]!r} is not an http://host:port URL")
    if not loopback_only:
        return url.rstrip("/")
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise InputError(
            f"endpoint {url[:200]!r} is not on a loopback address: the replay sends load only to "
            "127.0.0.1, ::1 or localhost"
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class ReplaySettings:
    """How a replay sends its requests.

    Attributes:
        rate: Requests per second (paced open-loop).
        concurrency: Requests in flight at most.
        max_requests: Requests sent at most.
        max_s: Seconds of sending at most (requests in flight then finish or time out).
        k: Items asked for.
        timeout_s: Per request.
        pair: Ask stable too for each session a canary answers (see the module's docstring).
        max_probe_tries: User ids tried for a session's stable probe.
    """

    rate: float
    concurrency: int
    max_requests: int
    max_s: float
    k: int = 10
    timeout_s: float = 5.0
    pair: bool = False
    max_probe_tries: int = 8

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise InputError(f"replay rate must be a positive number, not {self.rate}")
        for name in ("concurrency", "max_requests", "k"):
            if getattr(self, name) < 1:
                raise InputError(f"replay {name} must be at least 1, not {getattr(self, name)}")
        if not self.max_s > 0 or not self.timeout_s > 0:
            raise InputError("replay max_s and timeout_s must be positive")


@dataclass
class ArmTally:
    """What one model version answered in one arm.

    Attributes:
        answered: Valid answers.
        hits: Of those, answers holding the session's true next item.
        popularity_hits: Sessions the popularity shelf would have hit.
        both: Sessions both the answer and the popularity shelf hit (the pairing of the two).
        fallbacks: Answers from the server's popularity fallback.
        invalid: Malformed answers (no items, a score that is not a finite number).
    """

    answered: int = 0
    hits: int = 0
    popularity_hits: int = 0
    both: int = 0
    fallbacks: int = 0
    invalid: int = 0

    def add(self, other: ArmTally) -> None:
        for name in ("answered", "hits", "popularity_hits", "both", "fallbacks", "invalid"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, int]:
        return {
            "answered": self.answered,
            "hits": self.hits,
            "popularity_hits": self.popularity_hits,
            "both": self.both,
            "fallbacks": self.fallbacks,
            "invalid": self.invalid,
        }


@dataclass
class PairTally:
    """Sessions answered by a canary and, for the same history, by stable.

    Attributes:
        sessions: Pairs.
        hits: Sessions the canary hit.
        stable_hits: Sessions stable hit.
        both: Sessions both hit.
    """

    sessions: int = 0
    hits: int = 0
    stable_hits: int = 0
    both: int = 0

    def add(self, other: PairTally) -> None:
        for name in ("sessions", "hits", "stable_hits", "both"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, int]:
        return {
            "sessions": self.sessions,
            "hits": self.hits,
            "stable_hits": self.stable_hits,
            "both": self.both,
        }


@dataclass
class ReplayReport:
    """What a replay sent and got back.

    Attributes:
        sent: Requests sent.
        errors: Requests without a valid answer, by kind (``http 503``, ``ReadTimeout``,
            ``invalid answer``).
        arms: Tallies by ``(version, arm)`` of the answers (valid or not) to the replayed
            sessions (stable probes are not among them).
        pairs: By ``(version, arm)`` of a canary: its sessions paired with stable's answers.
        probes: Requests sent to ask stable for a canary's session (in ``sent`` too).
        latencies_ms: Client-side latency of each request that got an HTTP answer.
        seconds: Wall time of the replay.
        stopped: Why it stopped: ``requests``, ``time`` or ``condition``.
    """

    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    arms: dict[tuple[str, str], ArmTally] = field(default_factory=dict)
    pairs: dict[tuple[str, str], PairTally] = field(default_factory=dict)
    probes: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""

    def tally(self, version: str, arm: str) -> ArmTally:
        """The tally of ``version`` in ``arm`` (empty if it answered nothing)."""
        return self.arms.get((version, arm), ArmTally())

    def paired(self, version: str, arm: str) -> PairTally:
        """The sessions ``version`` answered in ``arm`` that stable answered too."""
        return self.pairs.get((version, arm), PairTally())

    @property
    def answered(self) -> int:
        """Requests that got a valid answer."""
        return self.sent - sum(self.errors.values())

    @property
    def replayed(self) -> int:
        """Valid answers to the replayed sessions (stable probes left out)."""
        return sum(t.answered for t in self.arms.values())

    @property
    def hits(self) -> int:
        return sum(t.hits for t in self.arms.values())

    @property
    def popularity_hits(self) -> int:
        return sum(t.popularity_hits for t in self.arms.values())

    def latency_ms(self, q: float) -> float | None:
        """The ``q`` percentile (0..100, nearest rank) of the client-side latency (None without
        answers)."""
        if not self.latencies_ms:
            return None
        return percentile(self.latencies_ms, q)

    def merge(self, other: ReplayReport) -> ReplayReport:
        """This report and ``other`` as one (a step's window held for another round)."""
        merged = ReplayReport(
            sent=self.sent + other.sent,
            errors=self.errors + other.errors,
            probes=self.probes + other.probes,
            latencies_ms=self.latencies_ms + other.latencies_ms,
            seconds=self.seconds + other.seconds,
            stopped=other.stopped,
        )
        for source in (self, other):
            for key, tally in source.arms.items():
                merged.arms.setdefault(key, ArmTally()).add(tally)
            for key, pair in source.pairs.items():
                merged.pairs.setdefault(key, PairTally()).add(pair)
        return merged

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the arms keyed ``version/arm``)."""
        sent = max(self.sent, 1)
        return {
            "sent": self.sent,
            "answered": self.answered,
            "errors": dict(self.errors),
            "error_rate": sum(self.errors.values()) / sent,
            "hit_rate": self.hits / max(self.replayed, 1),
            "popularity_hit_rate": self.popularity_hits / max(self.replayed, 1),
            "latency_ms": {"p50": self.latency_ms(50), "p99": self.latency_ms(99)},
            "seconds": round(self.seconds, 3),
            "rate": self.sent / self.seconds if self.seconds else None,
            "stopped": self.stopped,
            "arms": {f"{v}/{a}": t.to_json() for (v, a), t in sorted(self.arms.items())},
            "pairs": {f"{v}/{a}": t.to_json() for (v, a), t in sorted(self.pairs.items())},
            "probes": self.probes,
        }


def _valid(body: Any, k: int) -> tuple[str, str, list[str], bool] | None:
    """``(version, arm, item ids, fallback)`` of a well-formed answer, else None."""
    if not isinstance(body, dict):
        return None
    items = body.get("items")
    version, arm = body.get("model_version"), body.get("arm")
    if not isinstance(version, str) or not isinstance(arm, str) or not isinstance(items, list):
        return None
    if not items or len(items) > k:
        return None
    ids = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("item_id"), str):
            return None
        score = item.get("score")
        if not isinstance(score, int | float) or not math.isfinite(score):
            return None  # a NaN score reaches JSON as null
        ids.append(item["item_id"])
    return version, arm, ids, bool(body.get("fallback"))


async def _replay(
    endpoints: Sequence[str],
    held_out: HeldOut,
    token: str,
    settings: ReplaySettings,
    until: Callable[[ReplayReport], bool] | None,
    offset: int,
    clock: Callable[[], float] | None,
    sleep: Callable[[float], Awaitable[object]],
) -> ReplayReport:
    report = ReplayReport()
    sessions = held_out.sessions
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    slots = asyncio.Semaphore(settings.concurrency)
    pending: set[asyncio.Task[None]] = set()

    async def ask(
        client: httpx.AsyncClient, url: str, user: str, history: tuple[str, ...]
    ) -> tuple[str, str, list[str], bool] | None:
        """One request: the answer's (version, arm, item ids, fallback), or None (counted)."""
        body = {"user_id": user, "history": list(history), "k": settings.k}
        started = time.perf_counter()
        report.sent += 1
        try:
            answer = await client.post(url, content=msgspec.json.encode(body), headers=headers)
        except httpx.HTTPError as exc:
            report.errors[type(exc).__name__] += 1
            return None
        report.latencies_ms.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            report.errors[f"http {answer.status_code}"] += 1
            return None
        try:
            raw = _DECODE(answer.content)
        except msgspec.DecodeError:
            raw = None
        parsed = _valid(raw, settings.k)
        if parsed is None:
            report.errors["invalid answer"] += 1
            where = raw if isinstance(raw, dict) else {}
            key = (str(where.get("model_version", "unknown")), str(where.get("arm", "unknown")))
            report.arms.setdefault(key, ArmTally()).invalid += 1
        return parsed

    async def one(client: httpx.AsyncClient, index: int) -> None:
        session = sessions[(offset + index) % len(sessions)]
        url = f"{endpoints[index % len(endpoints)]}/recommend"
        try:
            parsed = await ask(client, url, session.user_id, session.history)
            if parsed is None:
                return
            version, arm, ids, fallback = parsed
            hit = session.next_item in ids
            popular = held_out.popularity_hit(session, settings.k)
            tally = report.arms.setdefault((version, arm), ArmTally())
            tally.answered += 1
            tally.hits += hit
            tally.popularity_hits += popular
            tally.both += hit and popular
            tally.fallbacks += fallback
            if settings.pair and arm != "stable":
                await probe(client, url, session, (version, arm), hit)
        finally:
            slots.release()

    async def probe(
        client: httpx.AsyncClient, url: str, session: Session, key: tuple[str, str], hit: bool
    ) -> None:
        for attempt in range(1, settings.max_probe_tries + 1):
            report.probes += 1
            parsed = await ask(client, url, f"{session.user_id}~probe{attempt}", session.history)
            if parsed is None:
                return
            if parsed[1] == "stable":
                stable_hit = session.next_item in parsed[2]
                pair = report.pairs.setdefault(key, PairTally())
                pair.sessions += 1
                pair.hits += hit
                pair.stable_hits += stable_hit
                pair.both += hit and stable_hit
                return

    started = now()
    async with httpx.AsyncClient(limits=limits, timeout=settings.timeout_s) as client:
        report.stopped = "requests"
        for index in range(settings.max_requests):
            due = started + index / settings.rate
            if due - started >= settings.max_s:
                report.stopped = "time"
                break
            delay = due - now()
            if delay > 0:
                await sleep(delay)
            await slots.acquire()
            # asked once a slot is free: every answer but the ones still in flight is counted
            if until is not None and until(report):
                slots.release()
                report.stopped = "condition"
                break
            if now() - started >= settings.max_s:
                slots.release()
                report.stopped = "time"
                break
            task = loop.create_task(one(client, index))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    report.seconds = now() - started
    return report


def replay(
    endpoints: Sequence[str],
    held_out: HeldOut,
    token: str,
    settings: ReplaySettings,
    *,
    until: Callable[[ReplayReport], bool] | None = None,
    offset: int = 0,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    loopback_only: bool = True,
) -> ReplayReport:
    """Replay ``held_out``'s sessions against ``endpoints`` (round-robin).

    Args:
        endpoints: Base URLs of the servers (``http://127.0.0.1:PORT``), loopback only.
        held_out: The sessions, in replay order (repeated from the start if there are fewer
            than ``settings.max_requests``).
        token: A client token.
        settings: Rate, concurrency and bounds.
        until: Checked before each request, once a slot is free: True stops the replay early
            (a canary arm that has enough answers, a rollback asked for).
        offset: The session the replay starts with (the next window goes on where the last
            stopped, so that a held window sees new users).
        clock: Seconds on a monotonic clock for the pacing and the time bound (default: the
            event loop's); a test passes a fake one.
        sleep: Waits until a request is due (default :func:`asyncio.sleep`); a fake one
            advances the fake clock.
        loopback_only: False for a cluster's pods (see :func:`check_loopback`).

    Returns:
        The report.

    Raises:
        InputError: An endpoint is not on loopback, there is none, or there are no sessions.
    """
    urls = [check_loopback(url, loopback_only) for url in endpoints]
    if not urls:
        raise InputError("the replay needs at least one endpoint")
    if not held_out.sessions:
        raise InputError("there are no sessions to replay")
    return asyncio.run(_replay(urls, held_out, token, settings, until, offset, clock, sleep))
