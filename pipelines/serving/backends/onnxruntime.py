"""ONNX Runtime on the CPU: sessions with every graph optimization, dynamic INT8, and the runner.

The INT8 variant quantizes the weights of every matrix product (the fused attention's
projection included) and the activations per call; it is kept only when it passes parity.
Its weights are signed (u8s8 kernels) on CPUs with 8-bit dot-product instructions (VNNI, AMX)
and unsigned (u8u8) elsewhere, where the u8s8 kernels sum in 16 bits and can saturate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.serving.manifest import Artifact, ArtifactError

Runner = Callable[[list[str], np.ndarray], list[np.ndarray]]


def ort_session(model: bytes | Path, threads: int | None) -> Any:
    """An ONNX Runtime CPU session with every graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def quantize_int8(model: Path, out: Path, *, signed_weights: bool) -> None:
    """Dynamic INT8 quantization of the MatMul and fused-attention weights.

    The activations are quantized to u8 per call; the attention scores and softmax stay fp32.

    Args:
        signed_weights: Quantize the weights to s8, for ONNX Runtime's u8s8 kernels: the fast
            ones on CPUs with VNNI or AMX. Without those instructions the u8s8 kernels sum
            pairs of products in 16 bits, which can saturate, so the weights are better u8.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the quantizer logs every tensor it leaves alone on the root logger, and advises its
    # pre-processing tool on every call (a warning about nothing wrong); its errors still raise
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            str(model),
            str(out),
            weight_type=QuantType.QInt8 if signed_weights else QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            # shape inference stops at ONNX Runtime's contrib operators (fused attention):
            # tensors it cannot type are float
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
    finally:
        logging.disable(logging.NOTSET)


def open_runner(entry: Artifact, path: Path, threads: int | None) -> Runner:
    """A runner of the ONNX artifact at ``path``: ``(output names, history) -> outputs``."""
    session = ort_session(path, threads)
    inputs = [node.name for node in session.get_inputs()]
    if inputs != ["history"]:
        raise ArtifactError(f"artifact {entry.name}: inputs {inputs}, expected ['history']")

    def run_onnx(names: list[str], history: np.ndarray) -> list[np.ndarray]:
        return list(session.run(names, {"history": history}))

    return run_onnx
