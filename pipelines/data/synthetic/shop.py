"""A synthetic e-commerce clickstream with structure a sequential recommender can learn.

The shop (items, categories, brands, prices, users and their tastes) is drawn once from the
seed. Traffic is then simulated one calendar day at a time, each day from its own random
stream keyed by the seed and the date, so the events of a given day are the same whatever
window is asked for: a run for the next logical date extends the history instead of
rewriting it.

What makes the data worth learning from:

* Zipf item popularity, Zipf-ish category sizes, log-normal prices per category;
* each user draws sessions from a few favourite categories (Dirichlet weights);
* within a session the next view follows one of the previous item's fixed "successor"
  items (same category, chosen by the seed) with probability ``successor_prob``, so the
  order of views carries signal beyond popularity;
* a view → add_to_cart → purchase funnel, always in that order and for the same item;
* daily and weekly seasonality of session starts, exponential gaps inside sessions.

The simulation steps through session positions with numpy arrays (sessions sorted by length,
so the sessions still active at step ``t`` are a prefix), never a Python loop per event.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.core.params import DriftConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA, EVENT_TYPES

log = logging.getLogger("recflow.synthetic")

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
_EPOCH = dt.date(1970, 1, 1)

# Relative session starts per hour of day (UTC): quiet nights, a lunch bump, an evening peak.
_HOURLY = np.array(
    [3, 2, 1.5, 1, 1, 1.5, 3, 5, 7, 8, 8, 9, 10, 9, 8, 8, 9, 10, 12, 14, 14, 12, 8, 5],
    dtype=np.float64,
)
_HOURLY_CUM = np.cumsum(_HOURLY / _HOURLY.sum())
# Relative traffic per weekday, Monday first: busier towards and over the weekend.
_WEEKDAY = np.array([0.94, 0.92, 0.95, 0.98, 1.04, 1.10, 1.07], dtype=np.float64)

# Seed-sequence tags keep the random streams of each part independent, so that a drift knob
# changes only what it targets and each day's traffic does not depend on the others.
_SHOP_STREAM, _NEW_ITEMS_STREAM, _POPULARITY_STREAM, _DAY_STREAM = 1, 2, 3, 4


@dataclass(frozen=True)
class SyntheticPreset:
    """Size and behaviour of a synthetic shop.

    Attributes:
        n_users: Number of users.
        n_items: Number of items in the reference catalog (drift may add new ones).
        n_categories: Number of item categories (Zipf-ish sizes, at least 3 items each).
        n_brands: Number of brands; each category has its own, in proportion to its size.
        sessions_per_user_mean: Mean sessions a user starts per day; user activity is
            heavy-tailed (gamma) around it.
        session_length_mean: Mean number of item views in a session (geometric).
        max_session_length: Views in a session are capped at this many.
        categories_per_user: Favourite categories a user's sessions are drawn from.
        affinity_concentration: Dirichlet parameter of the weights over those favourites;
            small values make users stick to one or two of them.
        zipf_exponent: Item popularity is ``1 / rank ** zipf_exponent``.
        successors_per_item: Fixed successor items per item, in its category; the first is
            followed twice as often as the second, and so on.
        successor_prob: Probability that the next view follows a successor of the last item.
        same_category_prob: Otherwise, probability that it stays in the last item's category
            (by popularity); else the user switches to one of their favourite categories.
        cart_prob: Probability that a view leads to an add_to_cart of that item.
        purchase_prob: Probability that an add_to_cart leads to a purchase.
        view_gap_mean_s: Mean seconds between views in a session (exponential, plus 1 s).
        cart_gap_mean_s: Mean seconds from a view to its add_to_cart.
        purchase_gap_mean_s: Mean seconds from an add_to_cart to its purchase.
    """

    n_users: int
    n_items: int
    n_categories: int
    n_brands: int
    sessions_per_user_mean: float
    session_length_mean: float
    max_session_length: int = 40
    categories_per_user: int = 3
    affinity_concentration: float = 0.6
    zipf_exponent: float = 1.0
    successors_per_item: int = 3
    successor_prob: float = 0.6
    same_category_prob: float = 0.7
    cart_prob: float = 0.07
    purchase_prob: float = 0.35
    view_gap_mean_s: float = 40.0
    cart_gap_mean_s: float = 20.0
    purchase_gap_mean_s: float = 90.0

    def __post_init__(self) -> None:
        if self.n_items < 3 * self.n_categories:
            raise ValueError("a preset needs at least 3 items per category")
        if self.n_brands < self.n_categories:
            raise ValueError("a preset needs at least one brand per category")
        if self.n_users < 1 or self.session_length_mean < 1 or self.max_session_length < 1:
            raise ValueError("a preset needs users and sessions of at least one view")
        if self.max_session_length > 10_000:
            raise ValueError("max_session_length must be at most 10000")


PRESETS: dict[str, SyntheticPreset] = {
    # unit and integration tests: ~15k events over 35 days, generated in well under a second
    "tiny": SyntheticPreset(
        n_users=300,
        n_items=150,
        n_categories=8,
        n_brands=24,
        sessions_per_user_mean=0.27,
        session_length_mean=5.0,
        max_session_length=30,
    ),
    # `make run`: a real workload that the whole chain still handles in minutes on 2 cores
    "default": SyntheticPreset(
        n_users=6_000,
        n_items=2_000,
        n_categories=30,
        n_brands=200,
        sessions_per_user_mean=0.33,
        session_length_mean=6.0,
    ),
    # benchmarks: ~10M events over 35 days
    "large": SyntheticPreset(
        n_users=150_000,
        n_items=50_000,
        n_categories=120,
        n_brands=3_000,
        sessions_per_user_mean=0.26,
        session_length_mean=7.0,
        max_session_length=50,
        categories_per_user=4,
    ),
}


@dataclass(frozen=True)
class _Alias:
    """Walker alias tables: O(1) draws from many small discrete distributions at once.

    Slots are laid out group after group; a draw picks a slot of its group uniformly, then
    keeps the slot's own outcome with probability ``prob`` or takes its alias outcome.
    """

    first: np.ndarray  # first slot of each group
    count: np.ndarray  # slots in each group
    prob: np.ndarray  # per slot
    own: np.ndarray  # per slot: outcome kept with probability prob
    alias: np.ndarray  # per slot: outcome otherwise

    def draw(self, groups: np.ndarray | None, u: np.ndarray) -> np.ndarray:
        """One outcome per uniform ``u`` in ``[0, 1)``, from the group at the same position."""
        if groups is None:
            first, count = self.first[0], self.count[0]
        else:
            first, count = self.first[groups], self.count[groups]
        scaled = u * count
        whole = scaled.astype(np.int64)
        # the fractional part is a fresh uniform: one random number serves both choices
        slot = np.minimum(whole, count - 1) + first
        keep = (scaled - whole) < self.prob[slot]
        return np.where(keep, self.own[slot], self.alias[slot])


def _grouped_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each run of equal (sorted) group labels."""
    if len(values) == 0:
        return values.copy()
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    base = (total - values)[starts]
    return total - np.repeat(base, np.diff(np.r_[starts, len(values)]))


