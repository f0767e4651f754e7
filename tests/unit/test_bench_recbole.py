"""The pure parts of the RecBole comparison (RecBole itself is not needed here)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_recbole import compare, seconds_to_quality, write_prepared
from pipelines.data.prepared import load_prepared

SPLIT = {
    "n_items": 5,
    "users": [
        {"user": 1, "train": [1, 2, 3], "valid": 4, "test": 5},
        {"user": 2, "train": [5, 4], "valid": 1, "test": 2},
    ],
}


def test_split_becomes_a_prepared_folder_the_trainer_reads(tmp_path: Path) -> None:
    write_prepared(SPLIT, tmp_path)
    data = load_prepared(tmp_path)
    assert data.n_items == 5 and data.n_categories == 0
    assert [s.tolist() for s in data.train] == [[1, 2, 3], [5, 4]]
    assert [h.tolist() for h in data.valid_history] == [[1, 2, 3], [5, 4]]
    assert data.valid_target.tolist() == [4, 1]
    assert [h.tolist() for h in data.test_history] == [[1, 2, 3, 4], [5, 4, 1]]
    assert data.test_target.tolist() == [5, 2]


def _epochs(*values: float) -> list[dict[str, float]]:
    return [
        {"seconds_since_start": 10.0 * (i + 1), "valid_ndcg@10": v} for i, v in enumerate(values)
    ]


def test_time_to_quality_is_the_first_epoch_reaching_the_bar() -> None:
    assert seconds_to_quality(_epochs(0.01, 0.05, 0.04, 0.07), 0.05) == 20.0
    assert seconds_to_quality(_epochs(0.01, 0.02), 0.05) is None


def test_comparison_uses_recbole_best_validation_as_the_bar() -> None:
    recbole = {
        "epochs": _epochs(0.02, 0.04, 0.06),
        "best_epoch": 3,
        "best_valid_ndcg@10": 0.06,
        "test_ndcg@10": 0.05,
        "test_recall@10": 0.1,
    }
    recflow = {
        "epochs": [
            {"seconds_since_start": 0.5, "valid_ndcg@10": 0.03},
            {"seconds_since_start": 1.0, "valid_ndcg@10": 0.07},
        ],
        "best_epoch": 2,
        "best_valid_ndcg@10": 0.07,
        "test_ndcg@10": 0.06,
        "test_recall@10": 0.12,
    }
    result = compare(recbole, recflow)
    assert result["quality_bar_valid_ndcg@10"] == 0.06
    assert result["recbole"]["sec_to_quality"] == 30.0
    assert result["recflow"]["sec_to_quality"] == 1.0
    assert result["time_to_quality_ratio"] == 30.0
    assert result["recbole"]["sec_per_epoch"] == 10.0
    assert result["ndcg_target_met"] and result["speed_target_met"]
