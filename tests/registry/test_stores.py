"""Both stores keep the same promises over their real transports: verified reads and writes,
compare-and-set, and a clear error that changes nothing for every way a store can fail."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pipelines.core.params import CrossingConfig, Params, StoreConfig
from pipelines.core.waiting import wait_until
from pipelines.registry.errors import (
    AccessDenied,
    BucketMissing,
    ChecksumMismatch,
    ConditionFailed,
    ObjectMissing,
    StoreFull,
    StoreUnreachable,
)
from pipelines.registry.loopback import free_port, serve
from pipelines.registry.policy import CrossingPolicy
from pipelines.registry.stores.base import Store
from pipelines.registry.stores.file import FileStore
from pipelines.registry.stores.open import open_store
from pipelines.registry.stores.s3 import S3Store
from tests.registry.conftest import ACCESS_KEY
from tests.registry.helpers import SECRET, snapshot


def _s3(endpoint: str, **kwargs: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=kwargs.get("key", ACCESS_KEY),
        aws_secret_access_key=kwargs.get("secret", SECRET),
    )


def _s3_store(params: Params, tmp_path: Path, url: str, endpoint: str, **cfg: object) -> S3Store:
    config = StoreConfig(url=url, role="record", endpoint_url=endpoint, **cfg)  # type: ignore[arg-type]
    store = open_store("private", config, params.registry, tmp_path)
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["file", "s3"])
def store(
    request: pytest.FixtureRequest, params: Params, tmp_path: Path, s3_endpoint: str, bucket: str
) -> Store:
    """A store of record of each backend."""
    if request.param == "file":
        return FileStore(
            "private",
            "record",
            tmp_path / "store",
            open_store(
                "x", StoreConfig(url="file:x", role="record"), params.registry, tmp_path
            ).policy,
        )
    return _s3_store(params, tmp_path, f"s3://{bucket}/reg", s3_endpoint)


def _tamper(store: Store, key: str, data: bytes) -> None:
    """Replace the object's bytes behind the store's back, keeping its metadata."""
    if isinstance(store, FileStore):
        (store.root / key).write_bytes(data)
        return
    assert isinstance(store, S3Store)
    info = store.head(key)
    assert info is not None
    store.client.put_object(
        Bucket=store.bucket, Key=store.prefix + key, Body=data, Metadata={"sha256": info.sha256}
    )


def test_bytes_round_trip_with_sha256_metadata(store: Store) -> None:
    info = store.put_bytes("a/b.json", b'{"x": 1}', "metrics")
    assert info.sha256 == hashlib.sha256(b'{"x": 1}').hexdigest()
    assert info.size == 8
    data, read_info = store.read("a/b.json", info.sha256)
    assert data == b'{"x": 1}' and read_info.sha256 == info.sha256
    assert store.list_keys() == ["a/b.json"] and store.list_keys("a/") == ["a/b.json"]
    assert store.list_keys("b/") == []
    store.delete("a/b.json")
    assert store.head("a/b.json") is None


def test_multipart_upload_lands_verified(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 2**20))  # above the 1 MiB threshold: three 5 MiB parts
    info = store.put_file("versions/big.bin", big, "model")
    if isinstance(store, S3Store):
        assert info.etag.endswith('-3"'), info.etag  # S3 saw a multipart upload
    out = tmp_path / "out.bin"
    store.download("versions/big.bin", out, info.sha256)
    assert out.read_bytes() == big.read_bytes()


def test_tampered_object_is_detected_on_read_and_download(store: Store, tmp_path: Path) -> None:
    info = store.put_bytes("model.pt", b"the real model", "model")
    _tamper(store, "model.pt", b"a swapped model!")
    before = snapshot(store)
    with pytest.raises(ChecksumMismatch, match="was changed or corrupted, and was not used"):
        store.read("model.pt")
    dest = tmp_path / "fetched.pt"
    with pytest.raises(ChecksumMismatch, match=r"model\.pt in store 'private'"):
        store.download("model.pt", dest, info.sha256)
    assert not dest.exists()
    assert snapshot(store) == before


def test_a_caller_expectation_is_checked_too(store: Store) -> None:
    store.put_bytes("m.json", b"{}", "metrics")
    with pytest.raises(ChecksumMismatch, match="the version's marker records 000000000000"):
        store.read("m.json", "0" * 64)


def test_missing_object_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    store.put_bytes("other.json", b"{}", "metrics")
    before = snapshot(store)
    with pytest.raises(ObjectMissing, match=r"nothing\.pt in store 'private' .* is missing"):
        store.read("nothing.pt")
    with pytest.raises(ObjectMissing, match="is missing"):
        store.download("nothing.pt", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert snapshot(store) == before


def test_object_without_recorded_sha256_is_not_used(store: Store) -> None:
    if isinstance(store, FileStore):
        store.root.mkdir(parents=True)
        (store.root / "raw.bin").write_bytes(b"unrecorded")
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + "raw.bin", Body=b"x")
    with pytest.raises(ChecksumMismatch, match="has no sha256 in its metadata"):
        store.read("raw.bin")


def test_compare_and_set(store: Store) -> None:
    first = store.put_bytes("aliases/p.json", b"one", "alias", if_none_match=True)
    with pytest.raises(ConditionFailed):
        store.put_bytes("aliases/p.json", b"two", "alias", if_none_match=True)
    with pytest.raises(ConditionFailed):
        store.put_bytes("aliases/p.json", b"two", "alias", if_match='"not-the-etag"')
    assert store.read("aliases/p.json")[0] == b"one"
    second = store.put_bytes("aliases/p.json", b"two", "alias", if_match=first.etag)
    assert store.read("aliases/p.json")[0] == b"two" and second.etag != first.etag
    with pytest.raises(ConditionFailed):
        store.put_bytes("aliases/p.json", b"three", "alias", if_match=first.etag)


# -- the S3 store's failures -------------------------------------------------------------------


def test_unreachable_endpoint_fails_fast_naming_it(params: Params, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = _s3_store(params, tmp_path, "s3://recflow-nowhere/reg", endpoint)
    with pytest.raises(StoreUnreachable) as caught:
        store.put_bytes("x.json", b"{}", "metrics")
    # bounded by the retry budget (2 attempts, 1 s connect timeout), not by how fast this runs
    assert endpoint in str(caught.value)
    assert "after 2 attempt(s)" in str(caught.value)


def test_missing_bucket_is_named(params: Params, tmp_path: Path, s3_endpoint: str) -> None:
    store = _s3_store(params, tmp_path, "s3://recflow-no-such-bucket/reg", s3_endpoint)
    with pytest.raises(BucketMissing, match="bucket 'recflow-no-such-bucket' does not exist"):
        store.put_bytes("x.json", b"{}", "metrics")
    with pytest.raises(BucketMissing):
        store.list_keys()


@pytest.fixture(scope="module")
def auth_endpoint() -> Iterator[tuple[str, str, str]]:
    """A second server that checks credentials: its endpoint, a valid key and its secret."""
    with serve(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as endpoint:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="recflow")
        key = iam.create_access_key(UserName="recflow")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="recflow", PolicyName="s3", PolicyDocument=json.dumps(policy))
        good = _s3(endpoint, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
        good.create_bucket(Bucket="recflow-auth")  # type: ignore[attr-defined]
        good.put_object(Bucket="recflow-auth", Key="reg/keep.json", Body=b"{}")  # type: ignore[attr-defined]
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]


def test_wrong_credentials_are_refused_without_leaking_them(
    auth_endpoint: tuple[str, str, str],
    params: Params,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, key, secret = auth_endpoint
    wrong = "wrong-" + secret[::-1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    store = _s3_store(params, tmp_path, "s3://recflow-auth/reg", endpoint)
    with pytest.raises(AccessDenied, match="refused the credentials") as caught:
        store.put_bytes("x.json", b"{}", "metrics")
    assert wrong not in str(caught.value) and secret not in str(caught.value)
    assert key not in str(caught.value)
    listed = _s3(endpoint, key=key, secret=secret).list_objects_v2(Bucket="recflow-auth")  # type: ignore[attr-defined]
    assert [o["Key"] for o in listed["Contents"]] == ["reg/keep.json"]


def test_no_credentials_at_all_is_named(
    params: Params, tmp_path: Path, s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = _s3_store(params, tmp_path, f"s3://{bucket}/reg", s3_endpoint)
    with pytest.raises(AccessDenied, match="no credentials"):
        store.put_bytes("x.json", b"{}", "metrics")


_UPLOAD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pipelines.core.params import RegistryConfig, StoreConfig
    from pipelines.registry.stores.open import open_store
    cfg = StoreConfig(url=sys.argv[1], role="record", endpoint_url=sys.argv[2] or None)
    registry = RegistryConfig.model_validate(
        {"transfer": {"multipart_threshold_mb": 5, "multipart_chunksize_mb": 5,
                      "max_concurrency": 1}}
    )
    store = open_store("private", cfg, registry, Path("."))
    store.put_file("versions/big.bin", Path(sys.argv[3]), "model")
    """
)