def _alias_tables(weights: np.ndarray, groups: np.ndarray, outcomes: np.ndarray) -> _Alias:
    """Build alias tables for slots with ``weights``, grouped by sorted ``groups`` labels.

    This is Vose's sweep without its Python loop. Within a group the weights are scaled to a
    mean of 1; the "small" slots (below 1) take their deficits, in order, from the excess of
    the "large" ones. With cumulative deficits D and cumulative excesses E, a small slot
    borrows from the first large slot whose E passes the D before it, and a large slot turns
    small (and borrows from the next large one) at the first small slot whose D passes its E.
    """
    n_groups = int(groups[-1]) + 1
    count = np.bincount(groups, minlength=n_groups)
    first = np.cumsum(count) - count
    mass = np.bincount(groups, weights=weights, minlength=n_groups)
    scaled = weights * (count / mass)[groups]
    small = np.flatnonzero(scaled < 1.0)
    large = np.flatnonzero(scaled >= 1.0)
    # offsetting each group by more than its total keeps every search inside its group
    span = float(count.max()) + 1.0
    deficit = 1.0 - scaled[small]
    deficit_end = _grouped_cumsum(deficit, groups[small]) + groups[small] * span
    excess_end = _grouped_cumsum(scaled[large] - 1.0, groups[large]) + groups[large] * span
    last_large = np.searchsorted(groups[large], np.arange(n_groups), side="right") - 1

    prob = np.ones(len(weights))
    alias = np.arange(len(weights))
    lender = np.searchsorted(excess_end, deficit_end - deficit, side="right")
    lender = np.minimum(lender, last_large[groups[small]])
    prob[small] = scaled[small]
    alias[small] = large[lender]

    turn = np.searchsorted(deficit_end, excess_end, side="right")
    rank = np.arange(len(large))
    turned = rank < last_large[groups[large]]
    turned &= turn < len(small)
    turned[turned] &= groups[small[turn[turned]]] == groups[large[turned]]
    prob[large[turned]] = np.clip(1.0 + excess_end[turned] - deficit_end[turn[turned]], 0.0, 1.0)
    alias[large[turned]] = large[rank[turned] + 1]
    return _Alias(first=first, count=count, prob=prob, own=outcomes, alias=outcomes[alias])


