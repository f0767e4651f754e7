"""The ledger as every reader gets it: its hash chain checked, and its head checked against the
anchors in the alias objects of each cloud.

An alias object records the ledger entry of the change that set it (``aliases.anchor_alias``),
in the cloud of the alias: a public alias's anchor sits in the public cloud, away from the
ledger. :func:`read_ledger` reads the anchors first and the ledger after them, so an anchor
never names an entry appended after the ledger was listed.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipelines.registry import ledger
from pipelines.registry.aliases import AliasState, list_aliases, read_alias
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import RegistryError, StoreUnreachable
from pipelines.registry.names import CLOUDS


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


def anchors(
    registry: Registry, clouds: Iterable[str] | None = None, skipped: list[str] | None = None
) -> list[ledger.Anchor]:
    """The anchors in the alias objects of ``clouds`` (None: every cloud) and of the record.

    Args:
        registry: The registry.
        clouds: Whose alias objects are read.
        skipped: If given, a replica whose store does not answer is added to it and left out;
            if not, that is an error.

    Raises:
        ChecksumMismatch: An alias object is tampered with or malformed.
        StoreError: A store failed.
    """
    return [s.anchor for s in _states(registry, clouds, skipped) if s.anchor is not None]


def read_ledger(
    registry: Registry, clouds: Iterable[str] | None = None, skipped: list[str] | None = None
) -> list[ledger.LedgerEntry]:
    """The ledger's entries (``ledger.entries``), checked against the anchors of ``clouds``
    (None: every cloud; the record's are always checked). ``skipped`` as in :func:`anchors`.

    Raises:
        LedgerBroken: An entry was changed or removed, the newest included; the message names
            the first.
        ChecksumMismatch: An entry or alias object does not match its recorded sha256.
    """
    found = anchors(registry, clouds, skipped)
    return ledger.entries(registry.record, anchors=found)


def ledger_problems(
    registry: Registry, clouds: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """What is wrong with the ledger, and which aliases of ``clouds`` (None: every cloud; the
    record's always) do not anchor it, for ``verify``.

    Returns:
        The problems (``ledger.chain_problems`` with every cloud's anchors), and one note per
        alias object that records no ledger entry (written before anchors, or by a writer
        that stopped before anchoring it): an edit of the entry that set it is found only
        while a later entry follows it.
    """
    states = _states(registry, clouds, errors=[])  # verify reports those itself
    notes = [
        f"alias {s.alias!r} in {s.cloud!r} records no ledger entry: the head is unanchored by it"
        for s in states
        if s.anchor is None
    ]
    found = [s.anchor for s in states if s.anchor is not None]
    problems = ledger.chain_problems(ledger.entries(registry.record, physical=True), found)
    return problems, notes
