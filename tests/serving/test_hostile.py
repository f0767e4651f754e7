"""Hostile and malformed requests: each gets a 4xx naming the problem, never a 5xx, and the
server goes on answering valid requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.serving.test_app import AUTH, make_client, recommend

JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(served_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(served_folder, tmp_path_factory.mktemp("hostile")) as test_client:
        yield test_client


def body(**fields: Any) -> bytes:
    return json.dumps({"user_id": "u", **fields}).encode()


# (case, method, path, raw body, headers, status, words the detail must hold)
CASES: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", "POST", "/recommend", b'{"user_id": "u",', JSON, 400, "not valid JSON"),
    ("trailing garbage", "POST", "/recommend", b'{"user_id": "u"} x', JSON, 400, "not valid JSON"),
    ("empty body", "POST", "/recommend", b"", JSON, 400, "not valid JSON"),
    ("a JSON array", "POST", "/recommend", b"[1, 2]", JSON, 422, "Expected `object`, got `array`"),
    ("null body", "POST", "/recommend", b"null", JSON, 422, "Expected `object`, got `null`"),
    ("user id missing", "POST", "/recommend", b'{"k": 3}', JSON, 422, "user_id"),
    ("k a string", "POST", "/recommend", body(k="5"), JSON, 422, "k: Expected `int`, got `str`"),
    ("k a bool", "POST", "/recommend", body(k=True), JSON, 422, "k: Expected `int`, got `bool`"),
    ("k a float", "POST", "/recommend", body(k=2.5), JSON, 422, "k: Expected `int`"),
    ("negative k", "POST", "/recommend", body(k=-1), JSON, 422, "k: Expected `int` >= 1"),
    ("zero k", "POST", "/recommend", body(k=0), JSON, 422, "k: Expected `int` >= 1"),
    ("huge k", "POST", "/recommend", body(k=10**30), JSON, 422, "k: Expected `int` <= 100"),
    ("history a string", "POST", "/recommend", body(history="a"), JSON, 422, "history"),
    ("item id a number", "POST", "/recommend", body(history=["a", 7]), JSON, 422, "history[1]"),
    (
        "history of 100,000 items",
        "POST",
        "/recommend",
        json.dumps({"user_id": "u", "history": ["i"] * 100_000}).encode(),
        JSON,
        413,
        "exceeds",
    ),
    (
        "history over the item cap",
        "POST",
        "/recommend",
        body(history=["i"] * 501),
        JSON,
        422,
        "history: Expected `array` of length <= 500",
    ),
    ("10 MB body", "POST", "/recommend", b" " * 10_000_000, JSON, 413, "exceeds 65536 bytes"),
    (
        "user id of 100,000 characters",
        "POST",
        "/recommend",
        body(user_id="x" * 100_000),
        JSON,
        413,
        "exceeds",
    ),
    (
        "user id over the length cap",
        "POST",
        "/recommend",
        body(user_id="x" * 129),
        JSON,
        422,
        "user_id: Expected `str` of length <= 128",
    ),
    ("empty user id", "POST", "/recommend", body(user_id=""), JSON, 422, "user_id"),
    ("item id too long", "POST", "/recommend", body(history=["x" * 129]), JSON, 422, "history[0]"),
    ("raw control character", "POST", "/recommend", b'{"user_id": "a\x01b"}', JSON, 400, "JSON"),
    ("escaped control character", "POST", "/recommend", body(user_id="a\x00b"), JSON, 422,
     "user_id"),
    ("control character in an item", "POST", "/recommend", body(history=["a\tb"]), JSON, 422,
     "history[0]"),
    ("lone surrogate", "POST", "/recommend", b'{"user_id": "a\\ud800"}', JSON, 400, "JSON"),
    ("invalid UTF-8", "POST", "/recommend", b'{"user_id": "\xff\xfe"}', JSON, 400, "not UTF-8"),
    ("NaN literal", "POST", "/recommend", b'{"user_id": "u", "k": NaN}', JSON, 400, "JSON"),
    ("Infinity literal", "POST", "/recommend", b'{"user_id": "u", "k": Infinity}', JSON, 400,
     "JSON"),
    ("number out of range", "POST", "/recommend", b'{"user_id": "u", "k": 1e999}', JSON, 422, "k"),
    ("unknown field", "POST", "/recommend", body(extra=1), JSON, 422, "unknown field `extra`"),
    (
        "deeply nested JSON",
        "POST",
        "/recommend",
        b'{"user_id": "u", "history": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        JSON,
        422,
        "history[0]",
    ),
    ("deeply nested top level", "POST", "/recommend", b"[" * 30_000, JSON, 422, "object"),
    ("wrong content type", "POST", "/recommend", body(), {**AUTH, "Content-Type": "text/plain"},
     415, "Content-Type must be application/json"),
    ("no content type", "POST", "/recommend", body(), AUTH, 415, "Content-Type"),
    ("form body", "POST", "/recommend", b"user_id=u",
     {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    ("lying content length", "POST", "/recommend", body(),
     {**JSON, "Content-Length": "99999999"}, 413, "exceeds"),
    ("wrong method", "GET", "/recommend", b"", AUTH, 405, "GET is not allowed on /recommend"),
    ("wrong method on admin", "PUT", "/admin/promote", b"", AUTH, 405, "PUT is not allowed"),
    ("unknown path", "GET", "/../../etc/passwd", b"", AUTH, 404, "no endpoint"),
    ("missing token", "POST", "/recommend", body(), {"Content-Type": "application/json"}, 401,
     "Authorization header missing"),
    ("wrong token", "POST", "/recommend", body(),
     {"Content-Type": "application/json", "Authorization": "Bearer guess"}, 401, "unknown token"),
    ("not a bearer token", "POST", "/recommend", body(),
     {"Content-Type": "application/json", "Authorization": "Basic dTpw"}, 401, "Bearer"),
    ("client token on the admin API", "POST", "/admin/promote", b"{}", JSON, 403,
     "client token may not use the admin API"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "raw", "headers", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_request_gets_a_4xx_naming_the_problem(
    client: TestClient,
    method: str,
    path: str,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    answer = client.request(method, path, content=raw, headers=headers)
    assert answer.status_code == status, answer.text[:500]
    assert answer.headers["content-type"] == "application/json"
    detail = answer.json()["detail"]
    assert words in detail, detail
    assert "client-token" not in answer.text  # a token is never echoed
    # and the server goes on answering
    assert recommend(client, "after", [])["items"]


def test_unauthorized_answers_name_the_scheme(client: TestClient) -> None:
    answer = client.post("/recommend", content=body(), headers={"Content-Type": "application/json"})
    assert answer.headers["WWW-Authenticate"] == "Bearer"
