"""One day of traffic: sessions start, views walk from item to item, some views turn into sales.

Each day is simulated from its own random stream keyed by the seed and the date, so the events
of a given day are the same whatever window is asked for: a run for the next logical date
extends the history instead of rewriting it.

* each user draws sessions from a few favourite categories;
* within a session the next view follows one of the previous item's fixed "successor"
  items (same category, chosen by the seed) with probability ``successor_prob``, so the
  order of views carries signal beyond popularity;
* with probability ``staple_prob`` a view goes to one of the user's own staple items instead
  (repeat purchases: the same few items come back across the user's sessions, so the user's
  history predicts them and the previous item does not). A staple view is a detour: the walk
  goes on from the view before it, so after a staple the item two steps back, not the staple,
  predicts the next view (structure a first-order model cannot use);
* with ``mission_session_prob`` a session follows a shopping mission (a fixed set of
  complementary items); its views go to the mission's items with ``mission_view_prob``, and the
  walk goes on from there. An item belongs to several missions, so the last item leaves open
  what comes next, and the session's earlier views settle it;
* a view → add_to_cart → purchase funnel, always in that order and for the same item;
* daily and weekly seasonality of session starts, exponential gaps inside sessions.

The simulation steps through session positions with numpy arrays (sessions sorted by length,
so the sessions still active at step ``t`` are a prefix), never a Python loop per event.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from pipelines.core.params import DriftConfig
from pipelines.data.synthetic.presets import SyntheticPreset
from pipelines.data.synthetic.shop import DAY_STREAM, Shop

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
EPOCH = dt.date(1970, 1, 1)

# Relative session starts per hour of day (UTC): quiet nights, a lunch bump, an evening peak.
_HOURLY = np.array(
    [3, 2, 1.5, 1, 1, 1.5, 3, 5, 7, 8, 8, 9, 10, 9, 8, 8, 9, 10, 12, 14, 14, 12, 8, 5],
    dtype=np.float64,
)
_HOURLY_CUM = np.cumsum(_HOURLY / _HOURLY.sum())
# Relative traffic per weekday, Monday first: busier towards and over the weekend.
_WEEKDAY = np.array([0.94, 0.92, 0.95, 0.98, 1.04, 1.10, 1.07], dtype=np.float64)


def _pick_categories(
    shop: Shop, users: np.ndarray, u: np.ndarray, category_shift: float
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
class Day:
    """One day's simulated events, sorted by time; events may spill past midnight."""

    timestamp: np.ndarray  # int64 microseconds since the epoch
    kind: np.ndarray  # int8 index into EVENT_TYPES
    item: np.ndarray  # int32
    user: np.ndarray  # int32
    session: np.ndarray  # int32 session number within the day, in start-time order
    # hidden state, never part of the event log: the item the walk goes on from at a view (the
    # session's view before it, or the one before a staple detour; -1 for a session's first
    # view and for add_to_cart and purchase events)
    previous_view: np.ndarray  # int32
    # hidden state: the mission a view's session follows (-1: none, and for the funnel events)
    mission: np.ndarray  # int32


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


def _mission_items(
    shop: Shop, mission: np.ndarray, standing: np.ndarray | None, u: np.ndarray
) -> np.ndarray:
    """An item of each ``mission`` per uniform ``u``: uniformly, never the walk's ``standing`` item.

    ``standing`` is None at a session's first view, where any of the mission's items may come.
    """
    rows = shop.missions[mission]
    size = rows.shape[1]
    if standing is None:
        return rows[np.arange(len(u)), np.minimum((u * size).astype(np.int64), size - 1)]
    inside = rows == standing[:, None]
    held = inside.any(axis=1)
    slot = np.minimum((u * (size - held)).astype(np.int64), size - 1 - held)
    # skip the standing item's slot: the draw is uniform over the others
    slot += held & (slot >= inside.argmax(axis=1))
    return rows[np.arange(len(u)), slot]


