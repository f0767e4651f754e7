"""The ledger as every reader gets it: its hash chain checked, and its head checked against the
anchors in the alias objects of each cloud and against the head carried to each replica.

An alias object records the ledger entry of the change that set it (``aliases.anchor_alias``),
in the cloud of the alias: a public alias's anchor sits in the public cloud, away from the
ledger. The newest entry, whichever alias it set, is also recorded in each replica
(``pipelines.registry.head``), so a rewrite of a private alias's newest entry must touch the
public cloud too. :func:`read_ledger` reads the anchors and heads first and the ledger after
them, so neither names an entry appended after the ledger was listed.

A replica that does not answer is skipped, and its head is said to be unchecked; a replica
that holds no head yet (a store written before heads were carried, or a loopback store that
started empty), or an older one (the replica did not answer when the ledger grew), is noted:
``recflow registry replicate --sync`` carries the newest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipelines.registry import ledger
from pipelines.registry.aliases import AliasState, list_aliases, read_alias
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import RegistryError, StoreUnreachable
from pipelines.registry.head import CarriedHead, read_head
from pipelines.registry.names import CLOUDS

log = logging.getLogger("recflow.registry.history")
CARRY_HINT = "`recflow registry replicate --sync` carries it"


def _clouds(registry: Registry, clouds: Iterable[str] | None) -> list[str]:
    wanted = set(CLOUDS if clouds is None else clouds) | {registry.record_cloud}
    return [cloud for cloud in CLOUDS if cloud in wanted]


def _states(
    registry: Registry,
    clouds: Iterable[str] | None,
    skipped: list[str] | None = None,
    errors: list[str] | None = None,
) -> list[AliasState]:
    """Every alias object of ``clouds`` (None: every cloud) and of the record; with
    ``skipped``, a replica whose store does not answer is added to it instead, and with
    ``errors``, an alias object that does not read is described there instead."""
    found = []
    for cloud in _clouds(registry, clouds):
        try:
            store = registry.store(cloud)
            names = list_aliases(store)
        except StoreUnreachable:
            if skipped is None or cloud == registry.record_cloud:
                raise
            skipped.append(cloud)
            continue
        for alias in names:
            try:
                state = read_alias(store, alias)
            except RegistryError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                continue
            if state is not None:
                found.append(state)
    return found


def _say(notes: list[str] | None, line: str) -> None:
    """Add ``line`` to ``notes``, or log it when nobody collects them."""
    if notes is None:
        log.warning("%s", line)
    else:
        notes.append(line)


def carried_heads(
    registry: Registry,
    skipped: list[str] | None = None,
    notes: list[str] | None = None,
    replicas: Iterable[str] | None = None,
) -> list[CarriedHead]:
    """The ledger heads carried to the replicas that answer.

    Args:
        registry: The registry.
        skipped: If given, a replica that does not answer is added to it (its caller says so);
            if not, that is noted.
        notes: Where a replica that does not answer or holds no head yet is noted (None:
            logged).
        replicas: The replicas asked (None: every one).

    Raises:
        ChecksumMismatch: A head object is tampered with or malformed.
    """
    found = []
    asked = registry.replica_clouds if replicas is None else list(replicas)
    for cloud in [c for c in registry.replica_clouds if c in asked]:
        try:
            head = read_head(registry.store(cloud))
        except StoreUnreachable:
            if skipped is None:
                _say(
                    notes, f"the ledger head was not checked against {cloud!r}: it does not answer"
                )
            elif cloud not in skipped:
                skipped.append(cloud)
            continue
        if head is None or head.ledger != registry.record_cloud:
            _say(notes, f"the ledger head is not carried to {cloud!r} yet ({CARRY_HINT})")
        else:
            found.append(head)
    return found


def _lagging(heads: Iterable[CarriedHead], newest: int, notes: list[str] | None) -> None:
    """Note each head older than entry ``newest``: the replica missed the ledger's growth."""
    for head in heads:
        if head.seq < newest:
            _say(
                notes,
                f"the ledger head carried to {head.cloud!r} is entry {head.seq}, the newest is "
                f"{newest}: entries after it are anchored by their aliases only ({CARRY_HINT})",
            )


def _anchored(states: Iterable[AliasState], heads: Iterable[CarriedHead]) -> list[ledger.Anchor]:
    """The anchors of alias objects that record one, and of the carried heads."""
    return [s.anchor for s in states if s.anchor is not None] + [h.anchor for h in heads]


def anchors(
    registry: Registry,
    clouds: Iterable[str] | None = None,
    skipped: list[str] | None = None,
    notes: list[str] | None = None,
) -> list[ledger.Anchor]:
    """The anchors in the alias objects of ``clouds`` (None: every cloud) and of the record,
    and the ledger heads carried to the replicas that answer (:func:`carried_heads`).

    Args:
        registry: The registry.
        clouds: Whose alias objects are read.
        skipped: If given, a replica whose store does not answer is added to it and left out;
            if not, that is an error for a replica in ``clouds``, and a note for its head.
        notes: As in :func:`carried_heads`.

    Raises:
        ChecksumMismatch: An alias or head object is tampered with or malformed.
        StoreError: A store failed.
    """
    return _anchored(_states(registry, clouds, skipped), carried_heads(registry, skipped, notes))


def read_ledger(
    registry: Registry,
    clouds: Iterable[str] | None = None,
    skipped: list[str] | None = None,
    notes: list[str] | None = None,
) -> list[ledger.LedgerEntry]:
    """The ledger's entries (``ledger.entries``), checked against the anchors of ``clouds``
    (None: every cloud; the record's are always checked) and the heads carried to the
    replicas. ``skipped`` and ``notes`` as in :func:`anchors`; a head older than the newest
    entry is noted too.

    Raises:
        LedgerBroken: An entry was changed or removed, the newest included; the message names
            the first.
        ChecksumMismatch: An entry, alias or head object does not match its recorded sha256.
    """
    states = _states(registry, clouds, skipped)
    heads = carried_heads(registry, skipped, notes)
    entries = ledger.entries(registry.record, anchors=_anchored(states, heads))
    _lagging(heads, entries[-1].seq if entries else 0, notes)
    return entries


def ledger_problems(
    registry: Registry, clouds: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """What is wrong with the ledger, checked against the alias objects of ``clouds`` (None:
    every cloud; the record's always) and the heads carried to the replicas among them, for
    ``verify``.

    Returns:
        The problems (``ledger.chain_problems`` with those anchors and heads), and notes: one
        per alias object that records no ledger entry (written before anchors, or by a writer
        that stopped before anchoring it: an edit of the entry that set it is found only while
        a later entry follows it), and one per replica whose head was not checked, is not
        carried yet or is older than the newest entry.
    """
    wanted = _clouds(registry, clouds)
    states = _states(registry, wanted, errors=[])  # verify reports those itself
    notes = [
        f"alias {s.alias!r} in {s.cloud!r} records no ledger entry: the head is unanchored by it"
        for s in states
        if s.anchor is None
    ]
    notes += [
        f"the ledger head was not checked against {cloud!r}: it was not verified"
        for cloud in registry.replica_clouds
        if cloud not in wanted
    ]
    heads = carried_heads(registry, [], notes, wanted)
    physical = ledger.entries(registry.record, physical=True)
    problems = ledger.chain_problems(physical, _anchored(states, heads))
    if not problems:
        _lagging(heads, physical[-1].seq if physical else 0, notes)
    return problems, notes
