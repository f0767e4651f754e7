"""Traffic replay against a small HTTP server on 127.0.0.1: loopback only, bounded in requests
and time, paced, at most ``concurrency`` in flight, and each answer tallied (hits, fallbacks,
malformed answers, errors) by the version and arm that gave it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.errors import InputError
from pipelines.rollout.replay import ReplaySettings, check_loopback, replay
from pipelines.rollout.sessions import HeldOut, Session, load_sessions
from tests.rollout.conftest import PROJECT_ROOT

Answer = Callable[[dict[str, Any]], tuple[int, Any]]
TOKEN = "client-token-for-tests"


def _sessions(n: int = 40) -> HeldOut:
    return HeldOut(
        tuple(Session(f"u{i}", (f"i{i}", f"i{i + 1}"), f"next{i}") for i in range(n)),
        popular=("next0", "next1", "p2", "p3"),
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Answer, together: int = 1) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        # each request is held until ``together`` requests are in the handler at once
        self.together = threading.Barrier(together, timeout=60) if together > 1 else None
        self.bodies: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.bodies.append(body)
                server.tokens.add(self.headers.get("Authorization", ""))
            if server.together is not None:
                server.together.wait()
            status, payload = server.answer(body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            with server.lock:
                server.in_flight -= 1


@contextlib.contextmanager
def serving(answer: Answer, together: int = 1) -> Iterator[tuple[str, _Server]]:
    server = _Server(answer, together)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


def _answer(items: list[str], version: str = "v1", arm: str = "stable", **more: Any) -> Any:
    return {
        "model_version": version,
        "arm": arm,
        "items": [{"item_id": i, "score": 1.0 / (n + 1)} for n, i in enumerate(items)],
        "fallback": False,
        **more,
    }


def _settings(**values: Any) -> ReplaySettings:
    base: dict[str, Any] = {"rate": 2000.0, "concurrency": 4, "max_requests": 40, "max_s": 20.0}
    return ReplaySettings(**{**base, **values})


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8000",
        "http://example.com:80",
        "http://0.0.0.0:8000",
        "https://127.0.0.1:8443",
        "127.0.0.1:8000",
    ],
)
def test_the_replay_refuses_anything_but_loopback(url: str) -> None:
    with pytest.raises(InputError, match=r"loopback|http://host:port"):
        check_loopback(url)
    with pytest.raises(InputError):
        replay([url], _sessions(), TOKEN, _settings())


def test_loopback_addresses_are_accepted() -> None:
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://[::1]:8000") == "http://[::1]:8000"
    assert check_loopback("http://localhost:8000") == "http://localhost:8000"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"rate": 0.0}, "rate must be a positive number"),
        ({"rate": float("inf")}, "rate must be a positive number"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"max_requests": 0}, "max_requests must be at least 1"),
        ({"max_s": 0.0}, "max_s and timeout_s must be positive"),
    ],
)
def test_bad_replay_settings_are_named(values: dict[str, Any], words: str) -> None:
    with pytest.raises(InputError, match=words):
        _settings(**values)


def test_each_answer_is_tallied_by_version_and_arm() -> None:
    def answer(body: dict[str, Any]) -> tuple[int, Any]:
        user = int(body["user_id"][1:])
        if user % 10 == 9:
            return 503, {"error": "not ready"}
        if user % 10 == 8:  # a NaN score reaches JSON as null
            return 200, _answer(["x"], version="v2", arm="canary") | {
                "items": [{"item_id": "x", "score": None}]
            }
        if user % 2:
            return 200, _answer([f"next{user}", "other"], version="v2", arm="canary")
        return 200, _answer(["other", "next0"], fallback=user % 4 == 0)

    with serving(answer) as (url, server):
        report = replay([url], _sessions(), TOKEN, _settings(max_requests=40, k=5))
    assert report.sent == 40 and report.stopped == "requests"
    assert report.errors == {"http 503": 4, "invalid answer": 4}
    stable, canary = report.tally("v1", "stable"), report.tally("v2", "canary")
    assert (stable.answered, stable.hits, stable.fallbacks) == (16, 1, 8)  # only u0 hits
    assert stable.popularity_hits == 1  # u0's next item is the most popular one
    assert (canary.answered, canary.hits, canary.invalid) == (16, 16, 4)
    assert report.answered == 32 and len(report.latencies_ms) == 40
    first = server.bodies[0]
    assert set(first) == {"user_id", "history", "k"} and first["k"] == 5
    assert server.tokens == {f"Bearer {TOKEN}"}
    summary = report.summary()
    assert summary["arms"]["v2/canary"]["hits"] == 16 and summary["error_rate"] == 0.2


class FakeTime:
    """A clock that moves only when the replay sleeps (and the pauses it asked for)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_replay_is_bounded_in_time_and_paced() -> None:
    with serving(lambda body: (200, _answer(["a"]))) as (url, _):
        fake = FakeTime()
        settings = _settings(rate=20.0, max_requests=1000, max_s=0.5, concurrency=1)
        report = replay([url], _sessions(), TOKEN, settings, clock=fake, sleep=fake.sleep)
        # request i is due at i / 20 s: the ones due within 0.5 s are sent, the 11th is not
        assert report.stopped == "time" and report.sent == 10
        assert fake.sleeps == pytest.approx([0.05] * 9)
        assert report.seconds == pytest.approx(0.45)

        fake = FakeTime()
        settings = _settings(rate=100.0, max_requests=30, concurrency=1)
        paced = replay([url], _sessions(), TOKEN, settings, clock=fake, sleep=fake.sleep)
        assert paced.stopped == "requests" and paced.sent == 30
        # request i is sent once it is due, at i / 100 s from the start
        assert fake.sleeps == pytest.approx([0.01] * 29)