def _walk_sessions(
    shop: Shop,
    preset: SyntheticPreset,
    rng: np.random.Generator,
    users: np.ndarray,
    start: np.ndarray,
    lengths: np.ndarray,
    drift: DriftConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Item views of all sessions, stepping through positions.

    Returns:
        Per view: item, time, session, the session's previous view (-1 at its start) and the
        mission the session follows (-1: none).
    """
    # longest sessions first: the sessions still running at step t are a prefix
    by_length = np.argsort(-lengths.astype(np.int16), kind="stable").astype(np.int32)
    walker, clock = users[by_length], start[by_length]
    steps = int(lengths.max(initial=0))
    active = np.searchsorted(-lengths[by_length], -np.arange(steps), side="left")
    n_views = int(active.sum())
    choice, within = rng.random(n_views), rng.random(n_views)
    gaps = _gaps_us(rng, n_views, preset.view_gap_mean_s)
    # drawn only where staples exist, so the traffic of a shop without them stays as it was
    staple_draw = rng.random(n_views) if preset.staple_prob > 0 else None
    # likewise the missions: per session (in longest-first order) the mission it follows
    mission = np.full(len(users), -1, dtype=np.int32)
    mission_draw = mission_slot = None
    if preset.mission_session_prob > 0:
        follows = rng.random(len(users)) < preset.mission_session_prob
        picked = rng.integers(0, preset.missions, len(users), dtype=np.int32)
        mission = np.where(follows, picked, -1).astype(np.int32)[by_length]
        mission_draw, mission_slot = rng.random(n_views), rng.random(n_views)
    p_follow, p_stay = preset.successor_prob, preset.same_category_prob
    k = shop.successor_cum.shape[0]

    current = np.empty(len(users), dtype=np.int32)
    items_at, times_at, previous_at, mission_at = [], [], [], []
    done = 0
    for step, n in enumerate(active.tolist()):
        r, u = choice[done : done + n], within[done : done + n]
        previous_at.append(current[:n].copy() if step else np.full(n, -1, dtype=np.int32))
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
        if mission_draw is not None and mission_slot is not None:
            draw = mission_draw[done : done + n]
            at = np.flatnonzero((mission[:n] >= 0) & (draw < preset.mission_view_prob))
            standing = previous_at[-1][at] if step else None
            items[at] = _mission_items(
                shop, mission[at], standing, mission_slot[done : done + n][at]
            )
        current[:n] = items
        if staple_draw is not None:
            # the staple replaces whatever the walk drew, so the walk's draws stay aligned
            draw = staple_draw[done : done + n]
            at = np.flatnonzero(draw < preset.staple_prob)
            slot = np.searchsorted(shop.staple_cum, draw[at] / preset.staple_prob, side="right")
            slot = np.minimum(slot, len(shop.staple_cum) - 1)
            items[at] = shop.staples[walker[at] * len(shop.staple_cum) + slot]
            # a detour: the walk stays where it was (a session's first view starts it)
            current[at] = previous_at[-1][at] if step else items[at]
        items_at.append(items)
        mission_at.append(mission[:n])
        times_at.append(clock[:n].copy())
        done += n
    sessions = np.concatenate([by_length[:n] for n in active.tolist()] or [by_length])
    if not items_at:
        empty = np.empty(0, np.int32)
        return empty, np.empty(0, np.int64), empty, empty.copy(), empty.copy()
    previous = np.concatenate(previous_at)
    missions = np.concatenate(mission_at)
    return np.concatenate(items_at), np.concatenate(times_at), sessions, previous, missions


def simulate_day(
    shop: Shop, preset: SyntheticPreset, seed: int, day: dt.date, drift: DriftConfig
) -> Day:
    """Simulate the sessions that start on ``day``, from the day's own random stream.

    Args:
        shop: The shop drawn from the seed.
        preset: Session and funnel behaviour.
        seed: Seed of the run; with the date it keys the day's stream.
        day: The day whose sessions are simulated.
        drift: ``category_shift`` sends part of the traffic to rare categories.

    Returns:
        The day's events in time order; sessions late in the day may run past midnight.
    """
    rng = np.random.default_rng([seed, DAY_STREAM, day.toordinal()])
    n_sessions = int(rng.poisson(shop.sessions_per_day * _WEEKDAY[day.weekday()]))
    users = shop.users.draw(None, rng.random(n_sessions))
    hours = np.minimum(np.searchsorted(_HOURLY_CUM, rng.random(n_sessions), side="right"), 23)
    start = (
        (day - EPOCH).days * US_PER_DAY
        + hours * (3600 * US_PER_SECOND)
        + (rng.random(n_sessions) * (3600 * US_PER_SECOND)).astype(np.int64)
    )
    lengths = np.minimum(
        rng.geometric(1.0 / preset.session_length_mean, n_sessions), preset.max_session_length
    )
    # session numbers follow start times, so session ids read in time order
    by_start = _time_order(start - (day - EPOCH).days * US_PER_DAY)
    users, start, lengths = users[by_start], start[by_start], lengths[by_start]
    view_item, view_time, view_session, view_previous, view_mission = _walk_sessions(
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
    n_funnel = len(carted) + len(purchased)
    previous = np.concatenate([view_previous, np.full(n_funnel, -1, dtype=np.int32)])
    mission = np.concatenate([view_mission, np.full(n_funnel, -1, dtype=np.int32)])
    # event numbers follow this order, so ties must come out the same on every machine
    order = _time_order(timestamp - (day - EPOCH).days * US_PER_DAY)
    session = session[order]
    return Day(
        timestamp=timestamp[order],
        kind=kind[order],
        item=item[order],
        user=users[session],
        session=session,
        previous_view=previous[order],
        mission=mission[order],
    )
