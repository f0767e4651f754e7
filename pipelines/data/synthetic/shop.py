"""What is drawn once from the seed: items, categories, brands, prices, users and their tastes.

Zipf item popularity, Zipf-ish category sizes, log-normal prices per category; each item has a
few fixed "successor" items in its category; each user has a few favourite categories with
Dirichlet weights, and may have a few staple items they come back to; shopping missions are
fixed sets of complementary items from across the catalogue. The drift knobs add new items,
reshuffle popularity and inflate prices, each from its own random stream so that the rest of the
shop stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.core.params import DriftConfig
from pipelines.data.synthetic.alias import AliasTables, alias_tables, single_table
from pipelines.data.synthetic.presets import SyntheticPreset

# Seed-sequence tags keep the random streams of each part independent, so that a drift knob
# changes only what it targets and each day's traffic does not depend on the others.
SHOP_STREAM, NEW_ITEMS_STREAM, POPULARITY_STREAM, DAY_STREAM, STAPLE_STREAM = 1, 2, 3, 4, 5
MISSION_STREAM = 6


@dataclass(frozen=True)
class Shop:
    """Everything drawn once from the seed; arrays are indexed by item or user number."""

    item_category: np.ndarray  # int32, per item
    item_brand: np.ndarray  # int32, per item
    item_price: np.ndarray  # float64, per item
    successors: np.ndarray  # int32, item * successors_per_item + slot -> item
    successor_cum: np.ndarray  # cumulative probability of taking successor slot k
    items: AliasTables  # item by popularity, per category
    users: AliasTables  # session's user, by activity
    sessions_per_day: float  # expected sessions on an average weekday
    favourites: AliasTables  # category from a user's favourites, per user
    rare: AliasTables  # category favouring rare ones (category_shift drift)
    # the probabilities behind the tables above, for the oracle (pipelines/data/synthetic/oracle)
    item_popularity: np.ndarray  # float64, per item: weight within its category
    favourite_category: np.ndarray  # int32, user * categories_per_user + slot -> category
    favourite_weight: np.ndarray  # float64, same layout, summing to 1 per user
    rare_weight: np.ndarray  # float64, per category, summing to 1
    staples: np.ndarray  # int32, user * staples_per_user + slot -> item (empty without staples)
    staple_cum: np.ndarray  # cumulative probability of taking staple slot k
    missions: np.ndarray  # int32, [missions, mission_size] -> item (no rows without missions)
    user_digits: int
    item_digits: int
    category_digits: int
    brand_digits: int


def _allocate(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights``, each at least ``minimum``."""
    spare = total - minimum * len(weights)
    exact = spare * weights / weights.sum()
    parts = np.floor(exact).astype(np.int64)
    # largest remainders first; ties broken by position so the split is deterministic
    short = spare - int(parts.sum())
    order = np.lexsort((np.arange(len(weights)), -(exact - parts)))
    parts[order[:short]] += 1
    return parts + minimum


def _digits(largest: int, minimum: int) -> int:
    return max(minimum, len(str(max(largest, 0))))


def _staples(
    preset: SyntheticPreset,
    seed: int,
    category: np.ndarray,
    popularity: np.ndarray,
    favourites: np.ndarray,
    affinity: np.ndarray,
) -> np.ndarray:
    """Each user's staple items: from their favourite categories by popularity (reference shop).

    Drawn from their own stream and before any drift, so the staples stay the same whatever the
    drift knobs do to the catalogue.
    """
    n_staples = preset.staples_per_user
    if n_staples == 0:
        return np.empty(0, dtype=np.int32)
    rng = np.random.default_rng([seed, STAPLE_STREAM])
    per_user = np.repeat(np.arange(preset.n_users), preset.categories_per_user)
    users = np.repeat(np.arange(preset.n_users), n_staples)
    tastes = alias_tables(affinity, per_user, favourites.astype(np.int32))
    picked = tastes.draw(users, rng.random(len(users)))
    by_category = np.argsort(category, kind="stable").astype(np.int32)
    items = alias_tables(popularity[by_category], category[by_category], by_category)
    return items.draw(picked, rng.random(len(users))).astype(np.int32)


def _missions(preset: SyntheticPreset, seed: int) -> np.ndarray:
    """The shopping missions: rows of ``mission_size`` different items of the reference shop.

    Drawn uniformly from the whole catalogue (complementary items cross categories), from their
    own stream and before any drift, so drift leaves them as they are.
    """
    size = preset.mission_size
    if preset.missions == 0:
        return np.empty((0, size), dtype=np.int32)
    rng = np.random.default_rng([seed, MISSION_STREAM])
    rows = rng.integers(0, preset.n_items, (preset.missions, size))
    while True:
        ordered = np.sort(rows, axis=1)
        repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if not len(repeated):
            return rows.astype(np.int32)
        rows[repeated] = rng.integers(0, preset.n_items, (len(repeated), size))


