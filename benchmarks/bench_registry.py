"""Transfer rates and operation rates of the model registry, through the loopback S3 server.

``python -m benchmarks.bench_registry [--size-mb 200] [--repeats 3] [--ops 50] [--smoke]``

* ``transfer``: MB/s of uploading and downloading one ``--size-mb`` artifact through the
  S3-compatible loopback server as one ``PutObject`` (``single_part``) and as a multipart
  upload with the ``registry.transfer`` settings of ``params.yaml`` (``multipart``), and
  through the ``file`` store. Each figure is the registry's own call (``Store.put_file`` /
  ``Store.download``), so it includes what the registry adds: the sha256 of the bytes, the
  check of the stored object after the upload, and the re-hash before a download is used.
* ``operations_per_s``: registering content that is already a version (a no-op), resolving
  an alias in each cloud, and promoting (alternating two versions, each a ledger entry).
* ``replication``: replicating the default model (``models/candidate`` after ``make run``,
  else a stand-in of the same shape) to an empty public bucket, and rerunning it (every
  object re-hashed on the far side, nothing copied).

Writes ``benchmarks/results/registry.json``; ``--smoke`` uses a tiny artifact and few
operations and writes nothing (it checks that the benchmark runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3

from benchmarks.machine import machine_info
from pipelines.core.io import sha256_file, write_json
from pipelines.core.params import Params, RegistryConfig, StoreConfig, load_params
from pipelines.registry.candidates import REQUIRED
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.loopback import serve
from pipelines.registry.promotion import promote, resolve
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from pipelines.registry.replication import replicate
from pipelines.registry.stores.base import Store
from pipelines.registry.stores.open import open_store

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "benchmarks" / "results" / "registry.json"
_MB = 2**20


def _bucket(endpoint: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def _rates(store: Store, artifact: Path, scratch: Path, repeats: int) -> dict[str, Any]:
    """Upload and download MB/s of ``artifact`` through ``store``, best and median."""
    size_mb = artifact.stat().st_size / _MB
    digest = sha256_file(artifact)
    ups, downs = [], []
    for index in range(repeats):
        key = f"bench/{index}/artifact.bin"
        started = time.perf_counter()
        store.put_file(key, artifact, "artifact")
        ups.append(time.perf_counter() - started)
        dest = scratch / f"down-{index}.bin"
        started = time.perf_counter()
        store.download(key, dest, digest)
        downs.append(time.perf_counter() - started)
        dest.unlink()
        store.delete(key)

    def summary(seconds: list[float]) -> dict[str, Any]:
        return {
            "best_mb_per_s": round(size_mb / min(seconds), 1),
            "median_mb_per_s": round(size_mb / statistics.median(seconds), 1),
            "seconds": [round(s, 3) for s in seconds],
        }

    return {"upload": summary(ups), "download": summary(downs)}


def transfer(
    endpoint: str, registry_cfg: RegistryConfig, size_mb: int, repeats: int, scratch: Path
) -> dict[str, Any]:
    """Transfer rates: single-part and multipart S3, and the file store."""
    artifact = scratch / "artifact.bin"
    with open(artifact, "wb") as handle:
        for _ in range(size_mb):
            handle.write(os.urandom(_MB))
    single = registry_cfg.model_copy(
        update={
            "transfer": registry_cfg.transfer.model_copy(
                update={"multipart_threshold_mb": float(size_mb + 1)}
            )
        }
    )
    results: dict[str, Any] = {"artifact_mb": size_mb, "repeats": repeats}
    for name, cfg in (("s3_single_part", single), ("s3_multipart", registry_cfg)):
        url = f"s3://{_bucket(endpoint)}/bench"
        store = open_store(
            "bench", StoreConfig(url=url, role="record", endpoint_url=endpoint), cfg, scratch
        )
        results[name] = _rates(store, artifact, scratch, repeats)
        print(f"{name}: {results[name]}", flush=True)
    folder = open_store(
        "bench",
        StoreConfig(url=f"file:{scratch / 'file-store'}", role="record", min_free_mb=0),
        registry_cfg,
        scratch,
    )
    results["file"] = _rates(folder, artifact, scratch, repeats)
    print(f"file: {results['file']}", flush=True)
    results["multipart"] = registry_cfg.transfer.model_dump()
    artifact.unlink()
    return results


def _per_s(count: int, action: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for index in range(count):
        action(index)
    return round(count / (time.perf_counter() - started), 1)


def _stand_in(folder: Path, seed: int, model_mb: float) -> Path:
    """A candidate folder of the chain's shape, with random model and artifact bytes."""
    import hashlib
    import random

    rng = random.Random(seed)
    (folder / "optimized").mkdir(parents=True)
    (folder / "evaluation").mkdir()
    (folder / "model.pt").write_bytes(rng.randbytes(int(model_mb * _MB)))
    (folder / "metrics.json").write_text(json.dumps({"best_epoch": 1}))
    onnx = rng.randbytes(int(model_mb * _MB))
    (folder / "optimized" / "model.onnx").write_bytes(onnx)
    manifest = {
        "format": 1,
        "shipped": "onnxruntime-fp32",
        "artifacts": [
            {
                "name": "onnxruntime-fp32",
                "backend": "onnxruntime",
                "precision": "fp32",
                "file": "model.onnx",
                "sha256": hashlib.sha256(onnx).hexdigest(),
                "status": "shipped",
            }
        ],
    }
    (folder / "optimized" / "manifest.json").write_text(json.dumps(manifest))
    verdict = {"verdict": "pass", "blocked": False, "bootstrap": True}
    (folder / "evaluation" / "verdict.json").write_text(json.dumps(verdict))
    (folder / "evaluation" / "report.md").write_text("# gate\n")
    return folder


