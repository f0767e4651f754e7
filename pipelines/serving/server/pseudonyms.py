"""Pseudonyms of user ids in the request log: a keyed hash, its key from the environment.

:class:`Pseudonymizer` is what the service asks for; :class:`KeyedHash` is an HMAC-SHA256 under
the key in ``RECFLOW_PSEUDONYM_KEY`` (a rollout gives its fleets the model registry's key:
``pipelines.registry.pseudonyms``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Protocol

from pipelines.core.errors import InputError

PSEUDONYM_KEY_ENV = "RECFLOW_PSEUDONYM_KEY"


class Pseudonymizer(Protocol):
    """The keyed hash of a user id."""

    def __call__(self, user_id: str) -> str: ...


class KeyedHash:
    """HMAC-SHA256 of a user id under a secret key: the same id, the same pseudonym."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise InputError("the pseudonymization key must be at least 16 bytes")
        self._key = key

    @classmethod
    def from_env(cls) -> KeyedHash:
        """The key from ``RECFLOW_PSEUDONYM_KEY``.

        Raises:
            InputError: The variable is unset or shorter than 16 bytes.
        """
        key = os.environ.get(PSEUDONYM_KEY_ENV, "")
        if not key:
            raise InputError(
                f"{PSEUDONYM_KEY_ENV} is not set: the request log pseudonymizes user ids with "
                "this key (or switch the log off with serve.request_log.enabled: false)"
            )
        return cls(key.encode())

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:32]
