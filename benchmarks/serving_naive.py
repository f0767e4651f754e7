"""The naive server of the serving benchmark: FastAPI with pydantic models and torch eager.

What a first version usually looks like: the trained ``model.pt`` scored per request in
PyTorch, every item ranked with ``torch.topk``, the body checked by pydantic. Same API as
``recflow serve``'s ``POST /recommend`` (no tokens, no batching, no cache).

    python -m benchmarks.serving_naive --folder BUNDLE --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI
from pydantic import BaseModel, Field

from pipelines.model.saved import load_model
from pipelines.serving.items import ItemTable

FOLDER_ENV = "RECFLOW_NAIVE_FOLDER"


class RecommendRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=128)
    history: list[str] = Field(default_factory=list, max_length=500)
    k: int = Field(10, ge=1, le=100)


class Recommendation(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    model_version: str
    arm: str
    items: list[Recommendation]
    fallback: bool


def create_app() -> FastAPI:
    """The app for the bundle folder named by ``RECFLOW_NAIVE_FOLDER``."""
    torch.set_num_threads(1)
    folder = Path(os.environ[FOLDER_ENV])
    model = load_model(folder / "model.pt").eval()
    items = ItemTable.read(folder, model.spec.n_items)
    max_len = model.spec.max_len
    app = FastAPI()

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(request: RecommendRequest) -> RecommendResponse:
        known = [items.index[i] for i in request.history if i in items.index][-max_len:]
        padded = np.zeros((1, max_len), dtype=np.int64)
        if known:
            padded[0, max_len - len(known) :] = known
        with torch.no_grad():
            scores = model.score(torch.from_numpy(padded))[0]
            scores[0] = -torch.inf
            top = torch.topk(scores, min(request.k, items.n_items))
        return RecommendResponse(
            model_version="naive",
            arm="stable",
            items=[
                Recommendation(item_id=items.ids[i], score=s)
                for i, s in zip(top.indices.tolist(), top.values.tolist(), strict=True)
            ],
            fallback=False,
        )

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ[FOLDER_ENV] = str(args.folder.resolve())
    uvicorn.run(
        "benchmarks.serving_naive:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