def test_at_most_concurrency_requests_are_in_flight() -> None:
    # the server holds requests until three are in the handler at once: the replay must send
    # three together (or the barrier breaks and the requests fail), and never a fourth meanwhile
    with serving(lambda body: (200, _answer(["a"])), together=3) as (url, server):
        report = replay([url], _sessions(), TOKEN, _settings(concurrency=3, max_requests=24))
    assert report.sent == 24 and not report.errors
    assert server.most_in_flight == 3


def test_a_replay_stops_when_asked_and_goes_on_where_the_last_stopped() -> None:
    with serving(lambda body: (200, _answer(["a"]))) as (url, server):
        report = replay(
            [url], _sessions(), TOKEN, _settings(concurrency=1), until=lambda r: r.answered >= 5
        )
        assert report.stopped == "condition" and report.sent == 5
        server.bodies.clear()
        replay([url], _sessions(), TOKEN, _settings(concurrency=1, max_requests=3), offset=38)
        assert [b["user_id"] for b in server.bodies] == ["u38", "u39", "u0"]


def test_requests_are_spread_over_the_endpoints() -> None:
    with (
        serving(lambda body: (200, _answer(["a"]))) as (one, first),
        serving(lambda body: (200, _answer(["a"]))) as (two, second),
    ):
        replay([one, two], _sessions(), TOKEN, _settings(max_requests=20))
    assert len(first.bodies) == len(second.bodies) == 10


def test_a_server_that_goes_away_is_counted_not_raised() -> None:
    with serving(lambda body: (200, _answer(["a"]))) as (url, _):
        pass  # stopped: nothing listens there any more
    report = replay([url], _sessions(), TOKEN, _settings(max_requests=5, timeout_s=1.0))
    assert report.sent == 5 and sum(report.errors.values()) == 5
    assert report.answered == 0


