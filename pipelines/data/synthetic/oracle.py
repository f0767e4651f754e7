"""The best ranking of the test targets that the generator's own probabilities give: a ceiling.

The generator draws each view from a known distribution: one of the user's staples with
``staple_prob``, else, in a session that follows a shopping mission, one of the mission's items
with ``mission_view_prob``, else a successor of the walk's item (the session's previous view, or
the view before a staple detour), an item of its category or an item of one of the user's
favourite categories, each by popularity (``simulation``). Knowing the hidden state behind a test
target (the user, the walk's item, the session's mission), the oracle scores every item by the
probability that the generator draws it there, and no model that only sees the
history can rank the targets better on average.

The targets are those of the prepare stage's leave-one-out split, found again from the validated
events with the prepare stage's own ordering and de-duplication; the item of the step before
the target is excluded (with ``dedupe_consecutive`` a step never repeats the one before it). A
target whose step starts with an add_to_cart or a purchase rather than a view (the funnel event
of an item viewed earlier, not merged with its view because another view came in between) is an
event the generator makes certain once the view is drawn: the oracle knows it and ranks that item
first. ``OracleScores.funnel_targets`` counts them.

The hidden state comes from running the same simulation again (``tables.hidden_states``); it is
never written beside the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet
from pipelines.core.params import GenerateConfig, PrepareConfig, RunConfig
from pipelines.core.schema import EVENT_COLUMNS, EVENTS_FILE
from pipelines.data.preparation import dedupe_consecutive, ordered_events
from pipelines.data.synthetic.presets import PRESETS, SyntheticPreset
from pipelines.data.synthetic.shop import Shop
from pipelines.data.synthetic.tables import hidden_states

VIEW = 0
_USERS_PER_SLICE = 512


@dataclass(frozen=True)
class OracleScores:
    """The oracle's scores of every prepared item for every test user.

    Attributes:
        user_idx: ``[U]`` the test users, in the order of ``test.parquet``.
        scores: ``[U, n_items + 1]`` the probability of each item (column = ``item_idx``, 0 is
            padding) being the target step; ``-inf`` for the item of the step before it.
        targets: ``[U]`` the target ``item_idx``, as in ``test.parquet``.
        histories: The test histories of ``test.parquet`` (for masking).
        funnel_targets: How many targets were a funnel event, not a view (ranked first).
    """

    user_idx: np.ndarray
    scores: np.ndarray
    targets: np.ndarray
    histories: list[np.ndarray]
    funnel_targets: int


def view_probabilities(
    shop: Shop,
    preset: SyntheticPreset,
    category_shift: float,
    users: np.ndarray,
    previous: np.ndarray,
    missions: np.ndarray | None = None,
) -> np.ndarray:
    """The generator's probability of each item being the next view, per state.

    Args:
        shop: The shop the events were drawn from.
        preset: Its behaviour knobs.
        category_shift: The drift knob that sends part of the category picks to rare ones.
        users: ``[B]`` user numbers of the shop.
        previous: ``[B]`` the walk's item (the session's previous view, or the view before a
            staple detour), -1 at a session's start.
        missions: ``[B]`` the mission the session follows, -1 for none; None: no missions.

    Returns:
        ``[B, n_shop_items]`` float64 probabilities; each row sums to 1.
    """
    n_items = len(shop.item_category)
    n_categories = preset.n_categories
    category = shop.item_category
    mass = np.bincount(category, weights=shop.item_popularity, minlength=n_categories)
    within = shop.item_popularity / mass[category]
    batch = len(users)
    rows = np.arange(batch)

    # where a session starts or switches: a favourite category, or a rare one under drift
    per_user = preset.categories_per_user
    slots = users[:, None] * per_user + np.arange(per_user)
    picks = np.zeros((batch, n_categories))
    np.add.at(
        picks,
        (np.repeat(rows, per_user), shop.favourite_category[slots].ravel()),
        shop.favourite_weight[slots].ravel(),
    )
    picks = (1.0 - category_shift) * picks + category_shift * shop.rare_weight[None, :]
    fresh = picks[:, category] * within[None, :]

    walk = fresh.copy()
    going = np.flatnonzero(previous >= 0)
    if len(going):
        p_follow, p_stay = preset.successor_prob, preset.same_category_prob
        k = len(shop.successor_cum)
        slot_weight = np.diff(shop.successor_cum, prepend=0.0)
        last = previous[going]
        same = (category[None, :] == category[last][:, None]) * within[None, :]
        walk[going] = (1.0 - p_follow) * (p_stay * same + (1.0 - p_stay) * fresh[going])
        successors = shop.successors[last[:, None] * k + np.arange(k)]
        np.add.at(
            walk,
            (np.repeat(going, k), successors.ravel()),
            np.tile(p_follow * slot_weight, len(going)),
        )
    if missions is not None and len(following := np.flatnonzero(missions >= 0)):
        # a mission view: one of the mission's items, uniformly, never the walk's own item
        members = shop.missions[missions[following]]
        size = members.shape[1]
        held = (members == previous[following][:, None]).any(axis=1)
        share = preset.mission_view_prob / (size - held)
        walk[following] *= 1.0 - preset.mission_view_prob
        np.add.at(walk, (np.repeat(following, size), members.ravel()), np.repeat(share, size))
        standing = np.flatnonzero(held)
        walk[following[standing], previous[following[standing]]] -= share[standing]
    if preset.staple_prob > 0:
        n_staples = len(shop.staple_cum)
        staple_weight = np.diff(shop.staple_cum, prepend=0.0)
        staples = shop.staples[users[:, None] * n_staples + np.arange(n_staples)]
        walk *= 1.0 - preset.staple_prob
        np.add.at(
            walk,
            (np.repeat(rows, n_staples), staples.ravel()),
            np.tile(preset.staple_prob * staple_weight, batch),
        )
    assert walk.shape == (batch, n_items)
    return walk


def _shop_number(ids: pd.Series, prefix: str) -> np.ndarray:
    """The shop's number behind a synthetic id (``u000123`` -> 123)."""
    if not ids.str.startswith(prefix).all():
        raise InputError(f"ids {ids.iloc[0]!r}... are not the synthetic generator's {prefix}<n>")
    return ids.str.slice(len(prefix)).astype(np.int64).to_numpy()


