"""Builders shared by the registry tests: candidate folders, params, store snapshots."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from pipelines.core.params import Params
from pipelines.registry.clouds import Registry
from pipelines.registry.stores.base import Store

SECRET = "s3cr3t-Do-Not-Log-7f1d0c9a2b"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_candidate(
    folder: Path,
    *,
    seed: int = 0,
    verdict: str = "pass",
    blocked: bool = False,
    model_bytes: int = 4096,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A candidate folder shaped like the chain's ``models/candidate`` (random model bytes)."""
    rng = random.Random(seed)
    optimized = folder / "optimized"
    evaluation = folder / "evaluation"
    for sub in (optimized, evaluation, folder / "plots", folder / "checkpoints"):
        sub.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(rng.randbytes(model_bytes))
    (folder / "checkpoints" / "last.pt").write_bytes(rng.randbytes(64))
    (folder / ".gitignore").write_text("/model.pt\n")
    (folder / "metrics.json").write_text(
        json.dumps(
            {
                "epochs_run": 7,
                "best_epoch": 5,
                "stopped_early": True,
                "best_valid": {"ndcg@10": 0.41},
                "test": {"ndcg@10": 0.40},
            }
        )
    )
    (folder / "plots" / "train.csv").write_text("epoch,valid_ndcg@10\n1,0.3\n2,0.4\n")
    (optimized / "model.onnx").write_bytes(rng.randbytes(2048))
    (optimized / "model.int8.onnx").write_bytes(rng.randbytes(1024))
    (optimized / "model.fp16.sm89.plan").write_bytes(rng.randbytes(512))
    artifacts = [
        {
            "name": "onnxruntime-fp32",
            "backend": "onnxruntime",
            "precision": "fp32",
            "file": "model.onnx",
            "sha256": _sha(optimized / "model.onnx"),
            "status": "shipped",
        },
        {
            "name": "onnxruntime-int8",
            "backend": "onnxruntime",
            "precision": "int8",
            "file": "model.int8.onnx",
            "sha256": _sha(optimized / "model.int8.onnx"),
            "status": "candidate",
        },
        {
            "name": "tensorrt-fp16",
            "backend": "tensorrt",
            "precision": "fp16",
            "file": "model.fp16.sm89.plan",
            "sha256": _sha(optimized / "model.fp16.sm89.plan"),
            "device": {"gpu": "L4", "compute_capability": [8, 9]},
            "versions": {"tensorrt": "10.3.0"},
            "status": "candidate",
        },
        {"name": "tensorrt-int8", "backend": "tensorrt", "precision": "int8", "status": "rejected"},
    ]
    manifest = {"format": 1, "shipped": "onnxruntime-fp32", "artifacts": artifacts}
    (optimized / "manifest.json").write_text(json.dumps(manifest, indent=2))
    verdict_doc = {"outcome": verdict, "blocked": blocked, "bootstrap": True, "checks": []}
    verdict_doc.update(extra or {})
    (evaluation / "verdict.json").write_text(json.dumps(verdict_doc, indent=2))
    (evaluation / "report.md").write_text(f"# Gate\n\nverdict: {verdict}\n")
    (evaluation / "report.html").write_text(f"<h1>Gate</h1><p>{verdict}</p>")
    return folder


def make_params(
    tmp: Path,
    *,
    endpoint: str | None,
    bucket: str | None,
    private_url: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Params:
    """Params with a private file store under ``tmp`` and a public S3 store at ``endpoint``."""
    public = (
        {
            "url": f"s3://{bucket}/registry",
            "role": "replica",
            "region": "us-east-1",
            "encryption": "AES256",
            "endpoint_url": endpoint,
        }
        if bucket
        else {"url": f"file:{tmp / 'public'}", "role": "replica"}
    )
    document: dict[str, Any] = {
        "run": {"logical_date": "2026-11-22"},
        "stores": {
            "private": {"url": private_url or f"file:{tmp / 'private'}", "role": "record"},
            "public": public,
        },
        "registry": {
            "cache": str(tmp / "cache"),
            "transfer": {"multipart_threshold_mb": 1, "multipart_chunksize_mb": 5},
            "retries": {"max_attempts": 2, "connect_timeout_s": 1, "read_timeout_s": 10},
        },
    }
    for section, values in (overrides or {}).items():
        document.setdefault(section, {}).update(values)
    return Params.model_validate(document)


def write_params(tmp: Path, params: Params) -> Path:
    """``params`` as a ``params.yaml`` in ``tmp``."""
    import yaml

    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
    return path


def snapshot(store: Store) -> dict[str, tuple[str | None, int, str]]:
    """Every object of ``store``: recorded sha256, size and the sha256 of its bytes now."""
    found = {}
    for key in store.list_keys():
        info = store.head(key)
        assert info is not None
        found[key] = (info.sha256, info.size, store.rehash(key))
    return found


def snapshots(registry: Registry) -> dict[str, Any]:
    """Snapshots of both clouds' stores."""
    return {cloud: snapshot(registry.store(cloud)) for cloud in ("private", "public")}


def publish_and_roll_out(
    registry: Registry, candidate: Path, lineage: dict[str, Any], **kw: Any
) -> Any:
    """The register step, then what a completed rollout (``recflow deploy``) does in the
    registry: production points at the version in both clouds."""
    from pipelines.registry.promotion import promote
    from pipelines.registry.publish import publish

    done = publish(registry, candidate, lineage, **kw)
    for cloud in ("private", "public"):
        promote(
            registry,
            done.version.id,
            "production",
            cloud,
            reason="rollout passed",
            actor=kw["actor"],
            at=kw["at"],
        )
    return done