def test_held_out_sessions_from_the_prepared_folder(tiny_prepared: Path) -> None:
    held_out = load_sessions(tiny_prepared, seed=7, max_history=3)
    again = load_sessions(tiny_prepared, seed=7, max_history=3)
    other = load_sessions(tiny_prepared, seed=8, max_history=3)
    assert held_out == again and held_out.sessions != other.sessions
    assert sorted(held_out.sessions, key=lambda s: s.user_id) == sorted(
        other.sessions, key=lambda s: s.user_id
    )
    assert all(1 <= len(s.history) <= 3 for s in held_out.sessions)
    assert held_out.popular and held_out.popular[0].startswith("i")
    assert load_sessions(tiny_prepared, "valid").sessions


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("missing", "test.parquet"),
        ("split", "not a held-out split"),
        ("history", "max_history must be at least 1"),
    ],
)
def test_bad_held_out_input_is_named(
    change: str, words: str, tiny_prepared: Path, tmp_path: Path
) -> None:
    prepared = tiny_prepared
    kwargs: dict[str, Any] = {}
    if change == "missing":
        prepared = tmp_path / "prepared"
        prepared.mkdir()
        for name in ("item_map.parquet", "user_map.parquet", "item_popularity.parquet"):
            (prepared / name).write_bytes((tiny_prepared / name).read_bytes())
    elif change == "split":
        kwargs["split"] = "train"
    else:
        kwargs["max_history"] = 0
    with pytest.raises(InputError, match=words):
        load_sessions(prepared, **kwargs)


def test_the_replay_command(tiny_prepared: Path) -> None:
    def command(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "RECFLOW_API_TOKENS"}
        if token:
            env["RECFLOW_API_TOKENS"] = token
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "replay", "--prepared", str(tiny_prepared),
             *args],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with serving(lambda body: (200, _answer(["i00001", "i00002"]))) as (url, _):
        done = command("--endpoint", url, "--requests", "30", "--rate", "500")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("30 requests in ")
        assert "hit rate " in done.stdout and "v1/stable: 30 answered" in done.stdout
        as_json = command("--endpoint", url, "--requests", "10", "--json")
        assert json.loads(as_json.stdout)["sent"] == 10
        no_token = command("--endpoint", url, token=None)
        assert no_token.returncode == 2 and "RECFLOW_API_TOKENS is not set" in no_token.stderr
    remote = command("--endpoint", "http://192.0.2.1:8000")
    assert remote.returncode == 2 and "is not on a loopback address" in remote.stderr


def test_each_canary_session_is_paired_with_stable_s_answer_to_it() -> None:
    def answer(body: dict[str, Any]) -> tuple[int, Any]:
        user = body["user_id"]
        number = int(user.split("~")[0][1:])
        if user.endswith("~probe1") and number % 4 == 1:
            # sticky routing may keep a probe on the canary: the next user id is tried
            return 200, _answer(["x"], version="v2", arm="canary")
        if "~probe" in user:  # stable hits every other session
            return 200, _answer([f"next{number}" if number % 4 == 1 else "x"])
        if number % 2:  # the canary hits every session
            return 200, _answer([f"next{number}"], version="v2", arm="canary")
        return 200, _answer(["x"])

    with serving(answer) as (url, server):
        report = replay([url], _sessions(), TOKEN, _settings(max_requests=40, pair=True))
    pair = report.paired("v2", "canary")
    assert (pair.sessions, pair.hits, pair.stable_hits, pair.both) == (20, 20, 10, 10)
    assert report.probes == 30  # one try for half the sessions, two for the other half
    assert report.sent == 70 and report.replayed == 40
    assert report.tally("v1", "stable").answered == 20  # probes are not replayed sessions
    probes = [b for b in server.bodies if "~probe" in b["user_id"]]
    assert {b["history"][0] for b in probes} == {f"i{n}" for n in range(1, 40, 2)}
    assert report.summary()["pairs"]["v2/canary"]["sessions"] == 20


def test_a_probe_that_never_reaches_stable_gives_up() -> None:
    canary = (200, _answer(["x"], version="v2", arm="canary"))
    with serving(lambda body: canary) as (url, _):
        report = replay(
            [url], _sessions(), TOKEN, _settings(max_requests=4, pair=True, max_probe_tries=3)
        )
    assert report.probes == 12 and report.paired("v2", "canary").sessions == 0
