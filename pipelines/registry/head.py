"""The ledger's head carried to a replica: the number and sha256 of the newest ledger entry,
kept in the other cloud.

An alias object anchors the entry that set it in the alias's own cloud; for a change of a
private alias both that anchor and the ledger live in the private cloud, so whoever can write
there could rewrite the newest entry and its anchor together. The head object
(``ledger-head.json`` in each replica, kind ``ledger_head``) records the newest entry away from
the ledger, so such a rewrite must touch both clouds. It holds hashes and names only: the
entry's number and sha256, and which alias in which cloud it set to which version.

:func:`carry` moves it forward by compare-and-set and never back: of two writers carrying
entries 7 and 8 at once, entry 8 stays, whatever order they finish in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipelines.registry.errors import ChecksumMismatch, ConditionFailed, RegistryError
from pipelines.registry.ledger import Anchor, LedgerEntry
from pipelines.registry.names import check_alias, check_cloud, check_version_id
from pipelines.registry.stores.base import Store

KEY = "ledger-head.json"
KIND = "ledger_head"
FORMAT = 1
CARRY_ATTEMPTS = 20


@dataclass(frozen=True)
class CarriedHead:
    """A ledger head as a replica holds it.

    Attributes:
        cloud: The replica's cloud.
        ledger: The cloud whose ledger it is (the record's).
        seq: The number of the newest entry when it was carried.
        sha256: That entry's sha256.
        alias: The alias that entry set.
        alias_cloud: The cloud of that alias.
        version: The version it set the alias to.
        etag: The object's ETag, the token of the next compare-and-set.
    """

    cloud: str
    ledger: str
    seq: int
    sha256: str
    alias: str
    alias_cloud: str
    version: str
    etag: str

    @property
    def anchor(self) -> Anchor:
        """The head as an anchor of its entry, for the ledger's checks."""
        return Anchor(self.seq, self.sha256, f"the ledger head carried to {self.cloud!r}")


def read_head(store: Store) -> CarriedHead | None:
    """The ledger head carried to ``store`` (verified), None when none was carried yet.

    Raises:
        ChecksumMismatch: The object is tampered with or malformed.
    """
    if store.head(KEY) is None:
        return None
    data, info = store.read(KEY)
    try:
        document = json.loads(data)
        if document["format"] != FORMAT:
            raise ValueError(f"format {document['format']!r} is not one this version reads")
        entry = document["entry"]
        seq, sha256 = entry["seq"], entry["sha256"]
        if not isinstance(seq, int) or seq < 1 or not isinstance(sha256, str) or len(sha256) != 64:
            raise ValueError(f"{entry!r} is not a ledger entry's number and sha256")
        head = CarriedHead(
            cloud=check_cloud(document["cloud"]),
            ledger=check_cloud(document["ledger"]),
            seq=seq,
            sha256=sha256,
            alias=check_alias(entry["alias"]),
            alias_cloud=check_cloud(entry["cloud"]),
            version=check_version_id(entry["to_version"]),
            etag=info.etag,
        )
    except (ValueError, KeyError, TypeError, RegistryError) as exc:
        raise ChecksumMismatch(f"ledger head {store.where(KEY)} is malformed: {exc}") from None
    if head.cloud != store.name:
        raise ChecksumMismatch(f"ledger head {store.where(KEY)} says it is in {head.cloud!r}")
    return head


def carry(store: Store, ledger_cloud: str, entry: LedgerEntry) -> bool:
    """Record ``entry``, the newest of the ledger of ``ledger_cloud``, as the head in the
    replica ``store``, unless the head there is that entry or a later one of that ledger
    already.

    The caller checks the ledger against the head there first (a head carried over an edited
    entry would bless the edit).

    Returns:
        Whether the head object was written.

    Raises:
        PolicyViolation: ``registry.crossing.allow`` does not list ``ledger_head``.
        RegistryError: Other writers kept moving the head.
    """
    document = {
        "format": FORMAT,
        "cloud": store.name,
        "ledger": ledger_cloud,
        "entry": {
            "seq": entry.seq,
            "sha256": entry.sha256,
            "cloud": entry.cloud,
            "alias": entry.alias,
            "to_version": entry.version,
        },
    }
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    for _ in range(CARRY_ATTEMPTS):
        there = read_head(store)
        if there is not None and there.ledger == ledger_cloud and there.seq >= entry.seq:
            return False
        try:
            if there is None:
                store.put_bytes(KEY, data, KIND, if_none_match=True)
            else:
                store.put_bytes(KEY, data, KIND, if_match=there.etag)
        except ConditionFailed:
            continue  # another writer moved it: look again
        return True
    raise RegistryError(
        f"could not carry the ledger head to {store.where(KEY)} in {CARRY_ATTEMPTS} tries"
    )
