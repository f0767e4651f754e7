"""Held-out sessions from the prepare stage's folder, as the users a replay plays.

Each row of the ``test`` (or ``valid``) split is a user's history and the item that came next:
a replayed request sends the user's id and history (catalog item ids, newest last), and a hit is
the true next item among the answer's items. The popularity shelf (the items most often
interacted with, ties by item id, as the server's popularity fallback ranks them) answers the
same sessions for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet

_HINT = "(run the prepare stage first)"


@dataclass(frozen=True)
class Session:
    """One held-out session: who, what they did (oldest first), and what they did next."""

    user_id: str
    history: tuple[str, ...]
    next_item: str


@dataclass(frozen=True)
class HeldOut:
    """The sessions to replay and the popularity shelf they are compared against.

    Attributes:
        sessions: In replay order (a seeded shuffle of the split's users).
        popular: Item ids, most popular first.
    """

    sessions: tuple[Session, ...]
    popular: tuple[str, ...]

    def popularity_hit(self, session: Session, k: int) -> bool:
        """Whether the popularity shelf's first ``k`` items hold the session's next item."""
        return session.next_item in self.popular[:k]


def _column(prepared: Path, name: str, columns: tuple[str, ...]) -> dict[str, list[Any]]:
    table = read_parquet(prepared / name, f"the prepared {name}", require=columns, hint=_HINT)
    return {column: table.column(column).to_pylist() for column in columns}


def load_sessions(
    prepared: Path, split: str = "test", *, seed: int = 0, max_history: int = 100
) -> HeldOut:
    """The held-out sessions of ``split`` in ``prepared``, shuffled with ``seed``.

    Args:
        prepared: The prepare stage's folder.
        split: ``test`` or ``valid``.
        seed: Order of the replay (the same seed, the same order).
        max_history: Newest items of a history sent with a request.

    Raises:
        InputError: A file is missing or lacks a column, the split is empty, or it names a user
            or item the maps do not hold.
    """
    if split not in ("test", "valid"):
        raise InputError(f"split {split!r} is not a held-out split: test or valid")
    if max_history < 1:
        raise InputError(f"max_history must be at least 1, not {max_history}")
    items = _column(prepared, "item_map.parquet", ("item_idx", "item_id"))
    users = _column(prepared, "user_map.parquet", ("user_idx", "user_id"))
    rows = _column(prepared, f"{split}.parquet", ("user_idx", "history", "target"))
    popularity = _column(prepared, "item_popularity.parquet", ("item_id", "count"))
    item_id = {int(i): str(v) for i, v in zip(items["item_idx"], items["item_id"], strict=True)}
    user_id = {int(i): str(v) for i, v in zip(users["user_idx"], users["user_id"], strict=True)}
    if not rows["user_idx"]:
        raise InputError(f"{prepared / (split + '.parquet')} holds no sessions to replay")
    sessions = []
    for user, history, target in zip(
        rows["user_idx"], rows["history"], rows["target"], strict=True
    ):
        try:
            steps = tuple(item_id[int(i)] for i in list(history)[-max_history:])
            sessions.append(Session(user_id[int(user)], steps, item_id[int(target)]))
        except KeyError as exc:
            raise InputError(
                f"{prepared / (split + '.parquet')} names index {exc.args[0]}, which the user or "
                f"item map lacks {_HINT}"
            ) from None
    order = np.random.default_rng(seed).permutation(len(sessions))
    known = set(item_id.values())
    ranked = sorted(
        (
            (-int(count), str(item))
            for item, count in zip(popularity["item_id"], popularity["count"], strict=True)
            if str(item) in known
        ),
    )
    return HeldOut(tuple(sessions[i] for i in order), tuple(item for _, item in ranked))
