"""The sizes and behaviours of a synthetic shop: ``SyntheticPreset`` and the named ``PRESETS``.

``generate.preset`` in ``params.yaml`` picks one by name.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        staples_per_user: Staple items per user (repeat purchases), drawn once from the user's
            favourite categories by popularity; the first is taken twice as often as the
            second, and so on. 0: none.
        staple_prob: Probability that a view, wherever the walk stands, goes to one of the
            user's staples instead: structure the user's history reveals and the previous item
            does not, so a sequence model can use it and a first-order model cannot.
        missions: Shopping missions: fixed sets of complementary items drawn once from the whole
            catalogue (a tent, a sleeping bag, a stove...); an item may belong to several.
            0: none.
        mission_size: Items per mission, all different.
        mission_session_prob: Probability that a session follows a mission, drawn uniformly.
        mission_view_prob: In such a session, probability that a view goes to one of the
            mission's items (uniformly, never the item the walk stands on) instead of the walk;
            the walk then goes on from it. The last item alone leaves open which of its missions
            the session follows, the session's earlier views tell: structure a sequence model
            can use and a first-order model cannot.
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
    staples_per_user: int = 0
    staple_prob: float = 0.0
    missions: int = 0
    mission_size: int = 6
    mission_session_prob: float = 0.0
    mission_view_prob: float = 0.0
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
        if not 0.0 <= self.staple_prob < 1.0 or self.staples_per_user < 0:
            raise ValueError("staple_prob must be in [0, 1) and staples_per_user at least 0")
        if self.staple_prob > 0 and self.staples_per_user == 0:
            raise ValueError("staple_prob > 0 needs staples_per_user of at least 1")
        if self.missions < 0 or not 2 <= self.mission_size <= self.n_items:
            raise ValueError("missions must be at least 0 and mission_size in [2, n_items]")
        if not (0.0 <= self.mission_session_prob <= 1.0 and 0.0 <= self.mission_view_prob <= 1.0):
            raise ValueError("mission_session_prob and mission_view_prob must be in [0, 1]")
        if self.mission_session_prob > 0 and (self.missions == 0 or self.mission_view_prob == 0):
            raise ValueError("mission_session_prob > 0 needs missions and mission_view_prob > 0")


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
    # `make run`: a real workload that the whole chain still handles in minutes on 2 cores;
    # staples and missions give it structure beyond the last item
    # (benchmarks/bench_synthetic_ceiling.py)
    "default": SyntheticPreset(
        n_users=6_000,
        n_items=2_000,
        n_categories=30,
        n_brands=200,
        sessions_per_user_mean=0.33,
        session_length_mean=6.0,
        staples_per_user=4,
        staple_prob=0.2,
        missions=300,
        mission_size=6,
        mission_session_prob=0.5,
        mission_view_prob=0.8,
    ),
    # the growth curve's first size (benchmarks/bench_scale.py): ~1M events over 35 days,
    # `large` with a tenth of the users and a quarter of the items
    "medium": SyntheticPreset(
        n_users=15_000,
        n_items=12_500,
        n_categories=60,
        n_brands=1_500,
        sessions_per_user_mean=0.26,
        session_length_mean=7.0,
        max_session_length=50,
        categories_per_user=4,
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
    # ~100M events over 35 days, `large` with ten times the users and four times the items,
    # written a day at a time: the data stages' bounded memory at scale (make bench-scale)
    "huge": SyntheticPreset(
        n_users=1_500_000,
        n_items=200_000,
        n_categories=240,
        n_brands=6_000,
        sessions_per_user_mean=0.26,
        session_length_mean=7.0,
        max_session_length=50,
        categories_per_user=4,
    ),
}
