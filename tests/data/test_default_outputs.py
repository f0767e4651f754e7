"""The data stages write the same bytes on the default preset as before they moved to bounded
memory: generate, ingest, validate and prepare run as their commands on ``params.yaml`` and every
file they write is checked against ``golden/default_outputs.json``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "default_outputs.json"


def _run(*args: str | Path) -> None:
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_default_preset_outputs_are_byte_identical(tmp_path: Path) -> None:
    params = ROOT / "params.yaml"
    _run("pipelines.stages.generate", "--params", params, "--out", tmp_path / "source")
    _run(
        "pipelines.stages.ingest",
        "--params",
        params,
        "--source",
        tmp_path / "source",
        "--out",
        tmp_path / "raw",
    )
    _run(
        "pipelines.stages.validate",
        tmp_path / "raw",
        "--params",
        params,
        "--out",
        tmp_path / "validated",
        "--reports",
        tmp_path / "reports",
        "--quarantine",
        tmp_path / "quarantine",
        "--metrics",
        tmp_path / "validation.json",
    )
    _run(
        "pipelines.stages.prepare",
        "--params",
        params,
        "--validated",
        tmp_path / "validated",
        "--out",
        tmp_path / "prepared",
        "--metrics",
        tmp_path / "prepare.json",
    )
    expected = json.loads(GOLDEN.read_text())["files"]
    written = {
        name: digest
        for name, digest in _hashes(tmp_path).items()
        if not name.startswith("reports/") or name == "reports/result.json"
    }
    assert sorted(written) == sorted(expected), "the stages wrote other files than before"
    changed = [name for name in expected if written[name] != expected[name]]
    assert not changed, f"bytes changed on the default preset: {changed}"
