"""The server's parts on their own: cache, routing, rate limit, version folder, item table, artifact
choice, batching, desired state, admin rules and start-up checks."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cachetools import TTLCache

from pipelines.core.errors import InputError
from pipelines.core.names import BadVersionName, check_version_name
from pipelines.registry.names import check_version_id
from pipelines.serving.backends.selection import Capabilities
from pipelines.serving.items import ITEMS_FILE, ItemTable, write_item_table
from pipelines.serving.manifest import ArtifactError
from pipelines.serving.server import admin as ops
from pipelines.serving.server import state as run_state
from pipelines.serving.server.batching import Batcher, ModelFailure
from pipelines.serving.server.bundle import choose_artifact
from pipelines.serving.server.launch import prepare_run
from pipelines.serving.server.pseudonyms import KeyedHash
from pipelines.serving.server.routing import RateLimiter, bucket, goes_to_canary, retry_after
from pipelines.serving.server.sources import SourceError, VersionFolder
from tests.serving.conftest import CLIENT, PSEUDONYM_KEY, serve_config


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_evicts_the_least_recently_used_and_expires() -> None:
    """The answer cache the service builds: LRU when full, a time to live on its clock."""
    clock = Clock()
    cache: TTLCache[str, int, float] = TTLCache(2, 10, timer=clock)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache["c"] = 3
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    clock.now = 5.0
    assert cache.get("a") == 1  # "c" is now the least recently used
    cache["d"] = 4
    assert cache.get("c") is None and cache.get("a") == 1
    clock.now = 10.5  # "a" was stored at 0 (reading it does not renew it), "d" at 5
    assert cache.get("a") is None and cache.get("d") == 4 and len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_the_service_cache_runs_on_the_service_clock_and_a_model_change_clears_it(
    tmp_path: Path,
) -> None:
    from pipelines.serving.server.metrics import Metrics
    from pipelines.serving.server.service import Service

    clock = Clock()
    cfg = serve_config(tmp_path, cache={"size": 2, "ttl_s": 10.0})
    service = Service(cfg, tmp_path / "run", Metrics(), clock=clock)
    service.cache[("v1", (), 5)] = (np.array([1]), np.array([1.0]))
    clock.now = 9.0
    assert service.cache.get(("v1", (), 5)) is not None
    clock.now = 10.0
    assert service.cache.get(("v1", (), 5)) is None


def test_canary_routing_is_sticky_and_monotone_in_the_weight() -> None:
    users = [f"u{i}" for i in range(5000)]
    assert [bucket(u) for u in users[:50]] == [bucket(u) for u in users[:50]]
    at_10 = {u for u in users if goes_to_canary(u, 0.10)}
    at_30 = {u for u in users if goes_to_canary(u, 0.30)}
    assert at_10 <= at_30  # raising the weight only adds users
    assert 0.08 < len(at_10) / len(users) < 0.12 and 0.27 < len(at_30) / len(users) < 0.33
    assert not any(goes_to_canary(u, 0.0) for u in users)
    assert all(goes_to_canary(u, 1.0) for u in users)
    assert isinstance(bucket("\ud800"), int)  # a lone surrogate cannot break routing


def test_rate_limiter_refills_per_token() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=2, clock=clock)
    assert [limiter.acquire("t") for _ in range(2)] == [0.0, 0.0]
    wait = limiter.acquire("t")
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == "1" and retry_after(2.1) == "3"
    assert limiter.acquire("other") == 0.0  # each token has its own bucket
    clock.now = 0.5
    assert limiter.acquire("t") == 0.0


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/abs", ".hidden", "", "a" * 65, "a b",
                                  "v1\x00", "ü"])  # fmt: skip
def test_bad_version_names_are_refused(name: str) -> None:
    with pytest.raises(BadVersionName, match="is not a version name"):
        check_version_name(name)
    with pytest.raises(BadVersionName, match="is not a version name"):
        VersionFolder(Path("versions")).fetch(name, Path("local"))


@pytest.mark.parametrize("version", ["0123456789abcdef", "f" * 16, "0" * 16])
def test_model_registry_version_ids_are_version_names(version: str) -> None:
    assert check_version_name(check_version_id(version)) == version


def test_version_folder_fetch_verifies_every_object(served_folder: Path, tmp_path: Path) -> None:
    versions = VersionFolder(tmp_path / "registry")
    versions.publish(served_folder, "v1")
    with pytest.raises(SourceError, match="exists already"):
        versions.publish(served_folder, "v1")
    local = versions.fetch("v1", tmp_path / "local")
    assert sorted(p.name for p in local.iterdir()) == sorted(
        p.name for p in served_folder.iterdir()
    )
    assert versions.fetch("v1", tmp_path / "local") == local  # reused
    stored = tmp_path / "registry" / "v1" / ITEMS_FILE
    original = stored.read_bytes()
    stored.write_bytes(original + b"x")
    shutil.rmtree(local)
    with pytest.raises(SourceError, match=f"object {ITEMS_FILE} has sha256 .* refused"):
        versions.fetch("v1", tmp_path / "local")
    assert not (tmp_path / "local" / "v1").exists()  # nothing half-fetched is left
    stored.write_bytes(original)
    (tmp_path / "registry" / "v1" / "manifest.json").unlink()
    with pytest.raises(SourceError, match=r"object manifest\.json is missing"):
        versions.fetch("v1", tmp_path / "local")
    with pytest.raises(SourceError, match="not in the registry"):
        versions.fetch("v7", tmp_path / "local")


def test_keyed_hash_is_stable_keyed_and_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    one = KeyedHash(PSEUDONYM_KEY.encode())
    assert one("alice") == one("alice") != one("bob")
    assert KeyedHash(b"another-key-of-16-bytes")("alice") != one("alice")
    monkeypatch.delenv("RECFLOW_PSEUDONYM_KEY", raising=False)
    with pytest.raises(InputError, match="RECFLOW_PSEUDONYM_KEY is not set"):
        KeyedHash.from_env()
    with pytest.raises(InputError, match="at least 16 bytes"):
        KeyedHash(b"short")


def test_item_table_follows_the_prepared_catalog(tiny_prepared: Path, tmp_path: Path) -> None:
    from pipelines.core.io import read_parquet

    write_item_table(tiny_prepared, tmp_path)
    first = (tmp_path / ITEMS_FILE).read_bytes()
    write_item_table(tiny_prepared, tmp_path)
    assert (tmp_path / ITEMS_FILE).read_bytes() == first  # the same bytes on rerun
    item_map = read_parquet(tiny_prepared / "item_map.parquet", "map").to_pandas()
    table = ItemTable.read(tmp_path, len(item_map))
    row = item_map.iloc[3]
    assert table.ids[row.item_idx] == row.item_id
    assert table.categories[row.item_idx] == row.category
    assert table.prices[row.item_idx] == pytest.approx(row.price)
    assert sorted(table.by_popularity.tolist()) == list(range(1, len(item_map) + 1))
    shares = table.popularity_share[table.by_popularity]
    assert np.all(np.diff(shares) <= 0)  # most popular first
    with pytest.raises(InputError, match=r"indices 1\.\.\d+"):
        ItemTable.read(tmp_path, len(item_map) + 1)
    with pytest.raises(InputError, match=r"items\.parquet not found.*run it again"):
        ItemTable.read(tmp_path / "elsewhere", 5)
    with pytest.raises(InputError, match=r"item map not found.*run the prepare stage"):
        write_item_table(tmp_path / "no-prepared", tmp_path)


def _manifest(*artifacts: dict[str, Any], shipped: str) -> dict[str, Any]:
    return {"shipped": shipped, "artifacts": list(artifacts)}


CPU = {"name": "onnxruntime-fp32", "backend": "onnxruntime", "device": {"type": "cpu"}}
TRT = {
    "name": "tensorrt-fp16",
    "backend": "tensorrt",
    "device": {"type": "cuda", "compute_capability": [9, 0], "tensorrt": "10.1"},
}


def test_the_artifact_suits_the_machine() -> None:
    h100 = Capabilities(cuda=True, compute_capability=(9, 0), tensorrt_version="10.1")
    a100 = Capabilities(cuda=True, compute_capability=(8, 0), tensorrt_version="10.1")
    manifest = _manifest(TRT, CPU, shipped="tensorrt-fp16")
    assert choose_artifact(manifest, lambda: h100) == "tensorrt-fp16"
    assert choose_artifact(manifest, lambda: a100) == "onnxruntime-fp32"
    assert choose_artifact(manifest, lambda: Capabilities()) == "onnxruntime-fp32"

    def no_probe() -> Capabilities:
        raise AssertionError("a CPU-only manifest must not probe the GPU")

    assert choose_artifact(_manifest(CPU, shipped="onnxruntime-fp32"), no_probe)
    with pytest.raises(ArtifactError, match="no artifact runs on this machine"):
        choose_artifact(_manifest(TRT, shipped="tensorrt-fp16"), lambda: a100)


def test_batcher_groups_concurrent_requests_into_one_call() -> None:
    calls: list[int] = []

    def model(padded: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(padded))
        items = np.repeat(padded[:, -1:], k, axis=1)
        return items, items.astype(np.float32)

    async def scenario(enabled: bool) -> list[int]:
        batcher = Batcher(model, max_batch=64, max_wait_s=0.01, deadline_s=60.0, enabled=enabled)
        batcher.start()
        futures = [batcher.submit(np.array([0, i]), 3) for i in range(40)]
        answers = await asyncio.gather(*futures)
        await batcher.close()
        return [int(items[0]) for items, _ in answers]

    assert asyncio.run(scenario(True)) == list(range(40))  # each request its own row
    assert calls == [40]
    calls.clear()
    assert asyncio.run(scenario(False)) == list(range(40))
    assert calls == [1] * 40


def test_batcher_fails_a_batch_that_misses_its_deadline() -> None:
    # the model call cannot end before the deadline: it waits until the failure is seen
    release = threading.Event()
    called = threading.Event()

    def stuck(padded: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        called.set()
        release.wait(timeout=60)
        items = np.ones((len(padded), k), dtype=np.int64)
        return items, items.astype(np.float32)

    async def scenario() -> str:
        batcher = Batcher(stuck, max_batch=8, max_wait_s=0, deadline_s=0.05)
        batcher.start()
        try:
            await batcher.submit(np.array([1]), 1)
        except ModelFailure as failure:
            return failure.kind
        finally:
            release.set()
            await batcher.close()
        return "answered"

    assert asyncio.run(scenario()) == "deadline"
    assert called.is_set()


def _state(**kw: Any) -> run_state.DesiredState:
    versions = {"v1": "/m/v1", "v2": "/m/v2", "v3": "/m/v3"}
    return run_state.DesiredState(generation=1, stable="v1", versions=versions, **kw)


def test_admin_rules() -> None:
    state = ops.set_canary("v2", 0.2)(_state())
    assert (state.canary, state.canary_weight) == ("v2", 0.2)
    promoted = ops.promote(None)(state)
    assert promoted.stable == "v2" and promoted.previous == ("v1",) and promoted.canary is None
    assert promoted.served() == {"v2", "v1"}  # the previous stable stays loaded
    back = ops.rollback(promoted)
    assert back.stable == "v1" and back.previous == ()
    assert ops.set_canary(None, 0.5)(state).canary is None
    with pytest.raises(ops.AdminRefused, match="v9 is not loaded"):
        ops.start_shadow("v9")(_state())
    with pytest.raises(ops.AdminRefused, match="already stable"):
        ops.promote("v1")(_state())


def test_desired_state_round_trips_and_is_checked(tmp_path: Path) -> None:
    run_state.write_initial(tmp_path, _state())
    changed = run_state.update_desired(tmp_path, ops.set_canary("v3", 0.5))
    assert changed.generation == 2 and run_state.read_desired(tmp_path) == changed
    with pytest.raises(run_state.StateError, match="names version v8 but has no folder"):
        run_state.DesiredState.from_json({**_state().to_json(), "canary": "v8"})
    (tmp_path / run_state.DESIRED).write_text("{")
    with pytest.raises(run_state.StateError, match="not readable JSON"):
        run_state.read_desired(tmp_path)
    with pytest.raises(run_state.StateError, match="not found"):
        run_state.read_desired(tmp_path / "nowhere")


def test_a_worker_report_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    run_state.write_report(tmp_path, {"pid": os.getpid(), "generation": 3})
    (tmp_path / run_state.WORKERS / "999999999.json").write_text('{"pid": 999999999}')
    assert [r["pid"] for r in run_state.read_reports(tmp_path)] == [os.getpid()]


def test_start_up_refuses_what_cannot_serve(
    served_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = serve_config(tmp_path)
    monkeypatch.delenv("RECFLOW_API_TOKENS", raising=False)
    with pytest.raises(InputError, match="RECFLOW_API_TOKENS is not set"):
        prepare_run(cfg, model=served_folder, versions=None, version=None, workers=1)
    monkeypatch.setenv("RECFLOW_API_TOKENS", CLIENT)
    monkeypatch.delenv("RECFLOW_PSEUDONYM_KEY", raising=False)
    with pytest.raises(InputError, match="RECFLOW_PSEUDONYM_KEY"):
        prepare_run(cfg, model=served_folder, versions=None, version=None, workers=1)
    monkeypatch.setenv("RECFLOW_PSEUDONYM_KEY", PSEUDONYM_KEY)
    with pytest.raises(InputError, match="nothing to serve"):
        prepare_run(cfg, model=None, versions=None, version=None, workers=1)
    bare = tmp_path / "bare"
    shutil.copytree(served_folder, bare)
    (bare / ITEMS_FILE).unlink()
    with pytest.raises(InputError, match=r"items\.parquet not found"):
        prepare_run(cfg, model=bare, versions=None, version=None, workers=1)
    desired = prepare_run(cfg, model=served_folder, versions=None, version="dev", workers=1)
    assert desired.stable == "dev" and run_state.read_desired(cfg.run_dir) == desired
    settings = (cfg.run_dir / run_state.SETTINGS).read_text()
    assert CLIENT not in settings and PSEUDONYM_KEY not in settings  # secrets stay in env


def test_recflow_serve_is_a_command_with_clear_start_up_errors(
    served_folder: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from pipelines import cli
    from tests.serving.live import PROJECT_ROOT, write_params

    assert cli._entries()["serve"] == "pipelines.commands.serve"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECFLOW_")}
    params = write_params(tmp_path)
    base = [sys.executable, "-m", "pipelines.cli", "serve", "--params", str(params)]
    shown = subprocess.run([*base, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--model" in shown.stdout and "--registry" in shown.stdout
    refused = subprocess.run(
        [*base, "--model", str(served_folder)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "RECFLOW_API_TOKENS is not set" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_model_that_answers_non_finite_scores_fails_the_call(served_folder: Path) -> None:
    import numpy as np

    from pipelines.serving.manifest import ArtifactError
    from pipelines.serving.server.bundle import load_bundle

    bundle = load_bundle("v1", served_folder, threads=1)
    padded = bundle.recommender.pad([[1, 2], [3]])
    _, scores = bundle.answer(padded, 5)
    assert np.isfinite(scores).all()
    real = bundle.recommender.recommend

    def nan_for_the_second_row(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        top, values = real(history)
        values = values.copy()
        values[1:] = np.nan
        return top, values

    bundle.recommender.recommend = nan_for_the_second_row  # type: ignore[method-assign]
    with pytest.raises(ArtifactError, match="non-finite scores for 1 of 2 request"):
        bundle.answer(padded, 5)