def test_an_upload_killed_part_way_leaves_no_object(
    tmp_path: Path, s3_endpoint: str, bucket: str, params: Params
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(60 * 2**20))
    url = f"s3://{bucket}/reg"
    client = _s3(s3_endpoint)
    process = subprocess.Popen(
        [sys.executable, "-c", _UPLOAD, url, s3_endpoint, str(source)], env=os.environ.copy()
    )

    def uploading() -> bool:
        assert process.poll() is None, "the upload ended before it could be interrupted"
        return bool(client.list_multipart_uploads(Bucket=bucket).get("Uploads"))  # type: ignore[attr-defined]

    # the limit only ends a hung test: nothing passes or fails by how fast it came
    assert wait_until(uploading, timeout_s=60, interval_s=0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = _s3_store(params, tmp_path, url, s3_endpoint)
    assert store.head("versions/big.bin") is None
    assert store.list_keys() == []
    # the rerun completes it
    info = store.put_file("versions/big.bin", source, "model")
    assert store.rehash("versions/big.bin") == info.sha256


# -- the file store's full disk ----------------------------------------------------------------


def test_a_write_that_would_fill_the_volume_is_refused(params: Params, tmp_path: Path) -> None:
    policy = open_store(
        "x", StoreConfig(url="file:x", role="record"), params.registry, tmp_path
    ).policy
    root = tmp_path / "store"
    store = FileStore("private", "record", root, policy, min_free_bytes=2**62)
    before = snapshot(store)
    with pytest.raises(StoreFull, match=r"would leave less than the .* MB it keeps free"):
        store.put_bytes("model.pt", b"x" * 1024, "model")
    assert snapshot(store) == before == {}


_FILL = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from pipelines.core.params import CrossingConfig
    from pipelines.registry.errors import StoreFull
    from pipelines.registry.policy import CrossingPolicy
    from pipelines.registry.stores.file import FileStore
    store = FileStore("private", "record", Path(sys.argv[1]), CrossingPolicy(CrossingConfig()))
    store.put_bytes("small.json", b"{}", "metrics")
    # from here on no file may grow past 1 MiB: the volume is full for a 3 MiB object
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
    try:
        store.put_file("versions/model.pt", Path(sys.argv[2]), "model")
    except StoreFull as exc:
        print(exc)
        sys.exit(7)
    """
)


def test_running_out_of_space_part_way_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    source = tmp_path / "model.pt"
    source.write_bytes(os.urandom(3 * 2**20))
    result = subprocess.run(
        [sys.executable, "-c", _FILL, str(root), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 7, result.stdout + result.stderr
    assert "ran out of space writing versions/model.pt" in result.stdout
    assert "nothing was written" in result.stdout
    assert sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".locks" not in p.parts
    ) == [".meta/small.json.json", "small.json"]


def test_a_reader_never_sees_an_object_half_replaced(params: Params, tmp_path: Path) -> None:
    """The file store replaces data and metadata one after the other; a reader takes both
    together, so it never mistakes a write in progress for tampering."""
    import threading

    store = FileStore("private", "record", tmp_path / "store", CrossingPolicy(CrossingConfig()))
    store.put_bytes("aliases/production.json", b"0" * 64, "alias")
    done = threading.Event()
    failures: list[Exception] = []

    def read() -> None:
        while not done.is_set():
            try:
                store.read("aliases/production.json")
            except ChecksumMismatch as exc:
                failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for index in range(300):
        store.put_bytes("aliases/production.json", str(index).encode() * 64, "alias")
    done.set()
    reader.join()
    assert failures == []
