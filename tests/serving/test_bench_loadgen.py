"""The serving benchmark's open-loop load generator: its schedule and pool driven by a simulated
clock and server, its HTTP parsing, and short runs against tiny loopback servers."""

from __future__ import annotations

import heapq
import http.server
import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from benchmarks import loadgen


def test_the_schedule_hands_out_each_request_once_at_its_due_time() -> None:
    schedule = loadgen.Schedule(rate=100, count=5, start=10.0)
    assert list(schedule.due(9.999)) == []
    assert list(schedule.due(10.0)) == [0]
    assert schedule.next_at == pytest.approx(10.01)
    assert list(schedule.due(10.025)) == [1, 2]
    assert list(schedule.due(10.025)) == []
    assert list(schedule.due(99.0)) == [3, 4]
    assert schedule.next_at is None


def test_the_pool_reuses_idle_connections_grows_to_its_cap_and_queues_beyond() -> None:
    opened: list[str] = []
    pool: loadgen.Pool[str] = loadgen.Pool(cap=2, connect=lambda: opened.append("new"))
    assert pool.submit(0) is None and len(opened) == 1  # no connection yet: one opens
    assert pool.submit(1) is None and len(opened) == 2
    assert pool.submit(2) is None and len(opened) == 2  # at the cap: request 2 waits
    assert pool.opened("a") == 0 and pool.opened("b") == 1  # oldest first
    assert pool.ready("a") == 2  # a's answer is in: it takes the waiting request
    assert pool.ready("b") is None  # nothing waits: b goes idle
    assert pool.submit(3) == "b"
    pool.lost("a")  # a closes while nothing waits: no new connection
    assert len(opened) == 2 and pool.open == 1
    assert pool.submit(4) is None and len(opened) == 3
    assert pool.connect_failed() == 4  # the request waiting for it fails with it
    assert pool.most_open == 2


def simulate(rate: float, count: int, cap: int, service_s: float, parallel: bool) -> dict[str, Any]:
    """An open-loop point against a simulated server, on a simulated clock: each request takes
    ``service_s``; a ``parallel`` server serves any number at once, else one at a time (FIFO).
    Connections open at once."""
    now = 0.0
    events: list[tuple[float, int, Callable[[], None]]] = []
    order = itertools.count()
    server_free = 0.0

    def at(when: float, action: Callable[[], None]) -> None:
        heapq.heappush(events, (when, next(order), action))

    def send(conn: object, index: int) -> None:
        nonlocal server_free
        begin = now if parallel else max(now, server_free)
        server_free = begin + service_s
        at(begin + service_s, lambda: answer(conn, index))

    def answer(conn: object, index: int) -> None:
        run.answered(index, 200, now)
        following = run.pool.ready(conn)
        if following is not None:
            send(conn, following)

    def connect() -> None:
        conn = object()

        def made() -> None:
            following = run.pool.opened(conn)
            if following is not None:
                send(conn, following)

        at(now, made)

    run: loadgen.OpenLoop[object] = loadgen.OpenLoop(rate, count, 1.0, cap, connect)
    while events or run.schedule.next_at is not None:
        due = run.schedule.next_at
        if events and (due is None or events[0][0] <= due):
            now, _, action = heapq.heappop(events)
            action()
        else:
            assert due is not None
            now = due
            for conn, index in run.tick(now):
                send(conn, index)
    assert run.done
    return run.result(timeout=10.0)


def test_a_server_that_keeps_up_sustains_the_rate_and_latency_is_its_service_time() -> None:
    result = simulate(rate=100, count=200, cap=8, service_s=0.005, parallel=False)
    assert result["sustained"] and result["socket_errors"] == result["timeouts"] == 0
    assert result["achieved_rps"] == pytest.approx(100, rel=0.01)
    assert result["p50_ms"] == result["p99_ms"] == result["max_ms"] == pytest.approx(5.0)
    assert result["connections"] == 1  # each answer is in before the next request is due


def test_a_slow_server_is_not_sustained_and_the_queueing_counts_in_latency() -> None:
    # the server answers 50/s for 100/s offered; a closed loop would report 20 ms every time
    result = simulate(rate=100, count=200, cap=64, service_s=0.020, parallel=False)
    assert not result["sustained"]
    assert result["achieved_rps"] == pytest.approx(50, rel=0.02)
    # request i is due at 10 ms * i and answered at 20 ms * (i + 1): its wait grows by 10 ms
    assert result["p50_ms"] == pytest.approx(20 + 10 * 99)
    assert result["max_ms"] == pytest.approx(20 + 10 * 199)
    assert result["answered_2xx"] == 200  # every request was sent, none omitted