def _register(registry: Registry, candidate: Path) -> str:
    return register(
        registry.record,
        candidate,
        {"format": 1},
        lambda: pseudonym_key(registry.record),
        registry.cfg.crossing.id_fields,
    ).version.id


def operations(registry: Registry, scratch: Path, count: int) -> dict[str, Any]:
    """Operations per second of register (no-op), resolve and promote."""
    first = _stand_in(scratch / "ops-a", 1, 0.1)
    a = _register(registry, first)
    b = _register(registry, _stand_in(scratch / "ops-b", 2, 0.1))
    at = dt.datetime.now(dt.UTC)
    promote(registry, a, "production", "private", reason="bench", actor="bench", at=at)
    promote(registry, a, "production", "public", reason="bench", actor="bench", at=at)
    versions = (b, a)
    results = {
        "count": count,
        "register_no_op": _per_s(count, lambda _: _register(registry, first)),
        "resolve_private": _per_s(count, lambda _: resolve(registry, "production", "private")),
        "resolve_public": _per_s(count, lambda _: resolve(registry, "production", "public")),
        "promote_private": _per_s(
            count,
            lambda i: promote(
                registry,
                versions[i % 2],
                "production",
                "private",
                reason="bench",
                actor="bench",
                at=at,
            ),
        ),
    }
    print(f"operations per second: {results}", flush=True)
    return results


def _default_model(scratch: Path) -> tuple[Path, str]:
    candidate = ROOT / "models" / "candidate"
    if all((candidate / path).is_file() for path in REQUIRED):
        return candidate, "models/candidate"
    return _stand_in(scratch / "stand-in", 7, 1.0), "a stand-in of the chain's shape (no make run)"


def replication(params: Params, endpoint: str, scratch: Path, repeats: int) -> dict[str, Any]:
    """Seconds to replicate the default model to an empty bucket, and to rerun it."""
    candidate, what = _default_model(scratch)
    cold, warm = [], []
    size = sum(p.stat().st_size for p in candidate.rglob("*") if p.is_file())
    for index in range(repeats):
        registry = _registry(params, endpoint, scratch / f"replication-{index}")
        version = _register(registry, candidate)
        started = time.perf_counter()
        replicate(registry, version, "public")
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        replicate(registry, version, "public")
        warm.append(time.perf_counter() - started)
    results = {
        "model": what,
        "candidate_mb": round(size / _MB, 2),
        "first_seconds": round(min(cold), 3),
        "rerun_seconds": round(min(warm), 3),
    }
    print(f"replication: {results}", flush=True)
    return results


def _registry(params: Params, endpoint: str, folder: Path) -> Registry:
    stores = params.stores.model_copy(
        update={
            "private": StoreConfig(url=f"file:{folder / 'private'}", role="record"),
            "public": StoreConfig(
                url=f"s3://{_bucket(endpoint)}/registry",
                role="replica",
                region="us-east-1",
                encryption=params.stores.public.encryption,
                endpoint_url=endpoint,
            ),
        }
    )
    return open_registry(params.model_copy(update={"stores": stores}), folder)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write its results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ops", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; write nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size_mb, args.repeats, args.ops = 12, 1, 3
    params = load_params(ROOT / "params.yaml")
    # throwaway credentials for the loopback server, which knows no others
    os.environ["AWS_ACCESS_KEY_ID"] = f"bench{secrets.token_hex(4)}"
    os.environ["AWS_SECRET_ACCESS_KEY"] = secrets.token_hex(16)
    with serve() as endpoint, tempfile.TemporaryDirectory(prefix="recflow-bench-") as tmp:
        scratch = Path(tmp)
        results = {
            "machine": machine_info(),
            "benchmark": "pipelines.registry through the loopback S3 server (moto) on 127.0.0.1",
            "transfer": transfer(endpoint, params.registry, args.size_mb, args.repeats, scratch),
            "operations_per_s": operations(
                _registry(params, endpoint, scratch / "ops"), scratch, args.ops
            ),
            "replication": replication(params, endpoint, scratch, args.repeats),
        }
    if args.smoke:
        print("smoke run: nothing written")
        return 0
    write_json(RESULT_FILE, results)
    print(f"wrote {RESULT_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