def build_shop(preset: SyntheticPreset, seed: int, drift: DriftConfig) -> Shop:
    """Draw the shop of ``preset`` from ``seed``, with the shop-level drift knobs applied.

    Args:
        preset: Size and behaviour of the shop.
        seed: Seed of the shop's random streams.
        drift: ``new_item_share``, ``popularity_shift`` and ``price_inflation`` change the
            shop; ``category_shift`` changes only the traffic (see ``simulation``).

    Returns:
        The shop; the same arguments give the same arrays.
    """
    rng = np.random.default_rng([seed, SHOP_STREAM])
    n_items, n_cat, k = preset.n_items, preset.n_categories, preset.successors_per_item

    cat_sizes = _allocate(n_items, 1.0 / np.arange(1, n_cat + 1) ** 0.9, minimum=3)
    category = rng.permutation(np.repeat(np.arange(n_cat, dtype=np.int32), cat_sizes))

    brands_per_cat = _allocate(preset.n_brands, cat_sizes.astype(np.float64), minimum=1)
    brand_start = np.cumsum(brands_per_cat) - brands_per_cat
    # squaring a uniform skews brand choice towards each category's first (leading) brands
    brand_draw = rng.random(n_items) ** 2 * brands_per_cat[category]
    brand = (brand_start[category] + brand_draw).astype(np.int32)

    cat_mu = rng.normal(np.log(25.0), 0.9, n_cat)
    cat_sigma = rng.uniform(0.25, 0.6, n_cat)
    base_price = np.exp(cat_mu[category] + cat_sigma[category] * rng.standard_normal(n_items))

    popularity = (rng.permutation(n_items) + 1.0) ** -preset.zipf_exponent

    # successors: for each item and slot, a random other item of the same category
    grouped = np.argsort(category, kind="stable").astype(np.int32)
    start = np.cumsum(cat_sizes) - cat_sizes
    position = np.empty(n_items, dtype=np.int64)
    position[grouped] = np.arange(n_items) - np.repeat(start, cat_sizes)
    size = cat_sizes[category][:, None]
    offset = 1 + (rng.random((n_items, k)) * (size - 1)).astype(np.int64)
    successors = grouped[start[category][:, None] + (position[:, None] + offset) % size]

    activity = rng.gamma(0.7, 1 / 0.7, preset.n_users) * preset.sessions_per_user_mean
    cat_mass = np.bincount(category, weights=popularity, minlength=n_cat)
    favourites = single_table(cat_mass).draw(
        None, rng.random(preset.n_users * preset.categories_per_user)
    )
    affinity = rng.gamma(preset.affinity_concentration, 1.0, len(favourites)) + 1e-12

    staples = _staples(preset, seed, category, popularity, favourites, affinity)
    missions = _missions(preset, seed)

    # drift: each knob draws from its own stream, so the reference shop above is untouched
    n_new = round(drift.new_item_share * n_items)
    if n_new:
        new_rng = np.random.default_rng([seed, NEW_ITEMS_STREAM])
        new_cat = new_rng.choice(n_cat, size=n_new, p=cat_sizes / n_items).astype(np.int32)
        new_draw = new_rng.random(n_new) * brands_per_cat[new_cat]
        new_price = np.exp(cat_mu[new_cat] + cat_sigma[new_cat] * new_rng.standard_normal(n_new))
        # novelties are promoted: as popular as the top decile of the reference items
        new_pop = np.quantile(popularity, 0.9) * new_rng.uniform(0.5, 1.5, n_new)
        new_slot = (new_rng.random((n_new, k)) * cat_sizes[new_cat][:, None]).astype(np.int64)
        category = np.concatenate([category, new_cat])
        brand = np.concatenate([brand, (brand_start[new_cat] + new_draw).astype(np.int32)])
        base_price = np.concatenate([base_price, new_price])
        popularity = np.concatenate([popularity, new_pop])
        successors = np.concatenate([successors, grouped[start[new_cat][:, None] + new_slot]])
    if drift.popularity_shift > 0:
        shift_rng = np.random.default_rng([seed, POPULARITY_STREAM])
        moved = shift_rng.choice(
            n_items, size=round(drift.popularity_shift * n_items), replace=False
        )
        popularity[moved] = popularity[shift_rng.permutation(moved)]

    price = np.maximum(np.round(np.maximum(base_price, 0.5) * (1 + drift.price_inflation), 2), 0.01)
    by_category = np.argsort(category, kind="stable").astype(np.int32)
    rare = 1.0 / np.bincount(category, weights=popularity, minlength=n_cat)
    successor_weights = 0.5 ** np.arange(k)
    per_user = np.repeat(np.arange(preset.n_users), preset.categories_per_user)
    items = alias_tables(popularity[by_category], category[by_category], by_category)
    favourite_tables = alias_tables(affinity, per_user, favourites.astype(np.int32))
    staple_weights = 0.5 ** np.arange(preset.staples_per_user)
    user_affinity = np.bincount(per_user, weights=affinity, minlength=preset.n_users)
    return Shop(
        item_category=category,
        item_brand=brand,
        item_price=price,
        successors=successors.astype(np.int32).ravel(),
        successor_cum=np.cumsum(successor_weights / successor_weights.sum()),
        items=items,
        users=single_table(activity),
        sessions_per_day=float(activity.sum()),
        favourites=favourite_tables,
        rare=single_table(rare),
        item_popularity=popularity,
        favourite_category=favourites.astype(np.int32),
        favourite_weight=affinity / user_affinity[per_user],
        rare_weight=rare / rare.sum(),
        staples=staples,
        staple_cum=np.cumsum(staple_weights / max(staple_weights.sum(), 1e-300)),
        missions=missions,
        user_digits=_digits(preset.n_users - 1, 6),
        # room for as many new items as reference ones, so ids keep their width under drift
        item_digits=_digits(2 * n_items - 1, 5),
        category_digits=_digits(n_cat - 1, 3),
        brand_digits=_digits(preset.n_brands - 1, 4),
    )