def test_waiting_for_a_free_connection_counts_in_latency() -> None:
    # 15 ms answers at 100/s need two connections at once: one is not enough
    one = simulate(rate=100, count=100, cap=1, service_s=0.015, parallel=True)
    two = simulate(rate=100, count=100, cap=2, service_s=0.015, parallel=True)
    assert two["sustained"] and two["p99_ms"] == pytest.approx(15.0)
    assert not one["sustained"] and one["max_ms"] > 400


def test_unanswered_and_late_requests_are_timeouts() -> None:
    run: loadgen.OpenLoop[str] = loadgen.OpenLoop(10, 4, 0.0, 4, lambda: None)
    run.tick(1.0)
    run.answered(0, 200, 0.002)
    run.answered(1, 503, 0.2)
    run.answered(2, 200, 0.2 + 11.0)  # after the 10 s timeout
    result = run.result(timeout=10.0)
    assert result["answered_2xx"] == 1 and result["non_2xx"] == 1 and result["timeouts"] == 2
    assert result["p50_ms"] == pytest.approx(2.0) and result["p99_ms"] == pytest.approx(100.0)
    assert not result["sustained"]


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", (200, True)),
        (b"HTTP/1.1 429 No\r\nConnection: close\r\nContent-Length:0\r\n\r\n", (429, False)),
        (CHUNKED + b"2;x=1\r\n{}\r\n0\r\n\r\n", (200, True)),
        (CHUNKED + b"2\r\n{}\r\n0\r\nT: 1\r\n\r\n", (200, True)),
    ],
)
def test_answers_are_framed_by_length_or_chunks(raw: bytes, expected: tuple[int, bool]) -> None:
    status, keep_alive = expected
    assert loadgen.parse_response(raw) == (status, len(raw), keep_alive)
    assert loadgen.parse_response(raw + b"HTTP/1.1 200") == (status, len(raw), keep_alive)
    for cut in range(len(raw)):  # incomplete: wait for more
        assert loadgen.parse_response(raw[:cut]) is None


def test_an_answer_without_a_length_is_an_error() -> None:
    with pytest.raises(ValueError, match="without a length"):
        loadgen.parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n{}")


@contextmanager
def tiny_server(
    barrier: threading.Barrier | None = None, chunked: bool = False
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A threaded HTTP/1.1 server on loopback that answers every POST with ``{"ok": true}``
    (after ``barrier``, when given) and keeps the request bodies."""
    seen: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"auth": self.headers["Authorization"], **json.loads(body)})
            if barrier is not None:
                barrier.wait(timeout=10)
            self.send_response(200)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b'c\r\n{"ok": true}\r\n0\r\n\r\n')
            else:
                self.send_header("Content-Length", "12")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_run_against_a_loopback_server_answers_every_request(chunked: bool) -> None:
    bodies = [json.dumps({"n": n}) for n in range(3)]
    with tiny_server(chunked=chunked) as (port, seen):
        requests = loadgen.http_requests(bodies, port, "secret")
        result = loadgen.run(port, requests, rate=200, seconds=0.1)
    assert result["requests"] == result["answered_2xx"] == len(seen) == 20
    assert result["socket_errors"] == result["timeouts"] == result["non_2xx"] == 0
    assert sorted(r["n"] for r in seen) == [0] * 7 + [1] * 7 + [2] * 6  # replayed in turn
    assert {r["auth"] for r in seen} == {"Bearer secret"}
    assert 0 < result["loadgen_cpu_share"] <= 1 and result["loop"] == "open"


def test_requests_go_out_on_schedule_while_earlier_answers_are_held() -> None:
    # the server answers none of 8 requests until all 8 have arrived: a closed loop with fewer
    # connections than requests would never get there; the open loop opens the connections
    barrier = threading.Barrier(8)
    with tiny_server(barrier) as (port, seen):
        requests = loadgen.http_requests(["{}"], port, "t")
        result = loadgen.run(port, requests, rate=400, seconds=0.02, connections=8)
    assert not barrier.broken
    assert result["answered_2xx"] == len(seen) == 8 and result["connections"] == 8


def test_a_refused_connection_fails_its_request_and_the_run_ends() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = loadgen.run(port, loadgen.http_requests(["{}"], port, "t"), rate=100, seconds=0.05)
    assert result["requests"] == result["socket_errors"] == 5
    assert result["answered_2xx"] == 0 and result["p50_ms"] is None and not result["sustained"]
