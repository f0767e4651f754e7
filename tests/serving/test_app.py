"""The application in process: answers, validation, auth, fallback, cache, canary and swaps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pipelines.core.io import read_parquet
from pipelines.serving.items import ItemTable
from pipelines.serving.server.app import build_app
from pipelines.serving.server.auth import Tokens
from pipelines.serving.server.pseudonyms import KeyedHash
from pipelines.serving.server.sources import VersionFolder
from tests.serving.conftest import ADMIN, CLIENT, PSEUDONYM_KEY, init_run, serve_config

AUTH = {"Authorization": f"Bearer {CLIENT}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def items(served_folder: Path) -> ItemTable:
    return ItemTable.read(served_folder, len(read_parquet(served_folder / "items.parquet", "t")))


def make_client(
    folder: Path,
    tmp: Path,
    versions: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    **overrides: Any,
) -> TestClient:
    cfg = serve_config(tmp, **overrides)
    init_run(cfg, folder)
    app = build_app(
        cfg,
        cfg.run_dir,
        Tokens((CLIENT,), ADMIN),
        source=VersionFolder(versions) if versions else None,
        pseudonymize=KeyedHash(PSEUDONYM_KEY.encode()),
        clock=clock,
    )
    return TestClient(app)


@pytest.fixture
def client(served_folder: Path, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(served_folder, tmp_path) as test_client:
        yield test_client


def recommend(client: TestClient, user: str, history: list[str], k: int = 5) -> Any:
    answer = client.post(
        "/recommend", json={"user_id": user, "history": history, "k": k}, headers=AUTH
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def settle(client: TestClient) -> None:
    """Wait, in the app's event loop, for the background work started so far (shadow copies,
    request log windows): a test reads their results after they are done, not after a pause."""
    service = client.app.state.service  # type: ignore[attr-defined]

    async def finished() -> None:
        await asyncio.gather(*list(service._tasks))

    assert client.portal is not None, "the client must be entered (with make_client(...))"
    client.portal.call(finished)


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_recommend_answers_top_k_in_catalog_ids(client: TestClient, items: ItemTable) -> None:
    history = [str(items.ids[i]) for i in (3, 1, 2)]
    answer = client.post(
        "/recommend", json={"user_id": "u1", "history": history, "k": 5}, headers=AUTH
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "v1" and body["arm"] == "stable"
    assert body["fallback"] is False
    assert len(body["items"]) == 5
    assert all(item["item_id"] in items.index for item in body["items"])
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_health_ready_metrics_and_schema(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "version": "v1"}
    schema = client.get("/openapi.json").json()
    assert "/recommend" in schema["paths"] and "RecommendRequest" in schema["components"]["schemas"]
    recommend(client, "u", [])
    text = client.get("/metrics").text
    assert 'recflow_request_latency_seconds_count{arm="stable",version="v1"} 1.0' in text


def test_unknown_items_are_dropped_and_counted(client: TestClient, items: ItemTable) -> None:
    known = str(items.ids[1])
    body = recommend(client, "u2", ["no-such-item", known, "another-unknown"])
    assert body["fallback"] is False and body["items"]
    assert metric(client, "recflow_unknown_items_total", version="v1", arm="stable") == 2
    # the answer is the one for the known item alone
    assert recommend(client, "u3", [known]) == {**body}


def test_k_beyond_the_graphs_top_k_ranks_the_full_scores(
    client: TestClient, items: ItemTable
) -> None:
    history = [str(items.ids[i]) for i in (5, 6)]
    short = recommend(client, "u", history, k=5)["items"]
    long = recommend(client, "u", history, k=40)["items"]
    assert len(long) == min(40, items.n_items)
    assert len({i["item_id"] for i in long}) == len(long)
    assert [i["item_id"] for i in long[:5]] == [i["item_id"] for i in short]


def test_cold_start_is_answered_from_the_warmed_cache(client: TestClient) -> None:
    body = recommend(client, "new-user", [])
    assert len(body["items"]) == 5 and body["fallback"] is False
    assert metric(client, "recflow_cache_hits_total", version="v1") == 1
    recommend(client, "other", ["unknown"])  # also a cold start once the unknown is dropped
    assert metric(client, "recflow_cache_hits_total", version="v1") == 2


def test_a_failing_model_answers_from_the_popularity_fallback(
    client: TestClient, items: ItemTable
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    def broken(padded: Any, k: int) -> Any:
        raise RuntimeError("the runtime crashed")

    service.arms.stable.batcher._model = broken
    # two items: not among the warmed one-item histories
    body = recommend(client, "u9", [str(items.ids[7]), str(items.ids[3])], k=4)
    assert body["fallback"] is True
    assert [i["item_id"] for i in body["items"]] == [
        str(items.ids[i]) for i in items.by_popularity[:4]
    ]
    assert metric(client, "recflow_fallbacks_total", reason="error") == 1
    assert metric(client, "recflow_errors_total", kind="error") == 1


def test_a_model_past_its_deadline_answers_from_the_fallback(
    served_folder: Path, tmp_path: Path, items: ItemTable
) -> None:
    # the model call cannot end before the deadline: it waits until the answer has come back
    release = threading.Event()
    with make_client(served_folder, tmp_path, model_deadline_ms=20.0) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        model = service.arms.stable.batcher._model

        def stuck(padded: Any, k: int) -> Any:
            release.wait(timeout=60)
            return model(padded, k)

        service.arms.stable.batcher._model = stuck
        try:
            body = recommend(client, "u9", [str(items.ids[8]), str(items.ids[3])], k=3)
        finally:
            release.set()
        assert body["fallback"] is True and len(body["items"]) == 3
        assert metric(client, "recflow_errors_total", kind="deadline") == 1


class Clock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_answers_429_with_retry_after(served_folder: Path, tmp_path: Path) -> None:
    limits = {"requests_per_s": 1.0, "burst": 2}
    clock = Clock()
    with make_client(served_folder, tmp_path, clock=clock, rate_limit=limits) as client:
        codes = [
            client.post("/recommend", json={"user_id": "u"}, headers=AUTH).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        refused = client.post("/recommend", json={"user_id": "u"}, headers=AUTH)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert "rate" in refused.json()["detail"]
        clock.now = 1.0  # one second refills one request
        codes = [
            client.post("/recommend", json={"user_id": "u"}, headers=AUTH).status_code
            for _ in range(2)
        ]
        assert codes == [200, 429]


def test_request_log_holds_pseudonyms_categories_and_prices(
    served_folder: Path, tmp_path: Path, items: ItemTable
) -> None:
    history = [str(items.ids[i]) for i in (2, 4)]
    with make_client(served_folder, tmp_path) as client:
        recommend(client, "alice@example.com", [*history, "unknown-item"], k=3)
    files = list((tmp_path / "requests").rglob("*.parquet"))
    assert len(files) == 1 and files[0].parent.name.startswith("date=")
    row = read_parquet(files[0], "request log").to_pylist()[0]
    assert row["user"] == KeyedHash(PSEUDONYM_KEY.encode())("alice@example.com")
    assert "alice" not in str(row)
    assert row["history_items"] == history
    assert row["history_categories"] == [items.categories[i] for i in (2, 4)]
    assert row["history_prices"] == pytest.approx([items.prices[i] for i in (2, 4)])
    assert len(row["items"]) == 3 and len(row["item_categories"]) == 3
    assert row["model_version"] == "v1" and row["arm"] == "stable"
    assert row["unknown_items"] == 1 and row["fallback"] is False and row["latency_ms"] > 0
