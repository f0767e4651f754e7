"""Registry test fixtures: one S3-compatible server over real HTTP (moto's standalone server on
a loopback port) for the session, a fresh bucket per test, fake credentials in the
environment, and a registry of a private file store and a public S3 store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pipelines.core.params import Params
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.loopback import serve
from tests.registry.helpers import SECRET, make_candidate, make_params

ACCESS_KEY = "AKIARECFLOWTEST0001"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint of an S3-compatible server on 127.0.0.1, for the whole session."""
    with serve() as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials in the environment, and nothing from a real AWS set-up."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/recflow-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/recflow-aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the session's server."""
    name = f"recflow-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture
def params(tmp_path: Path, s3_endpoint: str, bucket: str) -> Params:
    """A private file store under ``tmp_path``, a public S3 store in ``bucket``."""
    return make_params(tmp_path, endpoint=s3_endpoint, bucket=bucket)


@pytest.fixture
def registry(params: Params, tmp_path: Path) -> Registry:
    """The registry of ``params``."""
    return open_registry(params, tmp_path)


@pytest.fixture
def candidate(tmp_path: Path) -> Path:
    """A candidate folder that passed the gate."""
    return make_candidate(tmp_path / "candidate")
