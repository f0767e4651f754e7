"""Fixtures of the serving tier: a tiny trained model as a served folder, and a test client.

The model comes from the model tier's fixtures (tiny synthetic preset, a few epochs), is
optimized with the fast fp32-only config and gets its item table beside the artifact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.core.params import ServeConfig
from pipelines.serving.artifacts import optimize
from pipelines.serving.items import write_item_table
from pipelines.serving.server import state as run_state
from pipelines.serving.server.sources import VersionFolder
from tests.model.conftest import FAST_OPTIMIZE, tiny_model, tiny_prepared

__all__ = ["tiny_model", "tiny_prepared"]

CLIENT = "client-token-for-tests"
ADMIN = "admin-token-for-tests"
PSEUDONYM_KEY = "pseudonym-key-for-tests-0123456789"


@pytest.fixture(scope="session")
def served_folder(
    tiny_model: Path, tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An optimized folder of the tiny model with its ``items.parquet``."""
    out = tmp_path_factory.mktemp("served") / "optimized"
    optimize(FAST_OPTIMIZE, tiny_model, tiny_prepared, out)
    write_item_table(tiny_prepared, out)
    return out


def serve_config(tmp: Path, **overrides: object) -> ServeConfig:
    """A ``serve`` section for tests: run folder and request log under ``tmp``."""
    base = {
        "run_dir": str(tmp / "run"),
        "reconcile_interval_s": 0.05,
        "admin_timeout_s": 20.0,
        "request_log": {"dir": str(tmp / "requests"), "window_s": 3600.0},
    }
    merged = {**base, **overrides}
    return ServeConfig.model_validate(merged)


def init_run(cfg: ServeConfig, folder: Path, version: str = "v1") -> None:
    """A run folder whose desired state serves ``folder`` as ``version``."""
    run_state.write_initial(
        cfg.run_dir,
        run_state.DesiredState(generation=1, stable=version, versions={version: str(folder)}),
    )


@pytest.fixture
def version_folder(served_folder: Path, tmp_path: Path) -> Path:
    """A version folder with the served folder as v1 and v2, and a tampered copy as v-bad."""
    root = tmp_path / "registry"
    reg = VersionFolder(root)
    reg.publish(served_folder, "v1")
    reg.publish(served_folder, "v2")
    bad = reg.publish(served_folder, "v-bad")
    onnx = bad / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-16] + bytes(16))
    return root
