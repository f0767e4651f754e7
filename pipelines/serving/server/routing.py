"""Sticky routing and a per-token rate limit."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

BUCKETS = 10_000


def bucket(user_id: str) -> int:
    """A user's fixed bucket in ``0..9999``, from a hash of the user id."""
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def goes_to_canary(user_id: str, weight: float) -> bool:
    """True for the users of the canary's share: the lowest ``weight`` of the buckets.

    A user's bucket never changes, so a user sees one model for the whole canary, and raising
    the weight only adds users to the canary.
    """
    return bucket(user_id) < weight * BUCKETS


class RateLimiter:
    """A token bucket per client token: ``rate`` requests a second, bursts up to ``burst``."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0 when allowed, else seconds to wait."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate


def retry_after(wait_s: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
