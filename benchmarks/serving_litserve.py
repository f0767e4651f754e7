"""LitServe serving the same ONNX artifact as ``recflow serve``: the server a user would pick
instead, with its own dynamic batching.

One API server process and one inference worker by default (LitServe moves requests between
them over a queue), ONNX Runtime with one thread, LitServe's batching up to 64 requests within
1 ms. Same API as ``recflow serve``'s ``POST /recommend`` (no tokens).

    python -m benchmarks.serving_litserve --folder BUNDLE --port 8002
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

from pipelines.serving.items import ItemTable
from pipelines.serving.runtime import Recommender


class RecommendAPI(ls.LitAPI):  # type: ignore[misc]
    """Item ids in, top-k item ids out, through the shipped ONNX artifact."""

    def __init__(self, folder: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder

    def setup(self, device: str) -> None:
        self.recommender = Recommender.load(self.folder, threads=1)
        self.items = ItemTable.read(self.folder, self.recommender.n_items)

    # no annotation on `request`: LitServe builds its endpoint from it, and a string
    # annotation (postponed evaluation) would make the body a query parameter
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        known = [self.items.index[i] for i in request.get("history", []) if i in self.items.index]
        row = self.recommender.pad([known])[0]
        return row, min(int(request.get("k", 10)), self.recommender.top_k)

    def batch(self, inputs: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, list[int]]:
        return np.stack([row for row, _ in inputs]), [k for _, k in inputs]

    def predict(self, batch: tuple[np.ndarray, list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        padded, ks = batch
        items, scores = self.recommender.recommend(padded)
        return [(items[i, :k], scores[i, :k]) for i, k in enumerate(ks)]

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
        items, scores = output
        return {
            "model_version": "litserve",
            "arm": "stable",
            "items": [
                {"item_id": self.items.ids[i], "score": s}
                for i, s in zip(items.tolist(), scores.tolist(), strict=True)
            ],
            "fallback": False,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--api-servers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="inference workers")
    args = parser.parse_args(argv)
    api = RecommendAPI(
        args.folder.resolve(), max_batch_size=64, batch_timeout=0.001, api_path="/recommend"
    )
    server = ls.LitServer(
        api, accelerator="cpu", workers_per_device=args.workers, timeout=30, fast_queue=True
    )
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=args.api_servers,
        log_level="warning",
        generate_client_file=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
