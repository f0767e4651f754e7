"""The key of pseudonyms: 32 random bytes kept in the store of record, created on first use."""

from __future__ import annotations

import contextlib
import secrets

from pipelines.registry.errors import ConditionFailed
from pipelines.registry.names import PSEUDONYM_KEY
from pipelines.registry.stores.base import Store


def pseudonym_key(record: Store) -> bytes:
    """The HMAC key of pseudonyms, from ``record`` (created there, once, if it has none).

    The key is an object of kind ``secret``: the crossing policy never lets it reach a replica.
    """
    if record.head(PSEUDONYM_KEY) is None:
        # another writer may create it first: then theirs is the key
        with contextlib.suppress(ConditionFailed):
            record.put_bytes(PSEUDONYM_KEY, secrets.token_bytes(32), "secret", if_none_match=True)
    key, _ = record.read(PSEUDONYM_KEY)
    return key


def served_key(record: Store) -> str:
    """The key as the servers are given it in ``RECFLOW_PSEUDONYM_KEY``: its hex text.

    The servers hash with that text's bytes, so whoever joins the request log with user ids
    (the monitor's online quality) hashes with the same: ``KeyedHash(served_key(r).encode())``.
    """
    return pseudonym_key(record).hex()