@dataclass(frozen=True)
class _Shop:
    """Everything drawn once from the seed; arrays are indexed by item or user number."""

    item_category: np.ndarray  # int32, per item
    item_brand: np.ndarray  # int32, per item
    item_price: np.ndarray  # float64, per item
    successors: np.ndarray  # int32, item * successors_per_item + slot -> item
    successor_cum: np.ndarray  # cumulative probability of taking successor slot k
    items: _Alias  # item by popularity, per category
    users: _Alias  # session's user, by activity
    sessions_per_day: float  # expected sessions on an average weekday
    favourites: _Alias  # category from a user's favourites, per user
    rare: _Alias  # category favouring rare ones (category_shift drift)
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


def _single_group(weights: np.ndarray) -> _Alias:
    return _alias_tables(
        weights, np.zeros(len(weights), dtype=np.int64), np.arange(len(weights), dtype=np.int32)
    )


def _build_shop(preset: SyntheticPreset, seed: int, drift: DriftConfig) -> _Shop:
    rng = np.random.default_rng([seed, _SHOP_STREAM])
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
    favourites = _single_group(cat_mass).draw(
        None, rng.random(preset.n_users * preset.categories_per_user)
    )
    affinity = rng.gamma(preset.affinity_concentration, 1.0, len(favourites)) + 1e-12

    # drift: each knob draws from its own stream, so the reference shop above is untouched
    n_new = round(drift.new_item_share * n_items)
    if n_new:
        new_rng = np.random.default_rng([seed, _NEW_ITEMS_STREAM])
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
        shift_rng = np.random.default_rng([seed, _POPULARITY_STREAM])
        moved = shift_rng.choice(
            n_items, size=round(drift.popularity_shift * n_items), replace=False
        )
        popularity[moved] = popularity[shift_rng.permutation(moved)]

    price = np.maximum(np.round(np.maximum(base_price, 0.5) * (1 + drift.price_inflation), 2), 0.01)
    by_category = np.argsort(category, kind="stable").astype(np.int32)
    rare = 1.0 / np.bincount(category, weights=popularity, minlength=n_cat)
    successor_weights = 0.5 ** np.arange(k)
    per_user = np.repeat(np.arange(preset.n_users), preset.categories_per_user)
    return _Shop(
        item_category=category,
        item_brand=brand,
        item_price=price,
        successors=successors.astype(np.int32).ravel(),
        successor_cum=np.cumsum(successor_weights / successor_weights.sum()),
        items=_alias_tables(popularity[by_category], category[by_category], by_category),
        users=_single_group(activity),
        sessions_per_day=float(activity.sum()),
        favourites=_alias_tables(affinity, per_user, favourites.astype(np.int32)),
        rare=_single_group(rare),
        user_digits=_digits(preset.n_users - 1, 6),
        # room for as many new items as reference ones, so ids keep their width under drift
        item_digits=_digits(2 * n_items - 1, 5),
        category_digits=_digits(n_cat - 1, 3),
        brand_digits=_digits(preset.n_brands - 1, 4),
    )


def _pick_categories(
    shop: _Shop, users: np.ndarray, u: np.ndarray, category_shift: float
) -> np.ndarray:
    """A category per uniform ``u``: one of the user's favourites, or a rare one under drift."""
    if category_shift <= 0:
        return shop.favourites.draw(users, u)
    picked = np.empty(len(u), dtype=np.int32)
    rare = u < category_shift
    at = np.flatnonzero(rare)
    picked[at] = shop.rare.draw(None, u[at] / category_shift)
    at = np.flatnonzero(~rare)
    if len(at):
        rescaled = (u[at] - category_shift) / (1.0 - category_shift)
        picked[at] = shop.favourites.draw(users[at], rescaled)
    return picked


@dataclass(frozen=True)
class _Day:
    """One day's simulated events, sorted by time; events may spill past midnight."""

    timestamp: np.ndarray  # int64 microseconds since the epoch
    kind: np.ndarray  # int8 index into EVENT_TYPES
    item: np.ndarray  # int32
    user: np.ndarray  # int32
    session: np.ndarray  # int32 session number within the day, in start-time order


