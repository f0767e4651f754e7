"""The optimize stage on a small trained model: artifacts, parity, manifest, serving runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipelines.core.contracts import schema_text
from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file
from pipelines.core.params import OptimizeConfig
from pipelines.data.sequences import left_pad, step_tokens
from pipelines.model.sasrec import ModelSpec, SASRec
from pipelines.model.saved import load_model
from pipelines.serving.artifacts import NoArtifactPassed, held_out_histories, optimize
from pipelines.serving.backends.onnxruntime import ort_session
from pipelines.serving.backends.selection import Capabilities
from pipelines.serving.graph.onnxruntime import build_onnxruntime_graph
from pipelines.serving.graph.torch_export import export_onnx
from pipelines.serving.manifest import (
    ArtifactError,
    ArtifactManifest,
    CpuDevice,
    CudaDevice,
    ModelSpecRecord,
    read_manifest,
)
from pipelines.serving.runtime import Recommender
from pipelines.stages.optimize import main

FAST = {
    "threads": 1,
    "top_k": 10,
    "parity": {"sequences": 64},
    "latency": {"batches": [1, 8], "warmup": 1, "iterations": 3},
}


def _cfg(**overrides: object) -> OptimizeConfig:
    return OptimizeConfig.model_validate({**FAST, **overrides})


@pytest.fixture(scope="module")
def optimized(
    tiny_model: Path, tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("optimized") / "optimized"
    metrics = out.parent / "optimize.json"
    optimize(_cfg(), tiny_model, tiny_prepared, out, metrics=metrics)
    return out


def test_manifest_lists_checked_artifacts_and_ships_fp32(optimized: Path, tiny_model: Path) -> None:
    manifest = json.loads((optimized / "manifest.json").read_text())
    assert manifest["schema_version"] == 3
    # the tiny model was trained with the default protocol
    assert manifest["protocol"] == {"mask_history": False, "ties": "index"}
    assert manifest["shipped"] == "onnxruntime-fp32"
    assert manifest["model_sha256"] == sha256_file(tiny_model)
    assert manifest["spec"] == load_model(tiny_model).spec.to_dict()
    assert "no CUDA GPU" in manifest["skipped"]["tensorrt"]
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    fp32 = by_name["onnxruntime-fp32"]
    assert fp32["status"] == "shipped"
    assert fp32["parity"]["passed"] and fp32["parity"]["max_abs_error"] < 1e-3
    assert fp32["parity"]["top10_overlap"] == 1.0
    assert fp32["sha256"] == sha256_file(optimized / fp32["file"])
    assert fp32["size_bytes"] == (optimized / fp32["file"]).stat().st_size
    assert fp32["device"] == {"type": "cpu", "int8_kernels": None}
    assert fp32["inputs"] == [
        {"name": "history", "dtype": "int64", "shape": ["batch", 20], "steps": "items"}
    ]
    assert fp32["outputs"] == [
        {
            "name": "scores",
            "dtype": "float32",
            "shape": ["batch", load_model(tiny_model).spec.n_items + 1],
        },
        {"name": "top_items", "dtype": "int64", "shape": ["batch", 10]},
        {"name": "top_scores", "dtype": "float32", "shape": ["batch", 10]},
    ]
    assert {"torch", "onnx", "onnxruntime"} <= set(fp32["versions"])
    assert by_name["onnxruntime-int8"]["precision"] == "int8"
    # the typed reader sees the same
    typed = read_manifest(optimized)
    assert typed.artifact().name == "onnxruntime-fp32" and typed.artifact().file == "model.onnx"


def test_manifest_schema_is_written_beside_it(optimized: Path) -> None:
    text = (optimized / "manifest.schema.json").read_text()
    assert text == schema_text(ArtifactManifest)
    schema = json.loads(text)
    assert schema["properties"]["schema_version"]["enum"] == [2, 3]
    assert "sha256 of the train stage" in schema["properties"]["model_sha256"]["description"]
    # the manifest's spec mirrors the model's spec field for field
    assert set(ModelSpecRecord.model_fields) == set(ModelSpec.__dataclass_fields__)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("top_k"), r"not a valid artifact manifest: top_k: Field required"),
        (
            lambda m: m["artifacts"][0].update(sha256=12),
            r"artifacts\.0\.sha256: Input should be a valid string",
        ),
        (
            lambda m: m["artifacts"][0].update(status="great"),
            r"artifacts\.0\.status: Input should be 'shipped', 'candidate' or 'rejected'",
        ),
        (lambda m: m.update(extra=1), r"extra: unknown field"),
        (
            lambda m: m.update(schema_version=1),
            r"schema version 1, but this code reads version 2 or version 3",
        ),
        (lambda m: m.clear(), r"schema_version: Field required"),
    ],
)
def test_invalid_manifest_is_refused_naming_the_problem(
    optimized: Path, tmp_path: Path, edit: object, message: str
) -> None:
    folder = _copy(optimized, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)  # type: ignore[operator]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=message):
        Recommender.load(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(
        ArtifactError, match=r"not a valid artifact manifest: not JSON \(key must be a string"
    ):
        Recommender.load(folder)


def test_recommender_opens_from_a_manifest_in_hand(optimized: Path, tmp_path: Path) -> None:
    folder = _copy(optimized, tmp_path)
    manifest = read_manifest(folder)
    (folder / "manifest.json").unlink()  # open() needs no file, only the manifest object
    recommender = Recommender.open(manifest, folder, threads=1)
    assert recommender.name == "onnxruntime-fp32" and recommender.manifest == manifest
    assert Recommender.open(manifest, folder, "onnxruntime-int8").precision == "int8"
    with pytest.raises(ArtifactError, match="lists no artifact named 'tensorrt-fp16'"):
        Recommender.open(manifest, folder, "tensorrt-fp16")


def test_latency_metrics_time_eager_beside_each_artifact(optimized: Path) -> None:
    metrics = json.loads((optimized.parent / "optimize.json").read_text())
    assert metrics["shipped"] == "onnxruntime-fp32"
    assert set(metrics["latency"]["torch-eager-fp32"]) == {"batch_1", "batch_8"}
    assert metrics["latency"]["onnxruntime-fp32"]["batch_8"]["p99_ms"] > 0
    manifest_text = (optimized / "manifest.json").read_text()
    assert "p50_ms" not in manifest_text  # timings never enter the artifact folder


def test_runtime_answers_like_the_pytorch_model(
    optimized: Path, tiny_model: Path, tiny_prepared: Path
) -> None:
    recommender = Recommender.load(optimized, threads=1)
    model = load_model(tiny_model)
    history = held_out_histories(tiny_prepared, model.spec, 32)
    expected = model.score(torch.from_numpy(history)).numpy()
    scores = recommender.scores(history)
    np.testing.assert_allclose(scores[:, 1:], expected[:, 1:], atol=1e-4)
    items, _ = recommender.recommend(history)
    assert items.shape == (32, 10) and items.dtype == np.int64
    assert np.array_equal(items[:, 0], expected[:, 1:].argmax(axis=1) + 1)
    cold = recommender.recommend(recommender.pad([[]]))[0]
    assert cold.shape == (1, 10) and (cold >= 1).all()


def test_export_is_deterministic(tiny_model: Path) -> None:
    model = load_model(tiny_model)
    assert export_onnx(model, 10) == export_onnx(model, 10)
    assert build_onnxruntime_graph(model, 10) == build_onnxruntime_graph(model, 10)


@pytest.mark.parametrize("graph", ["portable", "onnxruntime"])
def test_both_onnx_graphs_score_like_the_model(
    graph: str, tiny_model: Path, tiny_prepared: Path
) -> None:
    # the portable export is what TensorRT builds from, the other what ONNX Runtime serves
    model = load_model(tiny_model)
    build = export_onnx if graph == "portable" else build_onnxruntime_graph
    session = ort_session(build(model, 10), threads=1)
    history = held_out_histories(tiny_prepared, model.spec, 64)
    history = np.concatenate([history, np.zeros((2, model.spec.max_len), np.int64)])  # cold start
    scores, items, top = session.run(None, {"history": history})
    expected = model.score(torch.from_numpy(history)).numpy()
    np.testing.assert_allclose(scores[:, 1:], expected[:, 1:], atol=1e-4)
    assert np.isneginf(scores[:, 0]).all()
    assert items.shape == top.shape == (66, 10)
    np.testing.assert_allclose(np.take_along_axis(scores, items, axis=1), top)


@pytest.mark.parametrize(
    ("layers", "event_types", "repeat_term", "tie_embeddings"),
    [
        (1, False, False, True),
        (2, False, False, True),
        (3, False, False, True),
        (2, True, False, True),
        (2, False, True, True),
        (2, True, True, True),
        (2, False, True, False),
    ],
)
def test_serving_graph_matches_the_model_at_any_depth(
    layers: int, event_types: bool, repeat_term: bool, tie_embeddings: bool
) -> None:
    # the graph packs the real steps and fills padded places with a precomputed state: random
    # (not near-zero) weights and histories of every length from empty to full check both
    torch.manual_seed(layers)
    spec = ModelSpec(
        n_items=40,
        hidden=16,
        layers=layers,
        heads=2,
        max_len=12,
        n_categories=5,
        event_types=event_types,
        repeat_term=repeat_term,
        tie_embeddings=tie_embeddings,
    )
    model = SASRec(spec, torch.arange(41) % 6).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    rng = np.random.default_rng(layers)
    lengths = [0, 1, 2, 5, 11, 12, 12, 0, 7]
    history = left_pad([rng.integers(1, 41, n) for n in lengths], spec.max_len)
    if event_types:
        history = step_tokens(history, rng.integers(0, 3, history.shape), spec.n_items)
    expected = model.score(torch.from_numpy(history)).numpy()
    # the portable export (what TensorRT builds from) as well
    portable = ort_session(export_onnx(model, 10), threads=1).run(["scores"], {"history": history})
    np.testing.assert_allclose(portable[0][:, 1:], expected[:, 1:], rtol=1e-4, atol=1e-4)
    session = ort_session(build_onnxruntime_graph(model, 10), threads=1)
    scores = session.run(["scores"], {"history": history})[0]
    np.testing.assert_allclose(scores[:, 1:], expected[:, 1:], rtol=1e-4, atol=1e-4)
    # each row alone gives the same scores as in the batch
    alone = np.concatenate([session.run(["scores"], {"history": row[None]})[0] for row in history])
    np.testing.assert_allclose(alone, scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("vnni", [True, False])
def test_int8_weights_follow_the_cpu(
    vnni: bool, tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    # s8 weights for the u8s8 kernels of VNNI/AMX CPUs; u8 elsewhere (no 16-bit saturation)
    caps = Capabilities(onnxruntime_version="1.32.0", cpu_int8_dot=vnni)
    manifest = optimize(_cfg(), tiny_model, tiny_prepared, tmp_path / "out", caps=caps)
    int8 = manifest.artifact("onnxruntime-int8")
    assert int8.status == "candidate" and int8.parity and int8.parity.passed
    assert int8.device == CpuDevice(int8_kernels="u8s8" if vnni else "u8u8")
    graph = onnx.load(tmp_path / "out" / str(int8.file))
    weights = {t.data_type for t in graph.graph.initializer if t.name.endswith("_quantized")}
    assert weights == {onnx.TensorProto.INT8 if vnni else onnx.TensorProto.UINT8}


def test_gpu_artifact_that_cannot_run_here_is_rejected_with_its_device(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    # a GPU without TensorRT plans a torch.compile artifact; this CPU build of torch cannot
    # open it, so it is rejected with the reason and its file is not kept
    caps = Capabilities(cuda=True, gpu_name="NVIDIA A10", compute_capability=(8, 6))
    manifest = optimize(
        _cfg(onnxruntime_int8=False), tiny_model, tiny_prepared, tmp_path / "o", caps=caps
    )
    compiled = next(a for a in manifest.artifacts if a.name == "torch-compile-bf16")
    assert compiled.status == "rejected" and "does not load" in str(compiled.reason)
    assert compiled.device == CudaDevice(gpu="NVIDIA A10", compute_capability=(8, 6))
    assert manifest.shipped == "onnxruntime-fp32"
    assert not (tmp_path / "o" / "model.pt").exists()
    saved = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert saved["artifacts"][1]["device"] == {
        "type": "cuda",
        "gpu": "NVIDIA A10",
        "compute_capability": [8, 6],
        "tensorrt": None,
    }
    assert read_manifest(tmp_path / "o") == manifest


def test_rerun_gives_the_same_folder(
    optimized: Path, tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    again = tmp_path / "optimized"
    optimize(_cfg(), tiny_model, tiny_prepared, again)
    for name in ("manifest.json", "manifest.schema.json", "model.onnx", "model.int8.onnx"):
        assert (again / name).read_bytes() == (optimized / name).read_bytes(), name


def test_artifact_failing_parity_is_rejected_with_numbers(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    strict = {"max_abs_error": 1e-9, "min_top10_overlap": 1.0}
    cfg = _cfg(
        parity={
            "sequences": 64,
            "thresholds": {
                "fp32": {"max_abs_error": 1e-3, "min_top10_overlap": 0.99},
                "int8": strict,
            },
        }
    )
    manifest = optimize(cfg, tiny_model, tiny_prepared, tmp_path / "out")
    int8 = next(a for a in manifest.artifacts if a.name == "onnxruntime-int8")
    assert int8.status == "rejected" and int8.reason is not None
    assert int8.reason.startswith("onnxruntime-int8 rejected: max abs error")
    assert "> 1e-09 allowed" in int8.reason
    assert not (tmp_path / "out" / "model.int8.onnx").exists()
    assert manifest.shipped == "onnxruntime-fp32"
    assert read_manifest(tmp_path / "out") == manifest
    with pytest.raises(ArtifactError, match=r"artifact onnxruntime-int8 was rejected: .*1e-09"):
        Recommender.load(tmp_path / "out", "onnxruntime-int8")


def test_nan_model_is_never_shipped_and_nothing_is_written(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    saved = torch.load(tiny_model, weights_only=True)
    saved["model"]["norm.weight"] = torch.full_like(saved["model"]["norm.weight"], float("nan"))
    broken = tmp_path / "model.pt"
    torch.save(saved, broken)
    with pytest.raises(NoArtifactPassed, match="NaN or infinite scores"):
        optimize(_cfg(), broken, tiny_prepared, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_model_files_are_named(tiny_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        optimize(_cfg(), tmp_path / "absent.pt", tiny_prepared, tmp_path / "out")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(InputError, match="not a readable model file"):
        optimize(_cfg(), corrupt, tiny_prepared, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_of_other_data_is_refused(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    saved = torch.load(tiny_model, weights_only=True)
    from pipelines.model.sasrec import ModelSpec, SASRec

    spec = ModelSpec(
        **{**saved["spec"], "n_items": saved["spec"]["n_items"] + 5, "n_categories": 0}
    )
    other = tmp_path / "other.pt"
    torch.save({"model": SASRec(spec).state_dict(), "spec": spec.to_dict()}, other)
    with pytest.raises(InputError, match="trained on other prepared data"):
        optimize(_cfg(), other, tiny_prepared, tmp_path / "out")


def test_cli_exit_code_and_message(
    tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--model",
            str(tmp_path / "absent.pt"),
            "--prepared",
            str(tiny_prepared),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "absent.pt not found" in capsys.readouterr().err


def _copy(optimized: Path, tmp_path: Path) -> Path:
    target = tmp_path / "optimized"
    shutil.copytree(optimized, target)
    return target


def test_tampered_artifact_is_refused(optimized: Path, tmp_path: Path) -> None:
    folder = _copy(optimized, tmp_path)
    with (folder / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match=r"sha256 .* the file was changed"):
        Recommender.load(folder)


def test_missing_and_unloadable_artifacts_are_refused(optimized: Path, tmp_path: Path) -> None:
    folder = _copy(optimized, tmp_path)
    (folder / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"model.onnx is missing"):
        Recommender.load(folder)
    (folder / "model.onnx").write_bytes(b"garbage that is not ONNX")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"][0]["sha256"] = sha256_file(folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not load"):
        Recommender.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json not found"):
        Recommender.load(folder)


def test_wrong_output_shape_is_caught_on_the_first_request(
    optimized: Path, tiny_model: Path, tmp_path: Path
) -> None:
    folder = _copy(optimized, tmp_path)
    (folder / "model.onnx").write_bytes(export_onnx(load_model(tiny_model), 5))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"][0]["sha256"] = sha256_file(folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    recommender = Recommender.load(folder)
    with pytest.raises(ArtifactError, match=r"output top_items is int64\[1, 5\].*\[1, 10\]"):
        recommender.recommend(recommender.pad([[1, 2]]))
