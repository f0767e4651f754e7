"""``recflow serve`` as a real multi-worker server: swaps under load, metrics across workers,
the request log at shutdown, and schemathesis against the published OpenAPI schema."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pipelines.core.io import read_parquet
from tests.serving.conftest import ADMIN, CLIENT, PSEUDONYM_KEY
from tests.serving.live import call, live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(
    served_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path]]:
    """Two workers serving the tiny model as v1, with a version folder holding v1 and v2."""
    from pipelines.serving.server.sources import VersionFolder

    tmp = tmp_path_factory.mktemp("live")
    versions = VersionFolder(tmp / "registry")
    versions.publish(served_folder, "v1")
    versions.publish(served_folder, "v2")
    with live_server(tmp, "--registry", str(tmp / "registry"), "--version", "v1") as port:
        yield port, tmp


class Load:
    """Client threads sending valid requests until stopped (bounded in count and time)."""

    def __init__(self, port: int, threads: int = 4, limit: int = 4000, limit_s: float = 60):
        self.port, self.limit, self.limit_s = port, limit, limit_s
        self.codes: Counter[object] = Counter()
        self.versions: Counter[str] = Counter()
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, worker: int) -> None:
        started = time.monotonic()
        i = 0
        while not self._stop.is_set() and time.monotonic() - started < self.limit_s:
            with self._lock:
                if self.sent >= self.limit:
                    return
                self.sent += 1
            i += 1
            try:
                status, body = call(
                    self.port,
                    "POST",
                    "/recommend",
                    {"user_id": f"u{worker}-{i}", "history": [], "k": 5},
                )
            except OSError as exc:
                status, body = type(exc).__name__, None
            with self._answered:
                self.codes[status] += 1
                if status == 200:
                    self.versions[body["model_version"]] += 1
                self._answered.notify_all()

    def wait_for(self, more: int, version: str | None = None) -> None:
        """Block until ``more`` further answers (of ``version``, if given) have come back.

        The load advances by answers counted, not by time slept, so each phase of a test sees
        traffic however fast the machine is; the timeout only guards against a hang.
        """

        def count() -> int:
            return self.versions[version] if version else sum(self.codes.values())

        with self._answered:
            target = count() + more
            assert self._answered.wait_for(lambda: count() >= target, timeout=120), (
                f"the load stalled below {target} answers: {self.codes}"
            )

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.limit_s + 30)


def admin(port: int, path: str, body: object = None) -> dict:
    status, answer = call(port, "POST", path, body, token=ADMIN)
    assert status == 200, answer
    assert answer["converged"] and len(answer["workers"]) == 2, answer
    return answer


def test_hot_swap_and_rollback_under_load_fail_no_request(server: tuple[int, Path]) -> None:
    port, _ = server
    with Load(port) as load:
        load.wait_for(40)
        admin(port, "/admin/load", {"version": "v2"})
        admin(port, "/admin/canary", {"version": "v2", "weight": 0.5})
        load.wait_for(10, version="v2")  # the canary answers some of the traffic
        state = admin(port, "/admin/promote", {})
        assert {w["stable"]["version"] for w in state["workers"]} == {"v2"}
        load.wait_for(40)
        state = admin(port, "/admin/rollback")
        assert {w["stable"]["version"] for w in state["workers"]} == {"v1"}
        load.wait_for(40)
    assert load.sent > 100
    assert load.codes == Counter({200: load.sent}), load.codes  # none failed, none dropped
    assert load.versions["v1"] and load.versions["v2"]


def test_state_and_metrics_cover_every_worker(
    server: tuple[int, Path], served_folder: Path
) -> None:
    port, _ = server
    ids = read_parquet(served_folder / "items.parquet", "items").column("item_id").to_pylist()
    for i in range(50):
        history = ["x", ids[i % len(ids)], ids[(3 * i + 1) % len(ids)]]  # not cached
        assert call(port, "POST", "/recommend", {"user_id": f"m{i}", "history": history})[0] == 200
    status, state = call(port, "GET", "/admin/state", token=ADMIN)
    assert status == 200 and len({w["pid"] for w in state["workers"]}) == 2
    assert call(port, "GET", "/admin/state", token=CLIENT)[0] == 403
    status, text = call(port, "GET", "/metrics", token=None)
    assert status == 200
    unknown = [line for line in text.splitlines() if line.startswith("recflow_unknown_items_total")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in unknown) >= 50
    assert 'recflow_batch_size_bucket{arm="stable"' in text


def test_shutdown_writes_each_workers_request_log(served_folder: Path, tmp_path: Path) -> None:
    with live_server(tmp_path, "--model", str(served_folder)) as port:
        for i in range(40):
            assert call(port, "POST", "/recommend", {"user_id": f"s{i}", "history": []})[0] == 200
    files = list((tmp_path / "requests").rglob("*.parquet"))
    assert files and sum(len(read_parquet(f, "log")) for f in files) == 40
    assert not list((tmp_path / "requests").rglob("*.tmp"))
    # no token or key reaches the log, the run folder or the request log
    written = [tmp_path / "server.log", *(p for p in tmp_path.rglob("*") if p.is_file())]
    for path in written:
        data = path.read_bytes()
        for secret in (CLIENT, ADMIN, PSEUDONYM_KEY):
            assert secret.encode() not in data, (path, secret)


def test_the_api_conforms_to_its_schema(server: tuple[int, Path]) -> None:
    """schemathesis generates requests from the published schema for every operation: no 5xx,
    and every answer's status, content type and body are the ones the schema documents."""
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{server[0]}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {CLIENT}"},
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
                timeout=30,
            )

        conforms()
