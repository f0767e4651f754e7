"""The ``train`` section: SASRec and its training loop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.core.params.base import StrictModel


class TrainConfig(StrictModel):
    """SASRec and its training loop (the ``train`` section of ``params.yaml``)."""

    hidden: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    max_len: int = Field(50, ge=2)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    category_feature: bool = True
    # embed each step's event type (view / add_to_cart / purchase) beside its item
    event_type_feature: bool = False
    # a learned score offset for items already in the history: the model learns whether users
    # repeat (repeat purchases) or never do (films rated once) (pipelines/model/sasrec.py)
    repeat_term: bool = False
    # score with the input item embedding (true, as SASRec) or an output item table of its own
    tie_embeddings: bool = True
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    # share of the full-softmax target mass spread over all items (0: plain cross-entropy)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # decay of an exponential moving average of the weights, updated every optimizer step and
    # evaluated and saved in place of the raw weights (0: off; pipelines/model/training/averaging)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(256, ge=1)
    # None: one training window per sequence (its newest steps); an integer: also the windows
    # ending every `window_stride` steps further back, so long histories are used in full
    window_stride: int | None = Field(None, ge=1)
    # "all": every target of every window, so with window_stride < max_len a step is trained
    # several times per epoch; "newest": a window trains only the targets no older window holds,
    # so each step once per epoch, with at least max_len - window_stride steps of context
    window_targets: Literal["all", "newest"] = "all"
    epochs: int = Field(200, ge=1)
    # evaluations without improvement of validation NDCG@10 before stopping
    patience: int = Field(10, ge=1)
    grad_clip: float | None = Field(1.0, gt=0.0)
    # None: the run's seed
    seed: int | None = None
    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax"
    num_negatives: int = Field(256, ge=1)
    negative_sampler: Literal["uniform", "popularity"] = "popularity"
    # exclude the user's history items from the ranking (for catalogues without repeats)
    mask_history: bool = False
    # order of equal scores in the ranking: "index" (the more popular item first) or "topk"
    # (torch.topk's order, as RecBole's evaluator; pipelines/model/ranking.py)
    ties: Literal["index", "topk"] = "index"
    eval_every: int = Field(1, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    # per-epoch validation scores a fixed sample of this many validation users, drawn once with
    # the run's seed (None: every user); the final test and the gate score every user
    valid_users: int | None = Field(20_000, ge=2)
    # torch intra-op threads per process; None: torch's default
    threads: int | None = Field(None, ge=1)
    progress: bool = True
    # torchrun workers on one machine (dvc.yaml and the DAG launch this many)
    nproc_per_node: int = Field(2, ge=1, le=64)

    def model_fields_differ(self, other: TrainConfig) -> list[str]:
        """Fields that change the model or the data it sees (a checkpoint cannot continue)."""
        shape = (
            "hidden",
            "layers",
            "heads",
            "max_len",
            "category_feature",
            "event_type_feature",
            "repeat_term",
            "tie_embeddings",
            "seed",
            "window_stride",
            "window_targets",
            "ema_decay",
        )
        return [name for name in shape if getattr(self, name) != getattr(other, name)]
