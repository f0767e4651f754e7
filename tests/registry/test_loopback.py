"""The loopback S3 server of the embedded default starts, serves the public store, and stops."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines.core.params import Params
from pipelines.registry.clouds import open_registry
from pipelines.registry.loopback import loopback_s3


def test_it_serves_the_loopback_stores_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = Params.model_validate(
        {
            "run": {"logical_date": "2026-11-22"},
            "stores": {"private": {"url": f"file:{tmp_path / 'private'}", "role": "record"}},
        }
    )
    with loopback_s3(params.stores) as server:
        assert server.endpoint.startswith("http://127.0.0.1:")
        assert server.env["RECFLOW_STORE_PUBLIC_ENDPOINT_URL"] == server.endpoint
        assert "RECFLOW_STORE_PRIVATE_ENDPOINT_URL" not in server.env
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        public = open_registry(params, tmp_path).store("public")
        public.put_bytes("hello.json", b"{}", "metrics")  # the bucket exists, the keys work
        assert public.list_keys() == ["hello.json"]
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2)


def test_it_runs_a_command_with_the_server_up(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text('run: {logical_date: "2026-11-22"}\n')
    probe = textwrap.dedent(
        """
        import os, urllib.request
        url = os.environ["RECFLOW_STORE_PUBLIC_ENDPOINT_URL"]
        assert urllib.request.urlopen(url + "/moto-api/").status == 200
        raise SystemExit(5)
        """
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.registry.loopback",
            "--params",
            str(tmp_path / "params.yaml"),
            "--",
            sys.executable,
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 5, result.stderr
