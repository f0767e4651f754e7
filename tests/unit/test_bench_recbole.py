"""The bookkeeping of the RecBole comparison (RecBole itself is not needed here)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import bench_recbole as bench
from benchmarks.bench_recbole import (
    compare,
    ranked_metrics,
    readme_table,
    report,
    score_recbole,
    seconds_per_epoch,
    seconds_to_quality,
    write_prepared,
)
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


def test_a_tuning_folder_holds_no_test_target(tmp_path: Path) -> None:
    write_prepared(SPLIT, tmp_path, tuning=True)
    data = load_prepared(tmp_path)
    # the test file repeats validation: a tuning run cannot read the test targets
    assert data.test_target.tolist() == [4, 1]
    assert [h.tolist() for h in data.test_history] == [[1, 2, 3], [5, 4]]


def _epochs(*values: float, cpu: float = 2.0) -> list[dict[str, Any]]:
    return [
        {
            "epoch": i + 1,
            "seconds_since_start": 10.0 * (i + 1),
            "cpu_seconds": cpu * 10.0 * (i + 1),
            "loadavg": [1.0, 1.0, 1.0],
            "valid_ndcg@10": v,
        }
        for i, v in enumerate(values)
    ]


def test_time_to_quality_is_the_first_epoch_reaching_the_bar() -> None:
    reached = seconds_to_quality(_epochs(0.01, 0.05, 0.04, 0.07), 0.05)
    assert reached == {"epoch": 2, "seconds": 20.0, "cpu_seconds": 40.0, "loadavg": [1.0] * 3}
    assert seconds_to_quality(_epochs(0.01, 0.02), 0.05) is None


def test_seconds_per_epoch_leave_data_loading_out() -> None:
    epochs = _epochs(0.1, 0.2, 0.3)
    epochs[0]["seconds_since_start"] = 25.0  # imports and data loading before the first epoch
    epochs[1]["seconds_since_start"] = 35.0
    epochs[2]["seconds_since_start"] = 45.0
    assert seconds_per_epoch(epochs) == 10.0
    assert seconds_per_epoch(epochs[:1]) == 25.0
    assert seconds_per_epoch([]) == 0.0


def _test(ndcg: float) -> dict[str, dict[str, float]]:
    return {
        "unmasked": {"ndcg@10": ndcg, "recall@10": 2 * ndcg, "mrr@10": ndcg / 2},
        "masked": {"ndcg@10": 2 * ndcg, "recall@10": 4 * ndcg, "mrr@10": ndcg},
    }


def test_comparison_puts_like_beside_like() -> None:
    recbole = {
        "test": _test(0.05),
        "to_quality": seconds_to_quality(_epochs(0.02, 0.06, cpu=4.0), 0.06),
    }
    seeds = [
        {"test": _test(0.06), "to_quality": {"seconds": 1.0, "cpu_seconds": 2.0}},
        {"test": _test(0.07), "to_quality": {"seconds": 0.5, "cpu_seconds": 1.0}},
    ]
    result = compare(recbole, {"seeds": seeds})
    unmasked, masked = result["test_ndcg@10"]["unmasked"], result["test_ndcg@10"]["masked"]
    assert unmasked["recbole"] == 0.05 and unmasked["recflow"]["mean"] == 0.065
    assert unmasked["recflow"]["std"] == pytest.approx(0.0071, abs=1e-4)
    assert unmasked["ratio"] == 1.3
    # masked numbers sit in their own row: never divided by an unmasked one
    assert masked["recbole"] == 0.1 and masked["recflow"]["mean"] == 0.13
    speed = result["time_to_quality"]
    assert speed["recflow_mean_seconds"] == 0.8 and speed["ratio_seconds"] == 26.7
    assert speed["recflow_mean_cpu_seconds"] == 1.5 and speed["ratio_cpu_seconds"] == 53.3
    assert result["targets"] == {
        "ndcg_at_least_recbole": True,
        "ndcg_1.2x_recbole": True,
        "time_to_quality_20x": True,
    }


def test_no_ratio_when_a_seed_never_reaches_the_bar() -> None:
    recbole = {"test": _test(0.05), "to_quality": {"seconds": 10.0, "cpu_seconds": 20.0}}
    seeds = [{"test": _test(0.04), "to_quality": None}, {"test": _test(0.04), "to_quality": None}]
    result = compare(recbole, {"seeds": seeds})
    assert "ratio_seconds" not in result["time_to_quality"]
    assert result["targets"] == {
        "ndcg_at_least_recbole": False,
        "ndcg_1.2x_recbole": False,
        "time_to_quality_20x": False,
    }


def test_ranked_metrics_use_topk_positions_and_mask_only_when_asked() -> None:
    # item 0 is padding; item 3 is in the history and scores highest
    scores = np.array([[9.0, 0.1, 0.5, 0.9, 0.3], [9.0, 0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    histories, targets = [[3], [1]], [2, 2]
    unmasked = ranked_metrics(scores, histories, targets, mask_history=False)
    # user 1: target 2 second (after 3); user 2: target 2 second (after 1)
    assert unmasked["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert unmasked["recall@10"] == 1.0 and unmasked["mrr@10"] == 0.5
    masked = ranked_metrics(scores, histories, targets, mask_history=True)
    assert masked == {"ndcg@10": 1.0, "recall@10": 1.0, "mrr@10": 1.0}


def _scored_folder(tmp_path: Path, own_valid_ndcg: float) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path / "converge-recbole"
    folder.mkdir()
    (folder / "split.json").write_text(json.dumps(SPLIT))
    # RecBole's loaders may list users in any order: rows are matched by user id
    valid = np.array([[0, 0.9, 0.1, 0.2, 0.5, 0.3], [0, 0.1, 0.2, 0.9, 0.5, 0.3]], np.float32)
    test = np.array([[0, 0.1, 0.9, 0.2, 0.3, 0.4], [0, 0.1, 0.2, 0.3, 0.4, 0.9]], np.float32)
    np.savez(
        folder / "scores.npz",
        valid_users=np.array([2, 1]),
        valid_scores=valid[:, :6],
        test_users=np.array([2, 1]),
        test_scores=test[:, :6],
    )
    perfect = {"ndcg@10": 1.0, "recall@10": 1.0, "mrr@10": 1.0}
    result = {
        "own_evaluator": {
            "valid": {"ndcg@10": own_valid_ndcg, "recall@10": 1.0, "mrr@10": own_valid_ndcg},
            "test": perfect,
        }
    }
    return folder, result


def test_recbole_scores_ranked_by_recflow_match_recboles_own_evaluator(tmp_path: Path) -> None:
    # valid: user 2's target 1 is first; user 1's target 4 is second (after history item 3)
    expected = (1.0 + 1 / math.log2(3)) / 2
    folder, result = _scored_folder(tmp_path, expected)
    result["own_evaluator"]["valid"]["mrr@10"] = 0.75
    scored = score_recbole(folder, result)["ranked_by_recflow"]
    assert scored["valid"]["unmasked"]["ndcg@10"] == pytest.approx(expected, abs=1e-6)
    assert scored["test"]["unmasked"]["ndcg@10"] == 1.0
    # masked: user 1's history item 3 leaves the ranking, so target 4 comes first
    assert scored["valid"]["masked"]["ndcg@10"] == 1.0
    assert (folder / "scored.json").is_file()


def test_a_protocol_mismatch_with_recboles_evaluator_stops_the_benchmark(tmp_path: Path) -> None:
    folder, result = _scored_folder(tmp_path, 0.5)
    with pytest.raises(SystemExit, match=r"valid scores gives ndcg@10 .* the protocols differ"):
        score_recbole(folder, result)


def test_a_finished_run_is_reused_only_for_the_same_request(tmp_path: Path) -> None:
    request = {"command": ["--seed", "1"], "settings": {"lr": 0.001}}
    assert not bench._finished(tmp_path, "recflow.json", request)
    (tmp_path / "recflow.json").write_text("{}")
    (tmp_path / "request.json").write_text(json.dumps(request))
    assert bench._finished(tmp_path, "recflow.json", request)
    assert not bench._finished(tmp_path, "recflow.json", {**request, "settings": {"lr": 0.002}})


def _run(values: tuple[float, ...], best: float, test: float | None = None) -> dict[str, Any]:
    epochs = _epochs(*values)
    run: dict[str, Any] = {
        "epochs": epochs,
        "best_epoch": values.index(best) + 1,
        "best_valid_ndcg@10": best,
        "stopped_by": "early stopping",
        "data_loaded": {"seconds_since_start": 3.0, "cpu_seconds": 3.0, "loadavg": [1, 1, 1]},
    }
    if test is not None:
        run["test"] = _test(test)
    return run


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "converge-recbole").mkdir(parents=True)
    (work / "converge-recbole" / "split.json").write_text(json.dumps(SPLIT))
    tuning = {"chosen": {"train_batch_size": 256, "learning_rate": 0.001}, "runs": []}
    (work / "tune-recbole.json").write_text(json.dumps(tuning))
    (work / "tune-recflow.json").write_text(json.dumps({"chosen": {"lr": 0.002}, "runs": []}))
    converged = {
        **_run((0.02, 0.05, 0.06, 0.055), 0.06),
        "recbole": "1.2.1",
        "seed": 2020,
        "own_evaluator": {"valid": {}, "test": {}},
        "ranked_by_recflow": {"valid": _test(0.06), "test": _test(0.05)},
    }
    (work / "converge-recbole" / "scored.json").write_text(json.dumps(converged))
    for seed, curve in zip(bench.SEEDS, ((0.05, 0.061), (0.062, 0.06), (0.04, 0.07)), strict=True):
        folder = work / "final" / f"recflow-seed-{seed}"
        folder.mkdir(parents=True)
        result = {**_run(curve, max(curve), test=0.06), "seed": seed, "settings": {"lr": 0.002}}
        (folder / "recflow.json").write_text(json.dumps(result))
    timed = work / "final" / "recbole-to-bar"
    timed.mkdir(parents=True)
    (timed / "recbole.json").write_text(json.dumps(_run((0.02, 0.05, 0.06), 0.06)))
    return work


def test_report_gathers_every_step_into_one_results_file(tmp_path: Path) -> None:
    result = report(_work(tmp_path), threads=2)
    assert result["quality_bar_valid_ndcg@10"] == 0.06
    assert result["protocol"]["shared"]["mask_history"] is False
    assert result["protocol"]["masked"]["mask_history"] is True
    assert result["recbole"]["to_quality"]["seconds"] == 30.0  # the timed run, epoch 3
    assert [s["to_quality"]["seconds"] for s in result["recflow"]["seeds"]] == [20.0, 10.0, 20.0]
    assert result["time_to_quality"]["ratio_seconds"] == 1.8
    assert result["test_ndcg@10"]["unmasked"]["ratio"] == 1.2
    assert result["recflow"]["test_mean_std"]["masked"]["ndcg@10"] == {"mean": 0.12, "std": 0.0}
    table = readme_table(result).splitlines()
    assert len(table) == 6
    assert table[2].startswith("| RecBole SASRec | shared (history kept) | 0.0500 |")
    assert table[3].startswith(
        "| recflow SASRec, 3 seeds | shared (history kept) | 0.0600 ± 0.0000"
    )
    assert "history masked" in table[4] and "history masked" in table[5]


def test_report_names_the_missing_step(tmp_path: Path) -> None:
    work = _work(tmp_path)
    (work / "tune-recflow.json").unlink()
    with pytest.raises(SystemExit, match="run the tune-recflow step first"):
        report(work, threads=2)


def test_progress_reports_finished_and_running_steps_without_comparing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    finished = work / "tune-recbole" / bench._settings_name(bench.RECBOLE_GRID[0])
    finished.mkdir(parents=True)
    (finished / "recbole.json").write_text(json.dumps(_run((0.02, 0.05, 0.04), 0.05)))
    running = work / "converge-recbole"
    running.mkdir(parents=True)
    rows = [
        {"epoch": 1, "valid_ndcg@10": 0.03, "cpu_seconds": 100.0},
        {"epoch": 2, "valid_ndcg@10": 0.061, "cpu_seconds": 210.0},
        {"epoch": 3, "valid_ndcg@10": 0.058, "cpu_seconds": 300.0},
    ]
    log_text = "some RecBole line\n" + "".join(json.dumps(row) + "\n" for row in rows)
    (running / "log.txt").write_text(log_text)
    result = bench.progress(work, threads=2)
    assert result["steps_finished"] == {
        "tune-recbole": False,
        "converge-recbole": False,
        "tune-recflow": False,
        "final": False,
    }
    runs = result["recbole"]["tuning_runs"]
    first = runs[bench._settings_name(bench.RECBOLE_GRID[0])]
    assert first["finished"] and first["best_valid_ndcg@10"] == 0.05
    assert runs[bench._settings_name(bench.RECBOLE_GRID[1])]["epochs_so_far"] == 0
    converge = result["recbole"]["converge"]
    assert converge == {
        "finished": False,
        "epochs_so_far": 3,
        "best_epoch_so_far": 2,
        "best_valid_ndcg@10_so_far": 0.061,
        "valid_ndcg@10_by_epoch": [0.03, 0.061, 0.058],
        "cpu_seconds_per_epoch": 100.0,
    }
    # nothing that compares the two sides, and no test number
    assert "time_to_quality" not in result and "test_ndcg@10" not in result
    assert "test" not in json.dumps(result["recbole"]["converge"])
    table = bench.progress_table(result).splitlines()
    assert len(table) == 2 + len(bench.RECBOLE_GRID) + 1 + len(bench.RECFLOW_GRID)
    assert "| RecBole | to its early stopping | its tuning choice | no" in table[4]
    assert table[4].endswith("| 3 | 0.0610 (2) | 100 |")


def test_progress_carries_the_converged_runs_test_under_both_protocols(tmp_path: Path) -> None:
    work = _work(tmp_path)
    (work / "converge-recbole" / "recbole.json").write_text(
        json.dumps(_run((0.02, 0.05, 0.06, 0.055), 0.06))
    )
    result = bench.progress(work, threads=2)
    converge = result["recbole"]["converge"]
    assert converge["finished"] and converge["best_valid_ndcg@10"] == 0.06
    # the final seeds of recflow are final models too: their test numbers are kept
    seeds = result["recflow"]["final_seeds"]
    assert [seeds[str(seed)]["test"] for seed in bench.SEEDS] == [_test(0.06)] * 3
    assert len(bench.progress_table(result).splitlines()) == 2 + 3 + 2 + 3
    assert converge["test"] == _test(0.05)
    assert converge["own_evaluator_test"] == {}


def test_the_report_checks_that_the_timed_run_retraces_the_converged_one(tmp_path: Path) -> None:
    work = _work(tmp_path)
    assert report(work, threads=2)["recbole"]["timed_run_retraces_converged"] is True
    timed = work / "final" / "recbole-to-bar" / "recbole.json"
    timed.write_text(json.dumps(_run((0.02, 0.051, 0.06), 0.06)))
    assert report(work, threads=2)["recbole"]["timed_run_retraces_converged"] is False


def _record(tmp_path: Path) -> Path:
    """A results file as report writes it, from the fake work folder."""
    result = report(_work(tmp_path), threads=2)
    # RecBole's rows carry its loss and every validation metric
    result["recbole"]["converged"]["curve"][0].update(
        {"loss": 2436.2, "valid_recall@10": 0.1, "valid_mrr@10": 0.03}
    )
    record = tmp_path / "record.json"
    record.write_text(json.dumps(result))
    return record


def _fake_recbole(first: dict[str, Any]) -> Any:
    def run(folder: Path, threads: int, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["max_epochs"] == 1 and kwargs["test"] is False
        assert kwargs["settings"] == {"train_batch_size": 256, "learning_rate": 0.001}
        folder.mkdir(parents=True)
        (folder / "split.json").write_text(json.dumps(SPLIT))
        return {"epochs": [first]}

    return run


def test_restore_reuses_recorded_recbole_runs_when_the_first_epoch_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _record(tmp_path)
    recorded = json.loads(record.read_text())["recbole"]
    first = dict(recorded["converged"]["curve"][0])
    monkeypatch.setattr(bench, "run_recbole", _fake_recbole(first))
    work = tmp_path / "again"
    scored = bench.restore_recbole(work, 2, record)
    assert scored["best_valid_ndcg@10"] == recorded["converged"]["best_valid_ndcg@10"]
    assert scored["ranked_by_recflow"]["test"] == recorded["test"]
    assert json.loads((work / "tune-recbole.json").read_text()) == recorded["tuning"]
    # the steps after it read the restored files as if RecBole had run here
    assert bench._read_json(work / "converge-recbole" / "scored.json", "x")["restored"]
    assert bench._split_path(work).is_file()


def test_restore_refuses_a_record_the_fresh_epoch_does_not_reproduce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _record(tmp_path)
    first = dict(json.loads(record.read_text())["recbole"]["converged"]["curve"][0])
    first["valid_ndcg@10"] += 0.001
    monkeypatch.setattr(bench, "run_recbole", _fake_recbole(first))
    with pytest.raises(SystemExit, match=r"valid_ndcg@10 .* not the same run"):
        bench.restore_recbole(tmp_path / "again", 2, record)
    assert not (tmp_path / "again" / "converge-recbole").exists()
