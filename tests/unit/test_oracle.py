"""The synthetic generator's oracle: its probabilities are the generator's, and it ranks best."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.core.errors import InputError
from pipelines.core.io import write_parquet
from pipelines.core.params import DriftConfig, GenerateConfig, PrepareConfig, RunConfig
from pipelines.core.schema import CATALOG_FILE, EVENTS_FILE
from pipelines.data.preparation import prepare
from pipelines.data.prepared import load_prepared
from pipelines.data.synthetic.oracle import oracle_scores, view_probabilities
from pipelines.data.synthetic.presets import PRESETS
from pipelines.data.synthetic.shop import Shop
from pipelines.data.synthetic.tables import hidden_states, synthesize
from pipelines.model.baselines import ItemTransition, MostPopular
from pipelines.model.ranking import batch_metric_sums, mask_scores, ranking_metrics

END = dt.date(2026, 11, 22)
# the tiny preset with staples (repeat purchases) and shopping missions: structure a first-order
# model cannot see
STRUCTURED = dataclasses.replace(
    PRESETS["tiny"],
    staples_per_user=3,
    staple_prob=0.25,
    missions=20,
    mission_size=5,
    mission_session_prob=0.6,
    mission_view_prob=0.7,
)


def _views(drift: DriftConfig, days: int = 60) -> tuple[object, dict[str, np.ndarray]]:
    shop, hidden = hidden_states(STRUCTURED, seed=3, end_date=END, days=days, drift=drift)
    table = hidden.to_pandas()
    views = table[table["kind"] == 0]
    return shop, {
        name: views[name].to_numpy(np.int64)
        for name in ("user", "item", "previous_view", "mission")
    }


@pytest.mark.parametrize("drift", [DriftConfig(), DriftConfig(category_shift=0.3)])
def test_view_probabilities_are_the_generators_draws(drift: DriftConfig) -> None:
    shop, views = _views(drift)
    probs = view_probabilities(
        shop,
        STRUCTURED,
        drift.category_shift,
        views["user"],
        views["previous_view"],
        views["mission"],
    )
    assert np.allclose(probs.sum(1), 1.0)
    # every view the generator drew has a positive probability under the oracle
    assert (probs[np.arange(len(probs)), views["item"]] > 0).all()
    # ~5k session starts and ~20k continuations over 150 items: sampling noise alone gives a
    # total variation of about 0.05 and 0.03
    for starts, noise in ((views["previous_view"] < 0, 0.06), (views["previous_view"] >= 0, 0.04)):
        # the mean predicted distribution is the empirical one, up to sampling noise
        predicted = probs[starts].mean(0)
        observed = np.bincount(views["item"][starts], minlength=probs.shape[1]) / starts.sum()
        assert 0.5 * np.abs(predicted - observed).sum() < noise
        # and so is the share of views that go to the user's own staples
        k = STRUCTURED.staples_per_user
        staples = shop.staples.reshape(-1, k)[views["user"][starts]]
        mass = np.take_along_axis(probs[starts], staples, axis=1)
        unique = np.array([len(set(row)) == k for row in staples])
        hit = (staples == views["item"][starts][:, None]).any(1)
        assert hit[unique].mean() == pytest.approx(mass[unique].sum(1).mean(), abs=0.02)


@pytest.mark.parametrize(
    "knob",
    ["successor_prob", "same_category_prob", "staple_prob", "mission_view_prob"],
    ids=lambda knob: knob,
)
def test_the_generators_own_knobs_give_its_draws_the_highest_likelihood(knob: str) -> None:
    # a proper scoring rule: only the true distribution maximizes the expected log-likelihood
    shop, views = _views(DriftConfig())
    rows = np.arange(len(views["item"]))

    def log_likelihood(preset: object) -> float:
        probs = view_probabilities(
            shop,
            preset,  # type: ignore[arg-type]
            0.0,
            views["user"],
            views["previous_view"],
            views["mission"],
        )
        return float(np.log(probs[rows, views["item"]]).mean())

    own = log_likelihood(STRUCTURED)
    for step in (-0.1, 0.1):
        other = dataclasses.replace(STRUCTURED, **{knob: getattr(STRUCTURED, knob) + step})
        assert log_likelihood(other) < own - 0.001


def test_staples_leave_other_presets_and_the_reference_shop_alone() -> None:
    plain = hidden_states(PRESETS["tiny"], seed=3, end_date=END, days=5, drift=DriftConfig())[0]
    assert len(plain.staples) == 0
    stapled = hidden_states(STRUCTURED, seed=3, end_date=END, days=5, drift=DriftConfig())[0]
    assert stapled.staples.shape == (STRUCTURED.n_users * STRUCTURED.staples_per_user,)
    # the staples come from the reference shop: drift on the catalogue does not move them
    drifted = hidden_states(
        STRUCTURED,
        seed=3,
        end_date=END,
        days=5,
        drift=DriftConfig(new_item_share=0.3, popularity_shift=0.5),
    )[0]
    assert np.array_equal(drifted.staples, stapled.staples)
    assert np.array_equal(plain.successors, stapled.successors)
    # and so do the missions: rows of different reference items, none in the other presets
    assert plain.missions.shape == (0, PRESETS["tiny"].mission_size)
    assert stapled.missions.shape == (STRUCTURED.missions, STRUCTURED.mission_size)
    assert all(len(set(row)) == STRUCTURED.mission_size for row in stapled.missions.tolist())
    assert stapled.missions.max() < STRUCTURED.n_items
    assert np.array_equal(drifted.missions, stapled.missions)


@pytest.fixture(scope="module")
def session_hidden_states() -> tuple[Shop, pd.DataFrame]:
    """The structured preset's shop and hidden states over 20 days, with each event's session.

    Built once for the module: the tests only read it.
    """
    events, _ = synthesize(STRUCTURED, seed=3, end_date=END, days=20, drift=DriftConfig())
    shop, hidden = hidden_states(STRUCTURED, seed=3, end_date=END, days=20, drift=DriftConfig())
    table = hidden.to_pandas()
    table["session"] = events.column("session_id").to_pandas()
    return shop, table


def test_a_session_follows_one_mission_and_its_views_go_to_the_missions_items(
    session_hidden_states: tuple[Shop, pd.DataFrame],
) -> None:
    shop, table = session_hidden_states
    views = table[table["kind"] == 0]
    assert (table.loc[table["kind"] != 0, "mission"] == -1).all()
    per_session = views.groupby("session")["mission"]
    assert (per_session.nunique() == 1).all()
    share = (per_session.first() >= 0).mean()
    assert share == pytest.approx(STRUCTURED.mission_session_prob, abs=0.05)
    following = views[views["mission"] >= 0]
    members = shop.missions[following["mission"].to_numpy()]
    inside = (members == following["item"].to_numpy()[:, None]).any(axis=1)
    # mission_view_prob of those a staple does not take, a few more where the walk lands in it
    drawn = (1.0 - STRUCTURED.staple_prob) * STRUCTURED.mission_view_prob
    assert drawn - 0.05 < inside.mean() < drawn + 0.1
    # against another mission than the session's own, they land in it only by chance
    other = (following["mission"].to_numpy() + 1) % STRUCTURED.missions
    chance = (shop.missions[other] == following["item"].to_numpy()[:, None]).any(axis=1)
    assert chance.mean() < inside.mean() - 0.5


def test_hidden_states_line_up_with_the_events() -> None:
    events, _ = synthesize(STRUCTURED, seed=3, end_date=END, days=10, drift=DriftConfig())
    _, hidden = hidden_states(STRUCTURED, seed=3, end_date=END, days=10, drift=DriftConfig())
    assert hidden.column("event_id").equals(events.column("event_id"))
    items = events.column("item_id").to_pandas().str.slice(1).astype(int).to_numpy()
    assert np.array_equal(hidden.column("item").to_numpy(), items)
    kinds = hidden.column("kind").to_numpy()
    previous = hidden.column("previous_view").to_numpy()
    assert (previous[kinds != 0] == -1).all() and (previous[kinds == 0] >= 0).any()


def test_a_staple_view_is_a_detour_the_walk_goes_on_from_the_view_before_it(
    session_hidden_states: tuple[Shop, pd.DataFrame],
) -> None:
    shop, table = session_hidden_states
    views = table[table["kind"] == 0]
    k = len(shop.staple_cum)
    staples = {
        (user, int(item))
        for user in range(STRUCTURED.n_users)
        for item in shop.staples[user * k : (user + 1) * k]
    }
    walked, detoured = 0, 0
    for _, session in views.groupby("session", sort=False):
        items, previous = session["item"].tolist(), session["previous_view"].tolist()
        user = int(session["user"].iloc[0])
        assert previous[0] == -1
        for step in range(1, len(items)):
            if previous[step] == items[step - 1]:
                walked += 1
                continue
            # the view before was a staple detour: the walk still stands where it stood then
            detoured += 1
            assert (user, items[step - 1]) in staples
            assert step >= 2 and previous[step] == previous[step - 1]
    # about staple_prob of the views are detours, so the walk steps over many of them
    assert detoured > 0.15 * (walked + detoured) and walked > detoured


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Generated, 'validated' and prepared tiny data with staples and missions."""
    monkeypatch.setitem(PRESETS, "tiny", STRUCTURED)
    generate = GenerateConfig(preset="tiny", days=35)
    run = RunConfig(logical_date=END, seed=5)
    events, catalog = synthesize(STRUCTURED, seed=5, end_date=END, days=35, drift=DriftConfig())
    validated = tmp_path / "validated"
    write_parquet(validated / EVENTS_FILE, events)
    write_parquet(validated / CATALOG_FILE, catalog)
    prepared = tmp_path / "prepared"
    prepare(PrepareConfig(), run, validated, prepared)
    return {"generate": generate, "run": run, "validated": validated, "prepared": prepared}


