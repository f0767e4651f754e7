"""The drift judgment on synthetic feature frames: Evidently's scores become checks, a verdict."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import distance

from pipelines.core.errors import InputError
from pipelines.core.judgment import worst
from pipelines.core.params import FEATURE_NAMES, FeatureDrift, MonitorConfig
from pipelines.monitoring.drift import (
    DECIDING,
    DRIFT,
    NO_PREDICTIONS,
    DriftResult,
    drift_report,
    popularity_divergence,
    save_html,
)
from pipelines.monitoring.features import (
    PREDICTION_FEATURES,
    ItemCounts,
    Profile,
    count_items,
    item_counts,
)
from tests.monitoring.conftest import make_items, make_requests

CATEGORIES = np.array([f"c{i}" for i in range(12)])
CATEGORY_P = (1.0 / np.arange(1, 13)) / (1.0 / np.arange(1, 13)).sum()
BUCKETS = np.array(["b0", "b1", "b2", "b3", "unseen"])
BUCKET_P = np.array([0.5, 0.3, 0.15, 0.04, 0.01])


def features(
    n: int,
    seed: int,
    *,
    price_scale: float = 1.0,
    category_p: np.ndarray = CATEGORY_P,
    predictions: bool = True,
) -> pd.DataFrame:
    """``n`` featurized requests drawn from one fixed distribution, with optional shifts."""
    rng = np.random.default_rng(seed)
    length = rng.integers(0, 30, n)
    price = rng.lognormal(3.0, 0.8, n) * price_scale
    price[length == 0] = np.nan
    return pd.DataFrame(
        {
            "history_length": length,
            "history_category": np.where(
                length == 0, "none", rng.choice(CATEGORIES, n, p=category_p)
            ),
            "history_price": price,
            "history_popularity": np.where(length == 0, "none", rng.choice(BUCKETS, n, p=BUCKET_P)),
            "unknown_share": np.where(rng.random(n) < 0.2, rng.random(n) * 0.3, 0.0),
            "top_category": rng.choice(CATEGORIES, n, p=CATEGORY_P) if predictions else "none",
            "top_popularity": rng.choice(BUCKETS[:4], n, p=[0.6, 0.25, 0.1, 0.05])
            if predictions
            else "none",
        },
        columns=list(FEATURE_NAMES),
    )


def outcomes(result: DriftResult) -> dict[str, str]:
    return {c.metric: c.outcome for c in result.checks}


CFG = MonitorConfig()
LENGTH = FeatureDrift(method="wasserstein", threshold=0.1)
PRICE = FeatureDrift(method="wasserstein", threshold=0.1)
CATEGORY = FeatureDrift(method="jensenshannon", threshold=0.1)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return features(3000, seed=1)


@pytest.fixture(scope="module")
def same(reference: pd.DataFrame) -> DriftResult:
    return drift_report(reference, features(3000, seed=2), CFG, seed=0, predictions=True)


@pytest.fixture(scope="module")
def inflated(reference: pd.DataFrame) -> DriftResult:
    return drift_report(
        reference, features(3000, seed=3, price_scale=1.5), CFG, seed=0, predictions=True
    )


def test_the_same_distribution_is_no_drift(same: DriftResult) -> None:
    assert same.verdict == "no_drift"
    assert same.outcome == "pass"
    assert [c.metric for c in same.checks] == [*FEATURE_NAMES, *DECIDING[:2], *DECIDING[2:]]
    for name in FEATURE_NAMES:
        score = same.scores[name]
        assert 0.0 <= score < CFG.features[name].threshold / 2, (name, score)  # type: ignore[index]
    assert outcomes(same)["drifted_features"] == "pass"
    assert same.scores["drifted_share"] == 0.0
    assert same.drifted == ()
    assert (same.rows, same.sampled, same.reference_rows) == (3000, 3000, 3000)


def test_scores_are_evidently_s_own(same: DriftResult) -> None:
    # the checks carry what Evidently's report says, method and threshold from the params
    reported = {
        m["config"]["column"]: m for m in same.snapshot.dict()["metrics"] if "column" in m["config"]
    }
    assert set(reported) == set(FEATURE_NAMES)
    for name, metric in reported.items():
        spec = CFG.features[name]
        assert metric["config"]["method"] == spec.method
        assert metric["config"]["threshold"] == spec.threshold
        assert metric["value"] == pytest.approx(same.scores[name])
    counted = [
        m
        for m in same.snapshot.dict()["metrics"]
        if m["metric_name"].startswith("DriftedColumnsCount")
    ]
    assert counted[0]["value"]["count"] == 0


def test_inflated_prices_drift_in_history_price_alone(inflated: DriftResult) -> None:
    assert inflated.verdict == "drift"
    assert [f.feature for f in inflated.drifted] == ["history_price"]
    drifted = inflated.drifted[0]
    assert drifted.method == "wasserstein"
    assert drifted.threshold == 0.1
    assert drifted.score > 0.3
    assert inflated.stopping == ["history_price", "drifted_features"]
    assert inflated.scores["drifted_share"] == pytest.approx(1 / 7)
    counted = [
        m
        for m in inflated.snapshot.dict()["metrics"]
        if m["metric_name"].startswith("DriftedColumnsCount")
    ]
    assert counted[0]["value"]["count"] == 1  # Evidently counts what the checks say


def test_a_category_shift_drifts_in_history_category(reference: pd.DataFrame) -> None:
    shifted = CATEGORY_P[::-1]  # the rarest categories become the most common
    result = drift_report(
        reference, features(3000, seed=4, category_p=shifted), CFG, seed=0, predictions=True
    )
    assert result.verdict == "drift"
    assert [f.feature for f in result.drifted] == ["history_category"]
    assert result.scores["history_category"] > 0.2


def test_fewer_rows_than_min_requests_are_insufficient_data_never_drift(
    reference: pd.DataFrame,
) -> None:
    few = features(CFG.min_requests - 1, seed=5, price_scale=3.0)  # would drift
    result = drift_report(reference, few, CFG, seed=0, predictions=True)
    assert result.verdict == "insufficient_data"
    assert DRIFT.outcome(result.verdict) == "inconclusive"
    assert "fail" not in outcomes(result).values()
    assert outcomes(result)["requests"] == "inconclusive"
    price = next(c for c in result.checks if c.metric == "history_price")
    assert price.outcome == "inconclusive"
    assert isinstance(price.value, float) and price.value > 0.1  # measured, not judged
    assert f"fewer than the {CFG.min_requests} needed" in price.detail
    share = next(c for c in result.checks if c.metric == "drifted_features")
    assert share.outcome == "inconclusive"
    assert share.detail.startswith("1 of 7 features drifted")
    assert result.drifted == ()


def test_no_current_rows_are_insufficient_data_without_a_report(reference: pd.DataFrame) -> None:
    result = drift_report(reference, reference.iloc[:0], CFG, seed=0, predictions=True)
    assert result.verdict == "insufficient_data"
    assert result.snapshot is None
    assert result.rows == 0 and result.sampled == 0


def test_an_events_batch_skips_the_prediction_features(reference: pd.DataFrame) -> None:
    batch = features(1000, seed=6, predictions=False)  # top_* all "none": would drift if judged
    result = drift_report(reference, batch, CFG, seed=0, predictions=False)
    assert result.verdict == "no_drift"
    for name in PREDICTION_FEATURES:
        check = next(c for c in result.checks if c.metric == name)
        assert (check.outcome, check.detail) == ("skipped", NO_PREDICTIONS)
        assert name not in result.scores
    columns = {m["config"].get("column") for m in result.snapshot.dict()["metrics"]}
    assert columns.isdisjoint(PREDICTION_FEATURES)
    assert len(result.features) == len(FEATURE_NAMES) - len(PREDICTION_FEATURES)


def test_current_rows_are_sampled_with_the_seed(reference: pd.DataFrame) -> None:
    # one feature keeps Evidently's part short: the sample is what is tested
    cfg = MonitorConfig(sample_rows=500, features={"history_price": PRICE})
    current = features(4000, seed=7)
    first = drift_report(reference, current, cfg, seed=11, predictions=True)
    again = drift_report(reference, current, cfg, seed=11, predictions=True)
    other = drift_report(reference, current, cfg, seed=12, predictions=True)
    assert (first.rows, first.sampled) == (4000, 500)
    assert first.scores == again.scores
    assert first.scores["history_price"] != other.scores["history_price"]


def test_a_feature_without_values_is_inconclusive_and_the_rest_judged(
    reference: pd.DataFrame,
) -> None:
    current = features(1000, seed=8)
    current["history_price"] = np.nan
    result = drift_report(reference, current, CFG, seed=0, predictions=True)
    price = next(c for c in result.checks if c.metric == "history_price")
    assert price.outcome == "inconclusive"
    assert "no values in the current requests" in price.detail
    assert "history_price" not in result.scores
    assert result.verdict == "no_drift"
    assert len(result.features) == len(FEATURE_NAMES) - 1


def test_drift_share_decides_not_a_single_feature(inflated: DriftResult) -> None:
    reference = features(3000, seed=1)
    cfg = MonitorConfig(drift_share=0.5)
    result = drift_report(
        reference, features(3000, seed=3, price_scale=1.5), cfg, seed=0, predictions=True
    )
    # history_price still fails as evidence; one of seven is below the share that decides
    assert outcomes(result)["history_price"] == "fail"
    assert outcomes(result)["drifted_features"] == "pass"
    assert result.verdict == "no_drift"
    assert worst(c.outcome for c in result.checks) == "fail"  # why DECIDING exists


def test_only_configured_features_are_judged(reference: pd.DataFrame) -> None:
    cfg = MonitorConfig(features={"history_price": FeatureDrift(method="psi", threshold=0.2)})
    result = drift_report(
        reference, features(1000, seed=3, price_scale=1.5), cfg, seed=0, predictions=True
    )
    assert [c.metric for c in result.checks][:1] == ["history_price"]
    assert [f.method for f in result.features] == ["psi"]
    assert result.verdict == "drift"


def test_missing_columns_and_an_empty_reference_are_input_errors(reference: pd.DataFrame) -> None:
    with pytest.raises(InputError, match=r"current features lack the columns \['unknown_share'\]"):
        drift_report(
            reference, reference.drop(columns="unknown_share"), CFG, seed=0, predictions=True
        )
    with pytest.raises(InputError, match="reference features have no rows"):
        drift_report(reference.iloc[:0], reference, CFG, seed=0, predictions=True)


def counted(mapping: dict[str, int], unknown: int = 0) -> ItemCounts:
    return count_items(mapping.keys(), mapping.values(), unknown)


def test_popularity_divergence_is_jensen_shannon_in_bits() -> None:
    counts = counted({"a": 50, "b": 30, "c": 20})
    assert popularity_divergence(counts, counts) == 0.0
    assert popularity_divergence(counts, counted({"a": 500, "b": 300, "c": 200})) == 0.0
    # with enough occurrences every reference item has its own bin: scipy's value squared
    current = counted({"c": 5000, "a": 2000, "b": 3000})
    expected = distance.jensenshannon([50, 30, 20, 0], [2000, 3000, 5000, 0], base=2) ** 2
    assert popularity_divergence(counts, current) == pytest.approx(expected)
    # traffic on items the reference never saw, or the model did not know: disjoint
    assert popularity_divergence(counts, counted({"x": 5000, "y": 5000})) == pytest.approx(1.0)
    assert popularity_divergence(counts, counted({}, unknown=10_000)) == pytest.approx(1.0)
    assert math.isnan(popularity_divergence(counts, counted({})))


def test_popularity_divergence_bins_the_tail_so_chance_stays_small() -> None:
    rng = np.random.default_rng(0)
    share = 1.0 / np.arange(1, 5001)
    share /= share.sum()
    ids = [f"i{i}" for i in range(5000)]
    reference = count_items(ids, rng.multinomial(200_000, share))
    current = count_items(ids, rng.multinomial(5_000, share))
    # 5,000 occurrences over 5,000 items one bin each would differ by about 0.25 by chance alone
    assert popularity_divergence(reference, current) < 0.02
    moved = count_items(ids, rng.permutation(current.counts))
    assert popularity_divergence(reference, moved) > 0.3


ITEM_IDS = [f"i{i}" for i in range(40)]
ITEM_COUNTS = [1000 // (i + 1) for i in range(39)] + [0]  # i39: no interactions, unseen


def item_requests(n: int, seed: int, *, reverse: bool = False, unknown: int = 0) -> list[dict]:
    """``n`` requests of 10 history items drawn by the reference popularity (or its reverse)."""
    rng = np.random.default_rng(seed)
    weights = np.array(ITEM_COUNTS[:39], dtype=np.float64)
    weights = weights[::-1] if reverse else weights
    return [
        {
            "history": rng.choice(ITEM_IDS[:39], 10, p=weights / weights.sum()).tolist(),
            "unknown": unknown,
        }
        for _ in range(n)
    ]


def test_item_checks_decide_drift_on_their_own(same: DriftResult, reference: pd.DataFrame) -> None:
    items = make_items(ITEM_IDS, ["x"] * 40, [1.0] * 40, ITEM_COUNTS)
    profile = Profile.from_items(items, CFG.popularity_buckets)
    popularity = item_counts(make_requests(items, item_requests(2000, seed=1)))
    current = features(300, seed=2)
    # one feature keeps Evidently's part short: these checks are recflow's own
    cfg = MonitorConfig(features={"history_length": LENGTH}, min_requests=200)

    def judge(rows: list[dict]) -> DriftResult:
        return drift_report(
            reference,
            current,
            cfg,
            seed=0,
            predictions=True,
            reference_counts=popularity,
            current_requests=make_requests(items, rows),
            profile=profile,
        )

    steady = judge(item_requests(300, seed=2))
    assert steady.verdict == "no_drift"
    assert 0.0 < steady.scores["popularity_js"] < 0.02
    assert steady.scores["unseen_share"] == 0.0

    moved = judge(item_requests(300, seed=2, reverse=True))
    assert moved.verdict == "drift"
    assert moved.stopping == ["popularity_js"]
    assert moved.scores["popularity_js"] > 0.3
    assert moved.drifted == ()  # no feature drifted

    novel = judge(
        [{**row, "history": [*row["history"][:9], "i39"]} for row in item_requests(300, 3)]
    )
    assert novel.stopping == ["unseen_share"]
    assert novel.reasons() == ["share of history items unseen in training 0.100 (limit 0.05)"]
    unknown = judge(item_requests(300, seed=4, unknown=1))  # 1 of 11 history items unknown
    assert unknown.scores["unseen_share"] == pytest.approx(1 / 11)
    assert unknown.verdict == "drift"

    nothing = judge([{"history": []}] * 300)
    assert nothing.verdict == "insufficient_data"
    assert nothing.stopping == ["popularity_js", "unseen_share"]

    assert outcomes(same)["popularity_js"] == outcomes(same)["unseen_share"] == "skipped"


def test_prediction_features_compare_only_the_given_rows(reference: pd.DataFrame) -> None:
    # the compared version answered the first 2,000 rows; another answered the rest otherwise
    cfg = MonitorConfig(features={"history_category": CATEGORY, "top_category": CATEGORY})
    current = features(3000, seed=9)
    other = features(1000, seed=10)
    current.loc[2000:, "top_category"] = np.where(other["top_category"] == "c0", "c11", "c0")
    everyone = drift_report(reference, current, cfg, seed=0, predictions=True)
    assert "top_category" in [f.feature for f in everyone.drifted]
    mine = drift_report(
        reference, current, cfg, seed=0, predictions=True, prediction_rows=current.iloc[:2000]
    )
    assert mine.verdict == "no_drift"
    assert mine.predicted == 2000
    assert mine.scores["top_category"] < 0.05
    assert mine.scores["history_category"] == everyone.scores["history_category"]
    few = drift_report(
        reference, current, cfg, seed=0, predictions=True, prediction_rows=current.iloc[:100]
    )
    check = next(c for c in few.checks if c.metric == "top_category")
    assert check.outcome == "inconclusive"
    assert "from 100 requests answered by the compared version" in check.detail
    assert few.verdict == "no_drift"  # the other features decide


def test_checks_serialize_as_judgment_json(inflated: DriftResult) -> None:
    documents = [c.to_json() for c in inflated.checks]
    price = next(d for d in documents if d["metric"] == "history_price")
    assert price["outcome"] == "fail"
    assert type(price["value"]) is float
    assert price["limit"] == 0.1


def test_save_html_writes_the_report_atomically(inflated: DriftResult, tmp_path: Path) -> None:
    target = tmp_path / "window" / "report.html"
    save_html(inflated, target)
    text = target.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "history_price" in text
    assert "<script src=" not in text  # the scripts are inlined: it renders offline
    assert len(text) > 1_000_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_save_html_without_a_report_says_why(reference: pd.DataFrame, tmp_path: Path) -> None:
    result = drift_report(reference, reference.iloc[:0], CFG, seed=0, predictions=True)
    target = tmp_path / "report.html"
    save_html(result, target)
    text = target.read_text(encoding="utf-8")
    assert "Drift: insufficient_data" in text
    assert f"0 requests, fewer than the {CFG.min_requests} needed to judge drift" in text
