"""Fixtures of the rollout tier: a scratch project with a registry of two file stores (private
record, public replica), versions made from the tiny model's served folder, and a controller
context with small, fast rollout settings.

Versions differ by a name written into their gate verdict (the model is the same, so the same
version content would otherwise make the same id); faulty ones are built in ``faults.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.params import Params, load_params
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.promotion import promote
from pipelines.registry.publish import publish
from pipelines.rollout.context import Context
from tests.serving.conftest import served_folder, tiny_model, tiny_prepared

__all__ = ["served_folder", "tiny_model", "tiny_prepared"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AT = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)

# A p99 latency measured while other tests run beside this one (make test runs two workers)
# says how loaded the machine is, not how fast the candidate is: here the latency rule is a
# ceiling no rollout reaches, except where latency is what is under test (the ten-times-slower
# candidate of test_faults.py keeps the project's rule; test_analysis.py uses fixed numbers).
LOAD_PROOF_LATENCY = {"max": 1e9, "max_increase": 1e9, "max_relative_increase": 1e9}

# small windows on one server per fleet: a rollout takes seconds, the suite stays short
FAST_DEPLOY: dict[str, Any] = {
    "fleets": {
        "private": {"servers": 1, "workers": 1},
        "public": {"servers": 1, "workers": 1},
    },
    "replay": {"rate": 400.0, "concurrency": 4, "max_s": 20.0, "timeout_s": 5.0},
    "shadow": {"requests": 120},
    "canary": {"weights": [0.1, 0.5], "max_requests": 600},
    "analysis": {"min_requests": 30, "latency_p99_ms": LOAD_PROOF_LATENCY},
    "metrics": {"source": "scrape"},
    "max_holds": 2,
    "fleet_start_timeout_s": 120.0,
}


def write_project(root: Path, deploy: dict[str, Any] | None = None) -> Path:
    """``root/params.yaml``: the project's params with file stores and folders under ``root``."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["stores"] = {
        "private": {"url": f"file:{root / 'stores' / 'private'}", "role": "record"},
        "public": {"url": f"file:{root / 'stores' / 'public'}", "role": "replica"},
    }
    params["registry"]["cache"] = str(root / "cache")
    params["serve"]["request_log"]["dir"] = str(root / "requests")
    params["serve"]["reconcile_interval_s"] = 0.05
    merged = {**params["deploy"], **FAST_DEPLOY, **(deploy or {}), "run_dir": str(root / "deploy")}
    params["deploy"] = merged
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


class Project:
    """A scratch project: params, registry, the tiny model's held-out sessions."""

    def __init__(self, root: Path, prepared: Path, model: Path, deploy: dict[str, Any] | None):
        self.root = root
        self.params_file = write_project(root, deploy)
        self.prepared = prepared
        self.model = model

    @property
    def params(self) -> Params:
        return load_params(self.params_file)

    def registry(self) -> Registry:
        return open_registry(self.params, self.root)

    def context(self, clock: Any = None) -> Context:
        ctx = Context(
            params=self.params,
            params_file=self.params_file,
            root=self.root,
            prepared=self.prepared,
            actor="test:rollout",
        )
        if clock is not None:
            ctx.clock = clock
        return ctx

    def version(self, optimized: Path, name: str) -> str:
        """Register ``optimized`` as a gated version named ``name`` (candidate in both clouds)."""
        folder = self.root / "candidates" / name
        shutil.copytree(optimized, folder / "optimized")
        shutil.copy(self.model, folder / "model.pt")
        (folder / "evaluation").mkdir()
        # "outcome" is the gate's contract; "verdict" what the registry read before it
        verdict = {
            "outcome": "pass",
            "verdict": "pass",
            "blocked": False,
            "bootstrap": False,
            "name": name,
        }
        (folder / "evaluation" / "verdict.json").write_text(json.dumps(verdict))
        (folder / "metrics.json").write_text("{}")
        done = publish(self.registry(), folder, {"format": 1, "name": name}, actor="t", at=AT)
        return done.version.id

    def make_production(self, version: str, *clouds: str) -> None:
        """Point production at ``version`` in ``clouds`` (a stable version to roll out against)."""
        for cloud in clouds or ("private", "public"):
            promote(self.registry(), version, "production", cloud, reason="test", actor="t", at=AT)

    def production(self, cloud: str) -> str | None:
        from pipelines.registry.aliases import read_alias

        state = read_alias(self.registry().store(cloud), "production")
        return state.version if state else None

    def alias(self, name: str, cloud: str) -> str | None:
        from pipelines.registry.aliases import read_alias

        state = read_alias(self.registry().store(cloud), name)
        return state.version if state else None


@pytest.fixture
def make_project(tmp_path: Path, tiny_prepared: Path, tiny_model: Path) -> Any:
    """``make_project(deploy_overrides)``: a fresh scratch project."""

    def make(deploy: dict[str, Any] | None = None, name: str = "project") -> Project:
        root = tmp_path / name
        root.mkdir()
        return Project(root, tiny_prepared, tiny_model, deploy)

    return make
