"""The application in process: answers, validation, auth, fallback, cache, canary and swaps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipelines.core.io import read_parquet
from pipelines.serving.server.app import build_app
from pipelines.serving.server.auth import Tokens
from pipelines.serving.server.items import ItemTable
from pipelines.serving.server.registry import FolderRegistry, KeyedHash
from tests.serving.conftest import ADMIN, CLIENT, PSEUDONYM_KEY, init_run, serve_config

AUTH = {"Authorization": f"Bearer {CLIENT}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def items(served_folder: Path) -> ItemTable:
    return ItemTable.read(served_folder, 0 + len(read_parquet(served_folder / "items.parquet", "t")))


@pytest.fixture
def client(served_folder: Path, tmp_path: Path) -> Iterator[TestClient]:
    cfg = serve_config(tmp_path)
    init_run(cfg, served_folder)
    app = build_app(
        cfg, cfg.run_dir, Tokens((CLIENT,), ADMIN), pseudonymize=KeyedHash(PSEUDONYM_KEY.encode())
    )
    with TestClient(app) as test_client:
        yield test_client


def test_recommend_answers_top_k_in_catalog_ids(client: TestClient, items: ItemTable) -> None:
    history = [str(items.ids[i]) for i in (3, 1, 2)]
    answer = client.post("/recommend", json={"user_id": "u1", "history": history, "k": 5},
                         headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "v1" and body["arm"] == "stable"
    assert body["fallback"] is False
    assert len(body["items"]) == 5
    assert all(item["item_id"] in items.index for item in body["items"])
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
