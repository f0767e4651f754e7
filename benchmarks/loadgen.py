"""An open-loop HTTP load generator: requests go out on a fixed schedule whatever the answers do.

A closed loop (wrk, even with a pause per request) sends a connection's next request only after
its answer, so a slow answer delays the requests that should have gone out meanwhile and their
latency is never measured (coordinated omission). Here request ``i`` is due at
``start + i / rate``. At that time it goes out on an idle keep-alive connection, or waits for
a new one while fewer than ``connections`` are open, or else for the first connection that
frees up; its latency runs from its due time to the end of its answer, so every wait (the
server's, the pool's, this process's own timer) counts. The achieved rate is the 2xx answers
over the time from the first due time to the last answer; a point is *sustained* when that is
at least ``SUSTAINED`` of the target.

``python -m benchmarks.loadgen --port P --rate R --seconds S --bodies FILE --token T`` POSTs the
bodies (one JSON object a line, replayed in order) to ``/recommend`` on 127.0.0.1 over
HTTP/1.1 and prints one JSON line of results, with this process's CPU time over the run as a
share of all cores. ``benchmarks/bench_serving.py`` runs it in its own process per point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from pipelines.core.stats import percentile

SUSTAINED = 0.98  # the share of the target rate a point must achieve to be quoted
C = TypeVar("C")


class Schedule:
    """Request ``i`` of ``count`` is due at ``start + i / rate``; ``due`` hands each out once."""

    def __init__(self, rate: float, count: int, start: float) -> None:
        if rate <= 0 or count < 1:
            raise ValueError(f"need a positive rate and count, got {rate} and {count}")
        self.rate, self.count, self.start = rate, count, start
        self.issued = 0

    def at(self, index: int) -> float:
        return self.start + index / self.rate

    @property
    def next_at(self) -> float | None:
        """When the next request falls due; None once all are issued."""
        return self.at(self.issued) if self.issued < self.count else None

    def due(self, now: float) -> range:
        """The requests due by ``now`` that were not handed out before, oldest first."""
        first = self.issued
        while self.issued < self.count and self.at(self.issued) <= now:
            self.issued += 1
        return range(first, self.issued)


class Pool(Generic[C]):
    """Which connection sends which request: an idle one, else the first to be ready.

    A request that finds no idle connection waits (oldest first), and ``connect()`` starts one
    more connection while fewer are opening than requests wait and fewer than ``cap`` are open.
    A connection reports ``opened`` once, then ``ready`` each time its answer is in; either way
    it gets the oldest waiting request, or goes idle.
    """

    def __init__(self, cap: int, connect: Callable[[], None]) -> None:
        self.cap, self.connect = cap, connect
        self.idle: list[C] = []
        self.waiting: deque[int] = deque()
        self.open = 0  # open or opening
        self.opening = 0
        self.most_open = 0

    def submit(self, index: int) -> C | None:
        """The idle connection to send request ``index`` on now, or None: it waits."""
        if self.idle:  # never idle connections and waiting requests at once
            return self.idle.pop()  # the most recently used: the fewest connections stay warm
        self.waiting.append(index)
        self._grow()
        return None

    def opened(self, conn: C) -> int | None:
        """A new connection can send: its request, or None."""
        self.opening -= 1
        return self.ready(conn)

    def ready(self, conn: C) -> int | None:
        """The request for a connection that can send, or None: it goes idle."""
        if self.waiting:
            return self.waiting.popleft()
        self.idle.append(conn)
        return None

    def lost(self, conn: C) -> None:
        """An open connection closed; a waiting request may need a new one."""
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        self._grow()

    def connect_failed(self) -> int | None:
        """A connection could not open: the oldest waiting request fails with it (so a refusing
        server ends the run instead of being retried forever); returns that request."""
        self.open -= 1
        self.opening -= 1
        index = self.waiting.popleft() if self.waiting else None
        self._grow()
        return index

    def _grow(self) -> None:
        while self.opening < len(self.waiting) and self.open < self.cap:
            self.open += 1
            self.opening += 1
            self.most_open = max(self.most_open, self.open)
            self.connect()


class OpenLoop(Generic[C]):
    """The generator's bookkeeping, free of I/O and of any clock: callers pass ``now``."""

    def __init__(
        self, rate: float, count: int, start: float, cap: int, connect: Callable[[], None]
    ) -> None:
        self.schedule = Schedule(rate, count, start)
        self.pool: Pool[C] = Pool(cap, connect)
        self.latency_s = [math.nan] * count
        self.status = [0] * count  # 0: no answer yet
        self.lag_s: list[float] = []  # how late each request was handed to the pool
        self.errors = {"connect": 0, "read": 0}
        self.settled = 0  # answered or failed
        self.last_answer = start

    def tick(self, now: float) -> list[tuple[C, int]]:
        """The requests due by ``now``: (connection, request) pairs to send at once."""
        sends = []
        for index in self.schedule.due(now):
            self.lag_s.append(now - self.schedule.at(index))
            conn = self.pool.submit(index)
            if conn is not None:
                sends.append((conn, index))
        return sends

    def answered(self, index: int, status: int, now: float) -> None:
        self.latency_s[index] = now - self.schedule.at(index)
        self.status[index] = status
        self.settled += 1
        if 200 <= status < 300:
            self.last_answer = max(self.last_answer, now)

    def failed(self, index: int, kind: str) -> None:
        """Request ``index`` got no answer: its connection failed to open (``connect``) or
        closed before the answer was in (``read``)."""
        self.errors[kind] += 1
        self.settled += 1

    @property
    def done(self) -> bool:
        return self.settled == self.schedule.count

    def result(self, timeout: float) -> dict[str, Any]:
        """The point's figures; an answer later than ``timeout`` after its due time, or none
        by the end, counts as a timeout and not in the percentiles."""
        schedule = self.schedule
        in_time = [  # NaN (no answer) compares False
            (latency * 1000, status)
            for latency, status in zip(self.latency_s, self.status, strict=True)
            if latency <= timeout
        ]
        answered = [latency for latency, _ in in_time]
        ok = sum(1 for _, status in in_time if 200 <= status < 300)
        span = self.last_answer - schedule.start
        achieved = ok / span if span > 0 else 0.0
        lag = [x * 1000 for x in self.lag_s] or [0.0]
        return {
            "target_rps": schedule.rate,
            "achieved_rps": round(achieved, 1),
            "sustained": achieved >= SUSTAINED * schedule.rate,
            "requests": schedule.count,
            "answered_2xx": ok,
            **{
                f"{name}_ms": _percentile(answered, q)
                for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9))
            },
            "max_ms": round(max(answered), 3) if answered else None,
            "socket_errors": sum(self.errors.values()),
            "timeouts": schedule.count - len(in_time) - sum(self.errors.values()),
            "non_2xx": len(in_time) - ok,
            "connections": self.pool.most_open,
            "send_lag_p99_ms": _percentile(lag, 99),
            "send_lag_max_ms": round(max(lag), 3),
        }