def _time_order(offsets: np.ndarray) -> np.ndarray:
    """Positions that sort non-negative ``offsets``, ties in position order, on every machine.

    Packing the position into the low bits makes every key unique, so numpy's fastest sort
    (not a stable one) still gives one canonical answer.
    """
    bits = max(1, len(offsets).bit_length())
    if len(offsets) and int(offsets.max()) >= 1 << (63 - bits):
        return np.argsort(offsets, kind="stable")
    keys = (offsets << bits) | np.arange(len(offsets), dtype=np.int64)
    return np.sort(keys) & ((1 << bits) - 1)


def _gaps_us(rng: np.random.Generator, n: int, mean_s: float) -> np.ndarray:
    # one extra second keeps consecutive events of a session strictly ordered
    return ((1.0 + rng.exponential(mean_s, n)) * US_PER_SECOND).astype(np.int64)


def _walk_sessions(
    shop: _Shop,
    preset: SyntheticPreset,
    rng: np.random.Generator,
    users: np.ndarray,
    start: np.ndarray,
    lengths: np.ndarray,
    drift: DriftConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item views of all sessions, stepping through positions; returns item, time, session."""
    # longest sessions first: the sessions still running at step t are a prefix
    by_length = np.argsort(-lengths.astype(np.int16), kind="stable").astype(np.int32)
    walker, clock = users[by_length], start[by_length]
    steps = int(lengths.max(initial=0))
    active = np.searchsorted(-lengths[by_length], -np.arange(steps), side="left")
    n_views = int(active.sum())
    choice, within = rng.random(n_views), rng.random(n_views)
    gaps = _gaps_us(rng, n_views, preset.view_gap_mean_s)
    p_follow, p_stay = preset.successor_prob, preset.same_category_prob
    k = shop.successor_cum.shape[0]

    current = np.empty(len(users), dtype=np.int32)
    items_at, times_at = [], []
    done = 0
    for step, n in enumerate(active.tolist()):
        r, u = choice[done : done + n], within[done : done + n]
        if step == 0:
            items = shop.items.draw(_pick_categories(shop, walker, r, drift.category_shift), u)
        else:
            prev = current[:n]
            items = np.empty(n, dtype=np.int32)
            at = np.flatnonzero(r < p_follow)
            slot = np.searchsorted(shop.successor_cum, r[at] / p_follow, side="right")
            items[at] = shop.successors[prev[at] * k + np.minimum(slot, k - 1)]
            at = np.flatnonzero(r >= p_follow)
            cats = shop.item_category[prev[at]]
            rest = (r[at] - p_follow) / (1.0 - p_follow)
            switch = np.flatnonzero(rest >= p_stay)
            cats[switch] = _pick_categories(
                shop,
                walker[at[switch]],
                (rest[switch] - p_stay) / (1.0 - p_stay),
                drift.category_shift,
            )
            items[at] = shop.items.draw(cats, u[at])
            clock[:n] += gaps[done : done + n]
        current[:n] = items
        items_at.append(items)
        times_at.append(clock[:n].copy())
        done += n
    sessions = np.concatenate([by_length[:n] for n in active.tolist()] or [by_length])
    if not items_at:
        return np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int32)
    return np.concatenate(items_at), np.concatenate(times_at), sessions


def _simulate_day(
    shop: _Shop, preset: SyntheticPreset, seed: int, day: dt.date, drift: DriftConfig
) -> _Day:
    rng = np.random.default_rng([seed, _DAY_STREAM, day.toordinal()])
    n_sessions = int(rng.poisson(shop.sessions_per_day * _WEEKDAY[day.weekday()]))
    users = shop.users.draw(None, rng.random(n_sessions))
    hours = np.minimum(np.searchsorted(_HOURLY_CUM, rng.random(n_sessions), side="right"), 23)
    start = (
        (day - _EPOCH).days * US_PER_DAY
        + hours * (3600 * US_PER_SECOND)
        + (rng.random(n_sessions) * (3600 * US_PER_SECOND)).astype(np.int64)
    )
    lengths = np.minimum(
        rng.geometric(1.0 / preset.session_length_mean, n_sessions), preset.max_session_length
    )
    # session numbers follow start times, so session ids read in time order
    by_start = _time_order(start - (day - _EPOCH).days * US_PER_DAY)
    users, start, lengths = users[by_start], start[by_start], lengths[by_start]
    view_item, view_time, view_session = _walk_sessions(
        shop, preset, rng, users, start, lengths, drift
    )

    n_views = len(view_item)
    carted = np.flatnonzero(rng.random(n_views) < preset.cart_prob)
    cart_time = view_time[carted] + _gaps_us(rng, len(carted), preset.cart_gap_mean_s)
    bought = rng.random(len(carted)) < preset.purchase_prob
    purchase_time = cart_time[bought] + _gaps_us(rng, int(bought.sum()), preset.purchase_gap_mean_s)
    purchased = carted[bought]

    timestamp = np.concatenate([view_time, cart_time, purchase_time])
    kind = np.repeat(np.arange(3, dtype=np.int8), [n_views, len(carted), len(purchased)])
    item = np.concatenate([view_item, view_item[carted], view_item[purchased]])
    session = np.concatenate([view_session, view_session[carted], view_session[purchased]])
    # event numbers follow this order, so ties must come out the same on every machine
    order = _time_order(timestamp - (day - _EPOCH).days * US_PER_DAY)
    session = session[order]
    return _Day(
        timestamp=timestamp[order],
        kind=kind[order],
        item=item[order],
        user=users[session],
        session=session,
    )


_CHUNK_ROWS = 1 << 22


def _number_table(count: int, digits: int, prefix: str = "") -> np.ndarray:
    """Rows of ASCII text ``prefix`` + the numbers ``0 .. count-1`` zero-padded to ``digits``."""
    table = np.empty((max(count, 1), len(prefix) + digits), dtype=np.uint8)
    table[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    rest = np.arange(max(count, 1))
    for column in range(table.shape[1] - 1, len(prefix) - 1, -1):
        table[:, column] = 48 + rest % 10
        rest //= 10
    if rest.any():
        raise ValueError(f"{count - 1} does not fit in {digits} digits")
    return table


def _text_table(values: Sequence[str]) -> np.ndarray:
    """Rows of ASCII text, one per value; the values must all have the same length."""
    return np.array([list(v.encode("ascii")) for v in values], dtype=np.uint8)


def _ascii_ids(parts: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> pa.ChunkedArray:
    """Fixed-width ASCII strings assembled from rows of preformatted text tables.

    String ``i`` is the concatenation, over ``parts = [(codes, table), ...]``, of row
    ``codes[i]`` of each table (a uint8 matrix). Formatting millions of ids one Python string
    at a time would dominate the run time; the bytes are gathered with numpy, one opaque
    record per row, and handed to Arrow as a string array instead.
    """
    layout = np.dtype([(f"f{k}", f"V{table.shape[1]}") for k, (_, table) in enumerate(parts)])
    packed = [np.ascontiguousarray(table).view(f"V{table.shape[1]}").ravel() for _, table in parts]
    chunks = []
    for lo in range(0, max(n, 1), _CHUNK_ROWS):
        hi = min(n, lo + _CHUNK_ROWS)
        if len(parts) == 1:
            rows = packed[0][parts[0][0][lo:hi]]
        else:
            rows = np.empty(hi - lo, dtype=layout)
            for k, (codes, _) in enumerate(parts):
                rows[f"f{k}"] = packed[k][codes[lo:hi]]
        offsets = np.arange(0, (hi - lo + 1) * layout.itemsize, layout.itemsize, dtype=np.int32)
        chunks.append(
            pa.StringArray.from_buffers(hi - lo, pa.py_buffer(offsets), pa.py_buffer(rows))
        )
    return pa.chunked_array(chunks, type=pa.string())


def _numeric(arrow_type: pa.DataType, values: np.ndarray) -> pa.Array:
    """Wrap a numpy array's buffer as an Arrow array (no conversion: it must match the type)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _coded_strings(values: Sequence[str], codes: np.ndarray) -> pa.ChunkedArray:
    """Strings ``values[codes[i]]``, decoded from a dictionary array by Arrow."""
    encoded = [v.encode("ascii") for v in values]
    offsets = np.cumsum([0] + [len(v) for v in encoded], dtype=np.int32)
    # built from buffers: pa.array() on Python objects would import pandas (seconds)
    dictionary = pa.StringArray.from_buffers(
        len(values), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))
    )
    codes = np.ascontiguousarray(codes, dtype=np.int8)
    chunks = []
    for lo in range(0, max(len(codes), 1), _CHUNK_ROWS):
        part = codes[lo : lo + _CHUNK_ROWS]
        indices = pa.Array.from_buffers(pa.int8(), len(part), [None, pa.py_buffer(part)])
        chunks.append(pa.DictionaryArray.from_arrays(indices, dictionary).dictionary_decode())
    return pa.chunked_array(chunks, type=pa.string())