def _ndcg(scores: torch.Tensor, targets: np.ndarray, histories: list[np.ndarray] | None) -> float:
    history = None
    if histories is not None:
        width = max(len(h) for h in histories)
        history = torch.zeros(len(histories), width, dtype=torch.long)
        for row, h in enumerate(histories):
            history[row, width - len(h) :] = torch.from_numpy(h)
    masked = mask_scores(scores, history)
    sums = batch_metric_sums(masked, torch.from_numpy(targets), ks=(10,))
    return sums["ndcg@10"] / len(targets)


def test_oracle_ranks_the_prepared_targets_above_the_baselines(chain: dict[str, object]) -> None:
    prepared = chain["prepared"]
    assert isinstance(prepared, Path)
    oracle = oracle_scores(
        chain["generate"],  # type: ignore[arg-type]
        PrepareConfig(),
        chain["run"],  # type: ignore[arg-type]
        chain["validated"],  # type: ignore[arg-type]
        prepared,
    )
    data = load_prepared(prepared)
    assert oracle.scores.shape == (len(data.test_target), data.n_items + 1)
    assert np.array_equal(oracle.targets, data.test_target)
    assert 0 <= oracle.funnel_targets < len(oracle.targets) // 10
    best = _ndcg(torch.from_numpy(oracle.scores), oracle.targets, None)
    for scorer in (ItemTransition(data.train, data.n_items), MostPopular(data.train, data.n_items)):
        baseline = ranking_metrics(scorer, data.test_history, data.test_target, ks=(10,))["ndcg@10"]
        assert best > baseline + 0.05
    # the step before a target is never the target: the oracle rules it out
    last = np.array([h[-1] for h in data.test_history])
    assert np.isneginf(oracle.scores[np.arange(len(last)), last]).all()


