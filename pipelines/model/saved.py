"""The train stage's ``model.pt``: weights, the model spec and the config they were trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipelines.core.errors import InputError
from pipelines.model.sasrec import ModelSpec, SASRec
from pipelines.model.training.metrics import ScoringProtocol


def _read(model_path: Path) -> dict[str, Any]:
    if not model_path.is_file():
        raise InputError(f"{model_path} not found (run the train stage first)")
    try:
        saved = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged archive
        raise InputError(f"{model_path} is not a readable model file: {exc}") from exc
    if not isinstance(saved, dict) or not {"model", "spec"} <= set(saved):
        raise InputError(f"{model_path} is not a model of the train stage (no model/spec)")
    return saved


def load_model(model_path: Path) -> SASRec:
    """Rebuild the trained model from the train stage's ``model.pt``.

    Raises:
        InputError: The file is missing, not a model of the train stage, or its weights do not
            fit its spec.
    """
    saved = _read(model_path)
    try:
        spec = ModelSpec(**saved["spec"])
        state = saved["model"]
        model = SASRec(spec, state.get("item_category"))
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"{model_path}: weights do not match the model spec: {exc}") from exc
    return model.eval()


def saved_protocol(model_path: Path) -> ScoringProtocol:
    """The protocol the model was selected and scored under (its training config's).

    Raises:
        InputError: As :func:`load_model`, or the saved config names an unknown protocol.
    """
    config = _read(model_path).get("config") or {}
    try:
        return ScoringProtocol(
            mask_history=config.get("mask_history", False), ties=config.get("ties", "index")
        )
    except ValueError as exc:
        raise InputError(f"{model_path}: unknown scoring protocol in its config: {exc}") from exc