def _percentile(values_ms: list[float], q: float) -> float | None:
    """The project's one percentile (nearest rank), in ms to the microsecond; None if empty."""
    return round(percentile(values_ms, q), 3) if values_ms else None


def parse_response(buffer: bytes | bytearray) -> tuple[int, int, bool] | None:
    """(status, length in bytes, keep-alive) of the HTTP/1.1 answer at the start of
    ``buffer``, or None while it is incomplete; a body needs a length or chunked encoding."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    status = int(head[9:12])
    keep_alive = b"\r\nconnection: close" not in head
    body = end + 4
    found = head.find(b"\r\ncontent-length:")
    if found >= 0:
        line_end = head.find(b"\r\n", found + 2)
        total = body + int(head[found + 17 : line_end if line_end >= 0 else end])
        return (status, total, keep_alive) if len(buffer) >= total else None
    if b"\r\ntransfer-encoding: chunked" not in head:
        raise ValueError(f"an answer without a length: {head[:200]!r}")
    position = body
    while True:
        size_end = buffer.find(b"\r\n", position)
        if size_end < 0:
            return None
        size = int(bytes(buffer[position:size_end]).split(b";")[0], 16)
        if size == 0:  # the last chunk, then trailers up to an empty line
            trailers = buffer.find(b"\r\n", size_end + 2)
            while trailers >= 0 and trailers != size_end + 2:
                size_end, trailers = trailers, buffer.find(b"\r\n", trailers + 2)
            return None if trailers < 0 else (status, trailers + 2, keep_alive)
        position = size_end + 2 + size + 2
        if len(buffer) < position:
            return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection: sends a request, reads its answer, reports to the run."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.index: int | None = None  # the request in flight

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.run.opened(self)

    def send(self, index: int) -> None:
        assert self.transport is not None
        self.index = index
        self.transport.write(self.run.request(index))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            parsed = parse_response(self.buffer)
        except ValueError:
            parsed = None
            assert self.transport is not None
            self.transport.close()  # connection_lost fails the request in flight
        if parsed is None:
            return
        status, length, keep_alive = parsed
        del self.buffer[:length]
        index, self.index = self.index, None
        if index is not None:
            self.run.answered(index, status)
        if keep_alive:
            self.run.ready(self)
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.lost(self, self.index)
        self.index = None


class _Run:
    """One point against a live server: ``OpenLoop`` driven by the event loop and a clock."""

    def __init__(
        self,
        port: int,
        requests: list[bytes],
        rate: float,
        count: int,
        connections: int,
        clock: Callable[[], float],
    ) -> None:
        self.port, self.requests, self.clock = port, requests, clock
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self.connections: set[_Connection] = set()
        self.closing = False
        self.connecting: set[asyncio.Task[None]] = set()
        start = clock() + 0.05  # the first request is due once the loop runs
        self.core: OpenLoop[_Connection] = OpenLoop(rate, count, start, connections, self._connect)

    def request(self, index: int) -> bytes:
        return self.requests[index % len(self.requests)]

    def _connect(self) -> None:
        async def connect() -> None:
            try:
                await self.loop.create_connection(lambda: _Connection(self), "127.0.0.1", self.port)
            except OSError:
                index = self.core.pool.connect_failed()
                if index is not None:
                    self._failed(index, "connect")

        task = self.loop.create_task(connect())
        self.connecting.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self.connecting.discard)

    def opened(self, conn: _Connection) -> None:
        self.connections.add(conn)
        index = self.core.pool.opened(conn)
        if index is not None:
            conn.send(index)

    def ready(self, conn: _Connection) -> None:
        index = self.core.pool.ready(conn)
        if index is not None:
            conn.send(index)

    def answered(self, index: int, status: int) -> None:
        self.core.answered(index, status, self.clock())
        if self.core.done:
            self.finished.set()

    def lost(self, conn: _Connection, index: int | None) -> None:
        if self.closing:  # the run is over: what is still in flight has timed out
            return
        if index is not None:
            self._failed(index, "read")
        self.connections.discard(conn)
        self.core.pool.lost(conn)

    def _failed(self, index: int, kind: str) -> None:
        self.core.failed(index, kind)
        if self.core.done:
            self.finished.set()

    async def drive(self, timeout: float) -> None:
        """Send every request at its due time, then wait for the answers up to ``timeout``."""
        schedule = self.core.schedule
        while (at := schedule.next_at) is not None:
            wait = at - self.clock()
            if wait > 0:
                # event-loop timers tick in milliseconds: never ask for less, or it spins
                await asyncio.sleep(max(wait, 0.001))
            for conn, index in self.core.tick(self.clock()):
                conn.send(index)
        last = schedule.at(schedule.count - 1)
        if not self.core.done:
            remaining = max(0.0, last + timeout - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), remaining)
        self.closing = True
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


def http_requests(bodies: list[str], port: int, token: str) -> list[bytes]:
    """Each body as a whole ``POST /recommend`` request, ready to write."""
    out = []
    for body in bodies:
        data = body.encode()
        head = (
            f"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        out.append(head.encode() + data)
    return out


def run(
    port: int,
    requests: list[bytes],
    rate: float,
    seconds: float,
    connections: int = 128,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """One open-loop point of ``rate * seconds`` requests against 127.0.0.1:``port``."""
    count = max(1, round(rate * seconds))
    holder: list[_Run] = []

    async def main() -> None:
        holder.append(_Run(port, requests, rate, count, connections, time.perf_counter))
        await holder[0].drive(timeout)

    cpu, wall = time.process_time(), time.perf_counter()
    try:
        import uvloop  # the faster event loop, where installed (uvicorn[standard] brings it)

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "mode": "rate",
        "loop": "open",
        **holder[0].core.result(timeout),
        "loadgen_cpu_share": round(cpu / (wall * (os.cpu_count() or 1)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True, help="length of the schedule")
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body a line")
    parser.add_argument("--token", default="", help="bearer token of every request")
    parser.add_argument("--connections", type=int, default=128, help="most connections open")
    parser.add_argument("--timeout", type=float, default=10.0, help="longest wait for an answer")
    args = parser.parse_args(argv)
    bodies = args.bodies.read_text().splitlines()
    requests = http_requests([b for b in bodies if b.strip()], args.port, args.token)
    result = run(args.port, requests, args.rate, args.seconds, args.connections, args.timeout)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
