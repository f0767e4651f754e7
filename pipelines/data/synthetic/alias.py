"""Walker alias tables: O(1) draws from many small discrete distributions at once.

The simulation draws millions of items (by popularity within a category), users (by activity)
and categories (from each user's favourites); alias tables turn each draw into one uniform
number and two array lookups, for all draws of a step at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AliasTables:
    """One alias table per group, all laid out in the same arrays.

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


def alias_tables(weights: np.ndarray, groups: np.ndarray, outcomes: np.ndarray) -> AliasTables:
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
    return AliasTables(first=first, count=count, prob=prob, own=outcomes, alias=outcomes[alias])


def single_table(weights: np.ndarray) -> AliasTables:
    """One table over outcomes ``0 .. len(weights) - 1``; draw from it with ``groups=None``."""
    return alias_tables(
        weights, np.zeros(len(weights), dtype=np.int64), np.arange(len(weights), dtype=np.int32)
    )
