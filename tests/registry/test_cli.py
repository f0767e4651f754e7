"""``recflow register`` and ``recflow registry ...`` end to end, as processes, over real HTTP to
the S3-compatible server: a run's story from registration to rollback, bad input that changes
no store, and no credential in any output even at DEBUG level."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.names import file_key
from tests.registry.conftest import ACCESS_KEY
from tests.registry.helpers import SECRET, make_candidate, make_params, snapshots, write_params
from tests.registry.test_lineage import AIRFLOW, LOCK

pytestmark = pytest.mark.slow


class Project:
    """A scratch project folder with a candidate, dvc.lock and params; runs ``recflow``."""

    def __init__(self, root: Path, endpoint: str, bucket: str) -> None:
        self.root = root
        self.bucket = bucket
        self.endpoint = endpoint
        self.params = make_params(
            root, endpoint=endpoint, bucket=bucket, private_url="file:stores/private"
        )
        write_params(root, self.params)
        (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))
        (root / "metrics").mkdir()
        (root / "metrics" / "validation.json").write_text(json.dumps({"success": True}))
        self.outputs: list[str] = []

    def candidate(self, seed: int, **kwargs: Any) -> None:
        folder = self.root / "models" / "candidate"
        shutil.rmtree(folder, ignore_errors=True)
        make_candidate(folder, seed=seed, **kwargs)

    def registry(self) -> Registry:
        return open_registry(self.params, self.root)

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            cwd=self.root,
            env={
                **os.environ,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_EC2_METADATA_DISABLED": "true",
                "RECFLOW_LOG_LEVEL": "DEBUG",
                **(env or {}),
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.outputs.append(result.stdout + result.stderr)
        return result

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = self.run(*args, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        return result.stdout

    def history(self, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.ok("registry", "history", "--json", *args))
        return rows

    def roll_out(self, version: str) -> None:
        """What a completed rollout (``recflow deploy``) does in the registry: production."""
        for cloud in ("private", "public"):
            self.ok(
                "registry", "promote", version, "--alias", "production", "--cloud", cloud,
                "--reason", "rollout passed",
            )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, s3_endpoint: str, bucket: str) -> Project:
    return Project(tmp_path, s3_endpoint, bucket)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Project:
    """A project with one version registered and promoted, and a backup; shared by the
    bad-input cases, each of which must leave it as it was."""
    name = f"recflow-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    ).create_bucket(Bucket=name)
    project = Project(tmp_path_factory.mktemp("registered"), s3_endpoint, name)
    project.candidate(seed=1)
    project.ok("register")
    project.roll_out(json.loads(project.ok("registry", "list", "--json"))[0]["id"])
    project.ok("registry", "backup", "file:backup")
    return project


def test_a_registry_story_and_no_secret_in_any_output(project: Project) -> None:
    # the DAG's register task after a passing gate
    project.candidate(seed=1)
    project.ok("register", env=AIRFLOW)
    (first,) = json.loads(project.ok("registry", "list", "--json"))
    v1 = first["id"]
    assert first["gate"]["verdict"] == "pass"
    history = project.history()
    # the gated version is the candidate in both clouds; production waits for its rollout
    assert [(h["seq"], h["cloud"], h["alias"], h["to_version"]) for h in history] == [
        (1, "private", "candidate", v1),
        (2, "public", "candidate", v1),
    ]
    assert history[0]["actor"] == f"airflow:recsys_retrain/{AIRFLOW['AIRFLOW_CTX_DAG_RUN_ID']}"
    assert history[0]["run"]["dag_id"] == "recsys_retrain"
    assert history[0]["reason"] == "gate verdict pass (first-model rule)"
    shown = json.loads(project.ok("registry", "show", v1, "--cloud", "public", "--json"))
    assert shown["lineage"]["airflow"]["run_id"] == AIRFLOW["AIRFLOW_CTX_DAG_RUN_ID"]
    assert shown["lineage"]["dvc"]["model"]["md5"] == "ddd"
    assert shown["artifacts"][0]["name"] == "onnxruntime-fp32"

    # the same candidate again, by hand: nothing new
    project.ok("register")
    assert len(project.history()) == 2

    # a blocked candidate is recorded but serves nowhere
    project.candidate(seed=9, verdict="fail", blocked=True)
    project.ok("register")
    assert len(json.loads(project.ok("registry", "list", "--json"))) == 2
    assert len(json.loads(project.ok("registry", "list", "--cloud", "public", "--json"))) == 1
    assert len(project.history()) == 2

    # its rollout completes
    project.roll_out(v1)

    # tomorrow's run
    project.candidate(seed=2)
    project.ok("register")
    project.roll_out(
        project.history("--alias", "candidate", "--cloud", "private")[-1]["to_version"]
    )
    history = project.history("--alias", "production", "--cloud", "public")
    v2 = history[-1]["to_version"]
    assert [h["to_version"] for h in history] == [v1, v2] and v2 != v1

    # what served in the public cloud when
    at_first, at_second = history[0]["at"], history[1]["at"]
    out = project.ok(
        "registry", "history", "--alias", "production", "--cloud", "public", "--at", at_first
    )
    assert f"production in public at {at_first}: {v1}" in out
    out = project.ok(
        "registry", "history", "--alias", "production", "--cloud", "public", "--at", at_second
    )
    assert f": {v2}" in out
    out = project.ok(
        "registry", "history", "--alias", "production", "--cloud", "public", "--at", "2020-01-01"
    )
    assert "production in public at 2020-01-01T00:00:00+00:00: not set" in out

    # a manual rollback in the public cloud, then a canary
    out = project.ok(
        "registry",
        "rollback",
        "--alias",
        "production",
        "--cloud",
        "public",
        "--reason",
        "p99 regression in the canary",
    )
    assert f"-> {v1}" in out and "rollback" in out
    project.ok(
        "registry", "promote", v2, "--alias", "canary", "--cloud", "public", "--reason", "canary 5%"
    )
    public = project.history("--cloud", "public")
    assert [(h["alias"], h["action"], h["to_version"]) for h in public] == [
        ("candidate", "promote", v1),
        ("production", "promote", v1),
        ("candidate", "promote", v2),
        ("production", "promote", v2),
        ("production", "rollback", v1),
        ("canary", "promote", v2),
    ]
    assert public[4]["rolls_back"] == history[1]["seq"]

    # every object re-hashed: intact, then one tampered with in the public cloud
    assert "0 problem(s)" in project.ok("registry", "verify")
    client = boto3.client(
        "s3",
        endpoint_url=project.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    )
    key = f"registry/{file_key(v1, 'model.pt')}"
    meta = client.head_object(Bucket=project.bucket, Key=key)["Metadata"]
    client.put_object(Bucket=project.bucket, Key=key, Body=b"swapped", Metadata=meta)
    result = project.run("registry", "verify")
    assert result.returncode == 1
    assert f"MISMATCH versions/{v1}/files/model.pt in store 'public'" in result.stdout
    result = project.run("registry", "verify", v1, "--cloud", "private")
    assert result.returncode == 0, result.stdout

    # a rerun of replication repairs it
    project.ok("registry", "replicate", v1)
    assert "0 problem(s)" in project.ok("registry", "verify")

    # backup
    out = project.ok("registry", "backup", "file:backup")
    assert "backed up" in out and (project.root / "backup" / "backup.json").is_file()

    # the secret never appears, even with DEBUG logs of boto3 and botocore
    everything = "\n".join(project.outputs)
    assert "DEBUG" in everything
    assert SECRET not in everything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("registry", "show", "../../etc/passwd"),
            "is not a version id (16 lowercase hex digits) (path",
        ),
        (
            ("registry", "show", "0123456789abcdef"),
            "no version 0123456789abcdef in store 'private'",
        ),
        (("registry", "show", "abc\x07def0123456789"), "control characters are not allowed"),
        (
            (
                "registry",
                "promote",
                "0123456789abcdef",
                "--alias",
                "production",
                "--cloud",
                "public",
                "--reason",
                "r",
            ),
            "no version 0123456789abcdef in store 'private'",
        ),
        (
            (
                "registry",
                "promote",
                "0123456789abcdef",
                "--alias",
                "Prod/../x",
                "--cloud",
                "public",
                "--reason",
                "r",
            ),
            "is not an alias name",
        ),
        (
            (
                "registry",
                "promote",
                "0123456789abcdef",
                "--alias",
                "production",
                "--cloud",
                "azure",
                "--reason",
                "r",
            ),
            "is not a cloud",
        ),
        (
            ("registry", "rollback", "--alias", "canary", "--cloud", "private", "--reason", "r"),
            "'canary' is not set",
        ),
        (
            (
                "registry",
                "rollback",
                "--alias",
                "production",
                "--cloud",
                "private",
                "--reason",
                "r",
            ),
            "no earlier known-good",
        ),
        (("registry", "history", "--at", "yesterday"), "is not an ISO date or date-time"),
        (("registry", "restore", "file:backup"), "restore needs an empty store of record"),
        (("registry", "backup", "gs://elsewhere"), "must start with s3:// or file:"),
    ],
)
def test_bad_input_names_the_problem_and_changes_no_store(
    registered: Project, args: tuple[str, ...], message: str
) -> None:
    before = snapshots(registered.registry())
    result = registered.run(*args, env={"RECFLOW_LOG_LEVEL": "INFO"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshots(registered.registry()) == before


def test_an_unreachable_public_store_fails_the_register_step_naming_it(project: Project) -> None:
    from pipelines.registry.loopback import free_port

    project.candidate(seed=1)
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = project.run(
        "register",
        env={"RECFLOW_STORE_PUBLIC_ENDPOINT_URL": endpoint, "RECFLOW_LOG_LEVEL": "INFO"},
    )
    assert result.returncode == 2
    assert f"at {endpoint}): the endpoint did not answer" in result.stderr
    assert "Traceback" not in result.stderr
    # the record has the version; the next run completes the rest
    assert len(json.loads(project.ok("registry", "list", "--json"))) == 1
    assert project.history() == []
    project.ok("register")
    assert len(project.history()) == 2


def _closed_pipe() -> int:
    """The writing end of a pipe whose reader has gone."""
    read, write = os.pipe()
    os.close(read)
    return write


def test_a_reader_that_goes_away_ends_the_output_quietly(registered: Project) -> None:
    (first,) = json.loads(registered.ok("registry", "list", "--json"))
    command = [sys.executable, "-m", "pipelines.cli", "registry", "show", first["id"]]
    write = _closed_pipe()
    try:
        result = subprocess.run(
            command, cwd=registered.root, stdout=write, stderr=subprocess.PIPE, timeout=300
        )
    finally:
        os.close(write)
    assert result.returncode == 141
    assert result.stderr == b""
    # the same through a shell pipeline, as a reader types it
    piped = subprocess.run(
        ["bash", "-c", f"{shlex.join(command)} | head -2"],
        cwd=registered.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # why the version was made comes first (registered by hand: no drift started it)
    trigger, version = piped.stdout.splitlines()
    assert trigger == "trigger: manual or schedule", piped.stdout
    assert version.startswith(f"version {first['id']} in private"), piped.stdout
    assert piped.stderr == ""


def test_verify_skips_a_loopback_replica_whose_server_is_not_running(project: Project) -> None:
    project.candidate(seed=1)
    project.ok("register")
    document = yaml.safe_load((project.root / "params.yaml").read_text())
    document["stores"]["public"].update(endpoint_url=None, loopback=True)
    (project.root / "laptop.yaml").write_text(yaml.safe_dump(document))
    laptop = ("registry", "--params", "laptop.yaml")

    result = project.run(*laptop, "verify")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "not verified: store 'public'" in result.stdout
    assert "which is not running" in result.stdout
    assert "verified 1 version(s) in private: 0 problem(s)" in result.stdout
    # asked for by name, it is an error
    named = project.run(*laptop, "verify", "--cloud", "public")
    assert named.returncode == 2
    assert "loopback S3 server, which is not running" in named.stderr
    # and a problem in the private record still fails the check
    (version,) = json.loads(project.ok("registry", "list", "--json"))
    victim = project.root / "stores" / "private" / file_key(version["id"], "model.pt")
    victim.write_bytes(b"swapped")
    broken = project.run(*laptop, "verify")
    assert broken.returncode == 1
    assert "not verified: store 'public'" in broken.stdout
    assert f"MISMATCH versions/{version['id']}/files/model.pt" in broken.stdout
