"""The epoch-validation benchmark on the tiny preset: both sides scored by the same weights, and
the final scoring's ways giving the same sums."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_epoch_validation import main


def test_the_benchmark_scores_the_sample_and_every_user_with_the_same_weights(
    tmp_path: Path,
) -> None:
    out = tmp_path / "epoch_validation.json"
    assert main(["--preset", "tiny", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    sample, every = report["sample"], report["every_user"]
    # the tiny preset has fewer validation users than train.valid_users: the sample is all of
    # them, so both sides must agree to the last digit
    assert sample["users"] == every["users"] == report["validation_users"]
    assert sample["ndcg@10"] == every["ndcg@10"] and sample["ndcg@10_ci95"] > 0
    assert report["epoch_train_seconds"] > 0 and report["final_test_scoring"]["seconds"] > 0
    assert report["train"]["loss"] == "sampled_softmax"
    assert {"cpu", "vector_extensions"} <= set(report["machine"])
    # the final scoring's ways, side by side: the same sums to the last bit for each scorer
    ways = report["final_test_scoring_ways"]
    assert {"sasrec", "most_popular", "item_transition"} <= set(ways)
    for name in ("sasrec", "most_popular", "item_transition"):
        assert ways[name]["same_sums"] is True, name
        assert {"seconds", "reference_seconds", "speedup"} <= set(ways[name])