def test_oracle_refuses_a_time_split(chain: dict[str, object]) -> None:
    with pytest.raises(InputError, match=r"needs prepare\.split=leave_one_out"):
        oracle_scores(
            chain["generate"],  # type: ignore[arg-type]
            PrepareConfig(split="time"),
            chain["run"],  # type: ignore[arg-type]
            chain["validated"],  # type: ignore[arg-type]
            chain["prepared"],  # type: ignore[arg-type]
        )


def test_oracle_refuses_events_of_other_settings(chain: dict[str, object]) -> None:
    other_seed = RunConfig(logical_date=END, seed=6)
    with pytest.raises(InputError, match="does not make with these settings"):
        oracle_scores(
            chain["generate"],  # type: ignore[arg-type]
            PrepareConfig(),
            other_seed,
            chain["validated"],  # type: ignore[arg-type]
            chain["prepared"],  # type: ignore[arg-type]
        )


def test_oracle_refuses_a_split_of_other_events(chain: dict[str, object], tmp_path: Path) -> None:
    events, catalog = synthesize(STRUCTURED, seed=9, end_date=END, days=35, drift=DriftConfig())
    other = tmp_path / "other"
    write_parquet(other / EVENTS_FILE, events)
    write_parquet(other / CATALOG_FILE, catalog)
    with pytest.raises(InputError, match=r"not the last steps of|not in"):
        oracle_scores(
            chain["generate"],  # type: ignore[arg-type]
            PrepareConfig(),
            chain["run"],  # type: ignore[arg-type]
            other,
            chain["prepared"],  # type: ignore[arg-type]
        )


def test_oracle_names_a_missing_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="validated events not found"):
        oracle_scores(
            GenerateConfig(preset="tiny"),
            PrepareConfig(),
            RunConfig(logical_date=END),
            tmp_path / "nowhere",
            tmp_path / "prepared",
        )