def synthesize(
    preset: SyntheticPreset,
    *,
    seed: int,
    end_date: dt.date,
    days: int,
    drift: DriftConfig,
) -> tuple[pa.Table, pa.Table]:
    """Simulate ``days`` days of shop traffic ending on ``end_date`` (inclusive).

    Args:
        preset: Size and behaviour of the shop.
        seed: Seed of every random draw; the same seed gives the same tables.
        end_date: Last day of the history; no event is later than its 23:59:59.999999 UTC.
        days: Number of days of history.
        drift: Shifts away from the reference traffic; all zero gives the reference.

    Returns:
        ``(events, catalog)`` matching ``EVENT_SCHEMA`` and ``CATALOG_SCHEMA``; events sorted
        by timestamp then event_id, catalog by item_id.

    Raises:
        ValueError: ``days`` is not positive.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    seed = int(seed) % 2**63
    shop = _build_shop(preset, seed, drift)
    first_day = end_date - dt.timedelta(days=days - 1)
    window_lo = (first_day - _EPOCH).days * US_PER_DAY
    window_hi = (end_date - _EPOCH).days * US_PER_DAY + US_PER_DAY

    # the day before the window is simulated too, for the sessions that run past its midnight
    simulated = [first_day + dt.timedelta(days=i) for i in range(-1, days)]
    day_events = [_simulate_day(shop, preset, seed, day, drift) for day in simulated]
    sizes = [len(d.timestamp) for d in day_events]
    max_sessions = max(int(d.session.max(initial=0)) + 1 for d in day_events)
    items = _number_table(len(shop.item_category), shop.item_digits, "i")
    categories = _number_table(preset.n_categories, shop.category_digits, "c")

    timestamp = np.concatenate([d.timestamp for d in day_events])
    # Days are concatenated in date order and sorted inside, so a stable sort by time breaks
    # ties by (day, counter): exactly the order of the fixed-width event ids.
    order = np.argsort(timestamp, kind="stable")
    timestamp = timestamp[order]
    inside = (timestamp >= window_lo) & (timestamp < window_hi)
    order, timestamp = order[inside], timestamp[inside]
    day_index = np.repeat(np.arange(len(simulated), dtype=np.int32), sizes)[order]
    counter = np.concatenate([np.arange(s, dtype=np.int32) for s in sizes])[order]
    kind = np.concatenate([d.kind for d in day_events])[order]
    item = np.concatenate([d.item for d in day_events])[order]
    user = np.concatenate([d.user for d in day_events])[order]
    session = np.concatenate([d.session for d in day_events])[order]
    del day_events

    n = len(order)
    day_prefixes = _text_table([f"e{d:%Y%m%d}-" for d in simulated])
    session_prefixes = _text_table([f"s{d:%Y%m%d}-" for d in simulated])
    users = _number_table(preset.n_users, shop.user_digits, "u")
    events = pa.Table.from_arrays(
        [
            _ascii_ids([(day_index, day_prefixes), (counter, _number_table(max(sizes), 8))], n),
            _ascii_ids([(user, users)], n),
            _ascii_ids([(item, items)], n),
            _ascii_ids(
                [(day_index, session_prefixes), (session, _number_table(max_sessions, 7))], n
            ),
            _coded_strings(EVENT_TYPES, kind),
            _numeric(pa.timestamp("us", tz="UTC"), timestamp.astype(np.int64)),
            _numeric(pa.float64(), shop.item_price[item]),
            _ascii_ids([(shop.item_category[item], categories)], n),
        ],
        schema=EVENT_SCHEMA,
    )
    n_items = len(shop.item_category)
    brands = _number_table(preset.n_brands, shop.brand_digits, "b")
    catalog = pa.Table.from_arrays(
        [
            _ascii_ids([(np.arange(n_items), items)], n_items),
            _ascii_ids([(shop.item_category, categories)], n_items),
            _ascii_ids([(shop.item_brand, brands)], n_items),
            _numeric(pa.float64(), shop.item_price),
        ],
        schema=CATALOG_SCHEMA,
    )
    log.debug("synthesized %d events over %d days, %d catalog items", n, days, n_items)
    return events, catalog
