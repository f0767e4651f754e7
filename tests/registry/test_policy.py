"""The hybrid-cloud policy, enforced where every write happens: forbidden kinds, data files and
raw user ids are refused on the way to the public cloud before any byte is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipelines.core.params import NEVER_CROSS, Params
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.errors import PolicyViolation
from pipelines.registry.names import PSEUDONYM_KEY, file_key, marker_key
from pipelines.registry.policy import PSEUDONYM, pseudonymize
from pipelines.registry.publish import publish
from pipelines.registry.replication import replicate
from pipelines.registry.stores.s3 import S3Store
from pipelines.registry.versions import Version, VersionFile, content_id, read_version
from tests.registry.conftest import ACCESS_KEY
from tests.registry.helpers import SECRET, make_candidate, make_params, snapshots


def _requests(store: S3Store) -> list[str]:
    """Every HTTP request the store's client sends from now on."""
    sent: list[str] = []
    store.client.meta.events.register(
        "before-send.s3.*", lambda request, **_: sent.append(request.url)
    )
    return sent


def _bucket_keys(endpoint: str, bucket: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    )
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.parametrize("kind", sorted(NEVER_CROSS))
def test_each_forbidden_kind_is_refused_before_any_byte(
    kind: str, registry: Registry, s3_endpoint: str, bucket: str
) -> None:
    public = registry.store("public")
    assert isinstance(public, S3Store)
    sent = _requests(public)
    with pytest.raises(PolicyViolation, match=f"{kind} never leaves the private cloud"):
        public.put_bytes(f"versions/0123456789abcdef/files/{kind}.bin", b"user-42,click", kind)
    assert sent == []
    assert _bucket_keys(s3_endpoint, bucket) == []
    # the same object may be written in the private cloud
    registry.record.put_bytes(f"scratch/{kind}.bin", b"user-42,click", kind)


