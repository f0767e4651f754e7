"""Credentials come from the environment, an AWS profile or an Airflow connection, and their
values are removed from anything the registry says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.core.params import Params, StoreConfig
from pipelines.registry.errors import AccessDenied, StoreUnreachable
from pipelines.registry.stores.credentials import redact, secrets_of, session_for
from pipelines.registry.stores.open import open_store
from tests.registry.conftest import ACCESS_KEY
from tests.registry.helpers import SECRET

S3 = {"url": "s3://recflow-x/reg", "role": "replica"}


def test_the_environment_by_default() -> None:
    session, endpoint = session_for("public", StoreConfig(**S3))  # type: ignore[arg-type]
    assert endpoint is None
    assert secrets_of(session) == sorted([SECRET, ACCESS_KEY], key=len, reverse=True)


def test_an_airflow_connection_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = {
        "conn_type": "aws",
        "login": "AKIACONNECTION",
        "password": "connection-secret",
        "extra": {"region_name": "eu-west-1", "endpoint_url": "http://minio.internal:9000"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_RECFLOW_PUBLIC", json.dumps(connection))
    cfg = StoreConfig(**S3, connection="recflow_public")  # type: ignore[arg-type]
    session, endpoint = session_for("public", cfg)
    assert endpoint == "http://minio.internal:9000"
    assert session.region_name == "eu-west-1"
    assert "connection-secret" in secrets_of(session)


def test_an_airflow_connection_as_a_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_RECFLOW_PUBLIC", "aws://AKIAURI:uri%2Fsecret@/?region_name=eu-north-1"
    )
    cfg = StoreConfig(**S3, connection="recflow_public")  # type: ignore[arg-type]
    session, _ = session_for("public", cfg)
    assert "uri/secret" in secrets_of(session) and session.region_name == "eu-north-1"


def test_a_missing_connection_or_profile_is_named() -> None:
    with pytest.raises(AccessDenied, match=r"AIRFLOW_CONN_NOPE is not set"):
        session_for("public", StoreConfig(**S3, connection="nope"))  # type: ignore[arg-type]
    with pytest.raises(AccessDenied, match="AWS profile 'nope' does not exist"):
        session_for("public", StoreConfig(**S3, profile="nope"))  # type: ignore[arg-type]


def test_the_endpoint_override_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECFLOW_STORE_PUBLIC_ENDPOINT_URL", "http://127.0.0.1:9")
    _, endpoint = session_for("public", StoreConfig(**S3, endpoint_url="http://x:1"))  # type: ignore[arg-type]
    assert endpoint == "http://127.0.0.1:9"


def test_a_loopback_store_without_its_server_says_how_to_start_it(tmp_path: Path) -> None:
    params = Params.model_validate({"run": {"logical_date": "2026-11-22"}})
    assert params.stores.public.loopback
    with pytest.raises(StoreUnreachable, match="served by the loopback S3 server, which is not"):
        open_store("public", params.stores.public, params.registry, tmp_path)


def test_redact() -> None:
    assert (
        redact(f"key {ACCESS_KEY} secret {SECRET}!", [SECRET, ACCESS_KEY]) == "key *** secret ***!"
    )


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"url": "s3://Bad_Bucket/x", "role": "record"}, "is not s3://<bucket>"),
        ({"url": "s3://bucket/../x", "role": "record"}, "each prefix segment is letters"),
        ({"url": "gs://bucket", "role": "record"}, "must start with s3:// or file:"),
        ({"url": "file:x", "role": "record", "encryption": "AES256"}, "a file store takes no"),
        ({"url": "file:x", "role": "record", "profile": "p"}, "a file store takes no profile"),
        ({"url": "s3://bucket", "role": "record", "kms_key_id": "k"}, "kms_key_id needs"),
        ({"url": "s3://bucket", "role": "record", "endpoint_url": "minio:9000"}, "http(s) URL"),
        (
            {"url": "s3://bucket", "role": "record", "profile": "p", "connection": "c"},
            "a profile or a connection, not both",
        ),
        ({"url": "s3://bucket", "role": "record", "secret_key": "x"}, "Extra inputs"),
    ],
)
def test_bad_store_config_is_named(store: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StoreConfig(**store)  # type: ignore[arg-type]


def test_exactly_one_store_of_record() -> None:
    document = {
        "run": {"logical_date": "2026-11-22"},
        "stores": {"public": {"url": "s3://recflow-x", "role": "record"}},
    }
    with pytest.raises(ValueError, match="exactly one store must have role record"):
        Params.model_validate(document)
