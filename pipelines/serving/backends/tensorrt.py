"""TensorRT engines on a CUDA GPU: built from the portable ONNX export, opened for serving.

Engines do not move across GPU architectures or TensorRT versions: the runner refuses an
engine built for another compute capability or version. ``tensorrt`` and ``torch`` are
imported inside the functions, so a CPU-only machine never loads them for this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipelines.core.params import OptimizeConfig
from pipelines.serving.backends.onnxruntime import Runner
from pipelines.serving.manifest import Artifact, ArtifactError, CudaDevice


def _calibration_batches(histories: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(histories), batch):
        yield np.ascontiguousarray(histories[start : start + batch])


def build_tensorrt_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    cfg: OptimizeConfig,
    max_len: int,
    calibration: np.ndarray | None,
    timing_cache: Path,
) -> None:
    """Build and serialize a TensorRT engine of the serving graph.

    Optimization profiles cover batch 1 / ``typical`` / ``max``; INT8 is calibrated on
    ``calibration`` (validation histories) with an entropy calibrator; the timing cache is
    read when it exists and written back, so rebuilds on the same GPU are fast.

    Raises:
        RuntimeError: The ONNX graph does not parse or the engine does not build.
    """
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.tensorrt.workspace_mb << 20)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    batches = cfg.tensorrt.profile
    profile.set_shape(
        "history", (batches.min, max_len), (batches.opt, max_len), (batches.max, max_len)
    )
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif precision == "int8":
        if calibration is None:
            raise RuntimeError("INT8 needs calibration sequences")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_calibration_profile(profile)

        samples = calibration

        class _Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.batches = _calibration_batches(samples, batches.opt)
                self.device: torch.Tensor | None = None

            def get_batch_size(self) -> int:
                return batches.opt

            def get_batch(self, names: Sequence[str]) -> list[int] | None:
                chunk = next(self.batches, None)
                if chunk is None:
                    return None
                self.device = torch.from_numpy(chunk).cuda()
                return [int(self.device.data_ptr())]

            def read_calibration_cache(self) -> bytes | None:
                return None

            def write_calibration_cache(self, cache: bytes) -> None:
                return None

        config.int8_calibrator = _Calibrator()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build a {precision} engine from {onnx_path}")
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))


def open_runner(entry: Artifact, path: Path) -> Runner:
    """A TensorRT engine on the current GPU (built for its compute capability)."""
    import tensorrt as trt
    import torch

    device = entry.device
    if not isinstance(device, CudaDevice):
        raise ArtifactError(f"artifact {entry.name}: a TensorRT engine needs a cuda device")
    here = tuple(torch.cuda.get_device_capability(0))
    built = tuple(device.compute_capability or ())
    if built != here or device.tensorrt != trt.__version__:
        raise ArtifactError(
            f"engine {path} was built for compute capability {built} with TensorRT "
            f"{device.tensorrt}; this GPU is {here} with TensorRT {trt.__version__}"
        )
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ArtifactError(f"{path} is not a TensorRT engine")
    context = engine.create_execution_context()
    dtypes = {"scores": torch.float32, "top_items": torch.int64, "top_scores": torch.float32}

    def run_engine(names: list[str], history: np.ndarray) -> list[np.ndarray]:
        batch = torch.from_numpy(history).cuda()
        context.set_input_shape("history", tuple(batch.shape))
        context.set_tensor_address("history", batch.data_ptr())
        outputs = {}
        for name, dtype in dtypes.items():
            shape = tuple(context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return [outputs[name].cpu().numpy() for name in names]

    return run_engine