def test_a_parquet_file_never_crosses_whatever_kind_it_claims(
    registry: Registry, tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    events = tmp_path / "model.onnx"
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": [1, 2]}), events)
    public = registry.store("public")
    assert isinstance(public, S3Store)
    sent = _requests(public)
    with pytest.raises(PolicyViolation, match="is a Parquet data file"):
        public.put_file("versions/0123456789abcdef/files/optimized/model.onnx", events, "artifact")
    assert sent == [] and _bucket_keys(s3_endpoint, bucket) == []


def test_an_item_table_crosses_only_with_catalog_columns(
    registry: Registry, tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    from pipelines.serving.items import ITEMS_FILE

    public = registry.store("public")
    assert isinstance(public, S3Store)
    key = f"versions/0123456789abcdef/files/optimized/{ITEMS_FILE}"
    disguised = tmp_path / "disguised.parquet"
    pq.write_table(pa.table({"item_idx": [1], "item_id": ["i1"], "user_id": ["u1"]}), disguised)
    sent = _requests(public)
    with pytest.raises(PolicyViolation, match="only catalog columns, not user_id"):
        public.put_file(key, disguised, "item_table")
    assert sent == [] and _bucket_keys(s3_endpoint, bucket) == []
    catalog = tmp_path / ITEMS_FILE
    columns = {
        "item_idx": [1],
        "item_id": ["i1"],
        "category": ["c1"],
        "price": [9.5],
        "popularity_rank": [1],
        "popularity": [3],
    }
    pq.write_table(pa.table(columns), catalog)
    public.put_file(key, catalog, "item_table")
    (stored,) = _bucket_keys(s3_endpoint, bucket)
    assert stored.endswith(key)


def test_raw_user_ids_in_a_report_are_refused_pseudonyms_pass(
    registry: Registry, s3_endpoint: str, bucket: str
) -> None:
    examples = {"examples": [{"user_id": "u-1001", "items": [3, 4]}, {"session_id": 77}]}
    public = registry.store("public")
    with pytest.raises(
        PolicyViolation, match=r"2 user or session id\(s\) not pseudonymized"
    ) as caught:
        public.put_bytes("reports/examples.json", json.dumps(examples).encode(), "report")
    message = str(caught.value)
    assert "examples[0].user_id" in message and "examples[1].session_id" in message
    assert "u-1001" not in message  # the ids themselves are the private data
    assert _bucket_keys(s3_endpoint, bucket) == []
    key = b"k" * 32
    safe = {
        "examples": [
            {"user_id": pseudonymize("u-1001", key)},
            {"session_id": pseudonymize(77, key)},
        ]
    }
    public.put_bytes("reports/examples.json", json.dumps(safe).encode(), "report")
    assert _bucket_keys(s3_endpoint, bucket) == ["registry/reports/examples.json"]


def test_pseudonyms_are_keyed_and_stable() -> None:
    one, two = b"a" * 32, b"b" * 32
    assert pseudonymize("u-1", one) == pseudonymize("u-1", one)
    assert pseudonymize("u-1", one) != pseudonymize("u-1", two)
    assert pseudonymize("u-1", one) != pseudonymize("u-2", one)
    assert PSEUDONYM.fullmatch(pseudonymize("u-1", one))


def test_a_kind_left_out_of_the_allow_list_does_not_cross(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    params = make_params(
        tmp_path,
        endpoint=s3_endpoint,
        bucket=bucket,
        overrides={"registry": {"crossing": {"allow": ["model", "version_marker", "alias"]}}},
    )
    public = open_registry(params, tmp_path).store("public")
    with pytest.raises(PolicyViolation, match=r"report is not in registry\.crossing\.allow"):
        public.put_bytes("r.md", b"# report", "report")
    assert _bucket_keys(s3_endpoint, bucket) == []


@pytest.mark.parametrize("kind", sorted(NEVER_CROSS))
def test_params_cannot_allow_a_forbidden_kind(kind: str) -> None:
    document: dict[str, Any] = {
        "run": {"logical_date": "2026-11-22"},
        "registry": {"crossing": {"allow": ["model", kind]}},
    }
    with pytest.raises(ValidationError, match="never leave the private cloud"):
        Params.model_validate(document)


def test_replication_of_a_version_holding_a_forbidden_object_sends_nothing(
    registry: Registry, s3_endpoint: str, bucket: str
) -> None:
    # a version in the private record that (against the rules) holds user ids next to a model
    files = (
        VersionFile("model.pt", "model", *_sha(b"weights")),
        VersionFile("users.csv", "user_ids", *_sha(b"u-1\nu-2\n")),
    )
    vid, digest = content_id(files)
    record = registry.record
    record.put_bytes(file_key(vid, "model.pt"), b"weights", "model")
    record.put_bytes(file_key(vid, "users.csv"), b"u-1\nu-2\n", "user_ids")
    record.put_bytes(marker_key(vid), Version(vid, digest, files).to_bytes(), "version_marker")
    before = snapshots(registry)
    with pytest.raises(PolicyViolation, match="user_ids never leaves the private cloud"):
        replicate(registry, vid, "public")
    assert snapshots(registry) == before
    assert _bucket_keys(s3_endpoint, bucket) == []  # not even the model went


def _sha(data: bytes) -> tuple[str, int]:
    import hashlib

    return hashlib.sha256(data).hexdigest(), len(data)


def test_ids_in_a_candidate_are_pseudonymized_and_the_key_stays_private(
    registry: Registry, tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    import datetime as dt

    candidate = make_candidate(
        tmp_path / "with-ids",
        extra={"examples": [{"user_id": "u-1001", "items": [1]}, {"user_id": "u-1002"}]},
    )
    done = publish(
        registry, candidate, {"format": 1}, actor="test", at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    )
    public = registry.store("public")
    verdict, _ = public.read(file_key(done.version.id, "evaluation/verdict.json"))
    examples = json.loads(verdict)["examples"]
    assert all(PSEUDONYM.fullmatch(e["user_id"]) for e in examples)
    assert b"u-1001" not in verdict
    assert read_version(public, done.version.id).id == done.version.id
    assert registry.record.head(PSEUDONYM_KEY) is not None
    assert not [k for k in _bucket_keys(s3_endpoint, bucket) if "secret" in k]
    # the same candidate makes the same version: the pseudonyms are stable
    again = publish(registry, candidate, {"format": 1}, actor="test", at=dt.datetime.now(dt.UTC))
    assert again.version.id == done.version.id and not again.created