def oracle_scores(
    generate: GenerateConfig,
    prepare: PrepareConfig,
    run: RunConfig,
    validated: Path,
    prepared: Path,
) -> OracleScores:
    """The oracle's scores of the prepare stage's test targets.

    Args:
        generate: The generator settings the events were made with.
        prepare: The prepare settings the split was made with (leave-one-out only).
        run: The run (logical date, seed) the events were generated for.
        validated: The validated batch the prepare stage read.
        prepared: The prepare stage's output folder.

    Returns:
        Scores of every prepared item for every test user, aligned with ``test.parquet``.

    Raises:
        InputError: The split is not leave-one-out, an input is missing, or the prepared targets
            are not the generator's events for these settings.
    """
    if prepare.split != "leave_one_out":
        raise InputError(f"the oracle needs prepare.split=leave_one_out, not {prepare.split!r}")
    hint = "(run the validate and prepare stages first)"
    events = read_parquet(
        validated / EVENTS_FILE, "validated events", require=EVENT_COLUMNS, hint=hint
    ).to_pandas()
    steps = ordered_events(events, prepare)
    if prepare.dedupe_consecutive:
        steps = dedupe_consecutive(steps)
    last = steps.groupby("user_id", sort=False).tail(2)
    position = last.groupby("user_id", sort=False).cumcount(ascending=False)
    target_steps = last[position == 0].set_index("user_id")
    before = last[position == 1].set_index("user_id")["item_id"]

    user_map = read_parquet(prepared / "user_map.parquet", "user map", hint=hint).to_pandas()
    item_map = read_parquet(prepared / "item_map.parquet", "item map", hint=hint).to_pandas()
    test = read_parquet(prepared / "test.parquet", "test split", hint=hint).to_pandas()
    user_ids = user_map.set_index("user_idx")["user_id"].reindex(test["user_idx"]).to_numpy()
    if pd.isna(user_ids).any() or not np.isin(user_ids, target_steps.index).all():
        raise InputError(f"{prepared} has test users that are not in {validated}")
    target_steps = target_steps.loc[user_ids]
    item_index = pd.Series(item_map["item_idx"].to_numpy(), index=item_map["item_id"])
    found = item_index.reindex(target_steps["item_id"]).to_numpy()
    if not np.array_equal(found, test["target"].to_numpy()):
        raise InputError(
            f"the test targets of {prepared} are not the last steps of {validated}: "
            "prepared from other events or other prepare settings"
        )

    shop, hidden = hidden_states(
        PRESETS[generate.preset],
        seed=run.seed,
        end_date=run.logical_date,
        days=generate.days,
        drift=generate.drift,
    )
    state = hidden.to_pandas().set_index("event_id").reindex(target_steps["event_id"])
    if state["user"].isna().any():
        raise InputError(
            f"{validated} holds events the generator does not make with these settings "
            f"(generate.preset={generate.preset}, run.seed={run.seed}, "
            f"run.logical_date={run.logical_date})"
        )
    users = state["user"].to_numpy(np.int64)
    if not np.array_equal(users, _shop_number(target_steps.index.to_series(), "u")):
        raise InputError("the oracle's hidden state does not match the events' users")
    previous = state["previous_view"].to_numpy(np.int64)
    missions = state["mission"].to_numpy(np.int64)
    funnel = state["kind"].to_numpy() != VIEW

    shop_items = _shop_number(item_map["item_id"], "i")
    columns = item_map["item_idx"].to_numpy()
    scores = np.full((len(users), len(item_map) + 1), -np.inf)
    # in slices of users: a row per user over the whole shop would not fit for the large preset
    for lo in range(0, len(users), _USERS_PER_SLICE):
        part = slice(lo, lo + _USERS_PER_SLICE)
        probabilities = view_probabilities(
            shop,
            PRESETS[generate.preset],
            generate.drift.category_shift,
            users[part],
            previous[part],
            missions[part],
        )
        scores[part, columns] = probabilities[:, shop_items]
    rows = np.flatnonzero(funnel)
    scores[rows, found[rows]] = 2.0  # above any probability: the event is certain
    if prepare.dedupe_consecutive:
        previous_step = item_index.reindex(before.reindex(user_ids)).to_numpy()
        has = ~pd.isna(previous_step)
        scores[np.flatnonzero(has), previous_step[has].astype(np.int64)] = -np.inf
    histories = [np.asarray(h, dtype=np.int64) for h in test["history"]]
    return OracleScores(
        user_idx=test["user_idx"].to_numpy(),
        scores=scores,
        targets=test["target"].to_numpy().astype(np.int64),
        histories=histories,
        funnel_targets=int(funnel.sum()),
    )
