"""The project's DVC remote on S3 (``s3`` in ``.dvc/config``) through the S3-compatible server:
push and pull work, and a corrupted object on the remote is detected, never checked out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.registry.conftest import ACCESS_KEY
from tests.registry.helpers import SECRET

pytestmark = pytest.mark.slow


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_push_pull_and_a_corrupted_remote_object(
    tmp_path: Path, project_root: Path, s3_endpoint: str
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    )
    # the project's remote, as .dvc/config declares it; the endpoint is this machine's
    if "recflow-dvc" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="recflow-dvc")
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert _dvc(root, "init", "-q").returncode == 0
    shutil.copy(project_root / ".dvc" / "config", root / ".dvc" / "config")
    assert (
        _dvc(root, "remote", "modify", "--local", "s3", "endpointurl", s3_endpoint).returncode == 0
    )
    data = root / "events.csv"
    data.write_text("user,item\nu1,42\n")
    assert _dvc(root, "add", "events.csv").returncode == 0
    pushed = _dvc(root, "push", "-r", "s3")
    assert pushed.returncode == 0, pushed.stderr
    keys = [
        o["Key"]
        for o in client.list_objects_v2(Bucket="recflow-dvc", Prefix="cache/").get("Contents", [])
    ]

    def wipe() -> None:
        shutil.rmtree(root / ".dvc" / "cache")
        data.unlink(missing_ok=True)

    wipe()
    pulled = _dvc(root, "pull", "-r", "s3")
    assert pulled.returncode == 0, pulled.stderr
    assert data.read_text() == "user,item\nu1,42\n"

    md5 = (root / "events.csv.dvc").read_text().split("md5: ")[1].split()[0]
    key = f"cache/files/md5/{md5[:2]}/{md5[2:]}"
    assert key in keys
    client.put_object(Bucket="recflow-dvc", Key=key, Body=b"user,item\nu1,666\n")
    wipe()
    corrupted = _dvc(root, "pull", "-v", "-r", "s3")
    assert corrupted.returncode != 0
    assert "corrupted cache file" in corrupted.stdout + corrupted.stderr
    assert not data.exists()
