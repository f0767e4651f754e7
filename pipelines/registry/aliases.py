"""Aliases (``production``, ``canary``, ``previous``, ...): one small object per alias in each
cloud's store, changed only by compare-and-set.

An alias object names its version and carries the record of the change that set it (who, when,
why, from which version). A writer reads the alias and its ETag, then writes the new state with
``IfMatch`` on that ETag (``IfNoneMatch='*'`` when the alias is new): of two writers racing
for one alias exactly one wins, and the other gets :class:`AliasConflict` and changed nothing.

Once the change is in the ledger, the writer records the number and sha256 of its entry in the
alias object (:func:`anchor_alias`, a second compare-and-set): the anchor of the ledger's head
(``pipelines.registry.ledger.Anchor``). Format 1 objects, written before anchors, are read
with no anchor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipelines.registry.errors import (
    AliasConflict,
    ChecksumMismatch,
    ConditionFailed,
    RegistryError,
)
from pipelines.registry.ledger import Anchor, LedgerEntry
from pipelines.registry.names import alias_key, check_alias, check_version_id
from pipelines.registry.stores.base import Store

FORMAT = 2  # 2 added "ledger", the anchor; format 1 is still read
PREFIX = "aliases/"


@dataclass(frozen=True)
class AliasState:
    """An alias as read from a store.

    Attributes:
        alias: Its name.
        cloud: The cloud whose store holds it.
        version: The version it names.
        change: The record of the change that set it (a ledger entry without its number).
        etag: The object's ETag: the token of the next compare-and-set.
        anchor: The ledger entry that recorded the change (None: not recorded yet, or an
            object written before anchors).
    """

    alias: str
    cloud: str
    version: str
    change: dict[str, Any]
    etag: str
    anchor: Anchor | None = None


def list_aliases(store: Store) -> list[str]:
    """The names of the aliases set in ``store``, sorted (not checked: :func:`read_alias`
    checks each)."""
    return [
        key.removeprefix(PREFIX).removesuffix(".json")
        for key in store.list_keys(PREFIX)
        if key.endswith(".json")
    ]


def _anchor(document: dict[str, Any], by: str) -> Anchor | None:
    if document.get("format", 1) not in (1, FORMAT):
        raise ValueError(f"format {document['format']!r} is not one this version reads")
    if document.get("format", 1) == 1 or document["ledger"] is None:
        return None
    seq, sha256 = document["ledger"]["seq"], document["ledger"]["sha256"]
    if not isinstance(seq, int) or seq < 1 or not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(f"its ledger anchor {document['ledger']!r} is not an entry's")
    return Anchor(seq, sha256, by)


def read_alias(store: Store, alias: str) -> AliasState | None:
    """The alias ``alias`` in ``store`` (verified), None when it is not set.

    Raises:
        BadName: ``alias`` is not an alias name.
        ChecksumMismatch: The alias object is tampered with or malformed.
    """
    key = alias_key(alias)
    if store.head(key) is None:
        return None
    data, info = store.read(key)
    try:
        document = json.loads(data)
        state = AliasState(
            alias=check_alias(document["alias"]),
            cloud=str(document["cloud"]),
            version=check_version_id(document["version"]),
            change=dict(document["change"]),
            etag=info.etag,
            anchor=_anchor(document, f"alias {alias!r} in {store.name!r}"),
        )
    except (ValueError, KeyError, TypeError, RegistryError) as exc:
        raise ChecksumMismatch(f"alias object {store.where(key)} is malformed: {exc}") from None
    if state.alias != alias or state.cloud != store.name:
        raise ChecksumMismatch(
            f"alias object {store.where(key)} describes {state.alias!r} in {state.cloud!r}"
        )
    return state


def write_alias(
    store: Store,
    alias: str,
    version: str,
    change: dict[str, Any],
    expected: AliasState | None,
    entry: LedgerEntry | None = None,
) -> AliasState:
    """Set ``alias`` to ``version`` in ``store`` if it is still as ``expected`` (compare-and-set).

    Args:
        store: The cloud's store.
        alias: The alias.
        version: The version it is to name.
        change: The record of this change.
        expected: The state read before deciding (None: the alias must not exist yet).
        entry: The ledger entry of ``change``, when it is recorded already (its anchor).

    Returns:
        The new state.

    Raises:
        AliasConflict: Someone else changed the alias since ``expected`` was read; nothing
            was written.
    """
    if entry is not None and entry.change["id"] != change["id"]:
        raise RegistryError(f"ledger entry {entry.seq} does not record change {change['id']}")
    anchor = (
        Anchor(entry.seq, entry.sha256, f"alias {alias!r} in {store.name!r}") if entry else None
    )
    document = {
        "format": FORMAT,
        "alias": check_alias(alias),
        "cloud": store.name,
        "version": check_version_id(version),
        "change": change,
        "ledger": {"seq": anchor.seq, "sha256": anchor.sha256} if anchor else None,
    }
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        if expected is None:
            info = store.put_bytes(alias_key(alias), data, "alias", if_none_match=True)
        else:
            info = store.put_bytes(alias_key(alias), data, "alias", if_match=expected.etag)
    except ConditionFailed:
        raise AliasConflict(
            f"alias {alias!r} in {store.name!r} was changed by another writer since it was read "
            f"(it named {expected.version if expected else 'nothing'}); this change to {version} "
            "was not applied: read the alias again and retry if it still makes sense"
        ) from None
    return AliasState(alias, store.name, version, change, info.etag, anchor)


def anchor_alias(store: Store, state: AliasState, entry: LedgerEntry) -> AliasState | None:
    """Record in the alias object ``state`` the ledger entry ``entry`` of the change that set
    it (compare-and-set on ``state``'s ETag).

    Returns:
        The new state; None when another writer changed the alias since ``state`` was read
        (its own change is anchored by that writer).
    """
    try:
        return write_alias(store, state.alias, state.version, state.change, state, entry)
    except AliasConflict:
        return None
