"""Replication from the store of record (private) to a replica (public).

A version's objects are copied one by one, each re-hashed on the far side after its upload;
only when all of them check out is the version's marker written there, so a half-finished
replication never shows up as a version. Rerunning is idempotent: an object already there with
the right bytes is left alone, a missing or corrupt one is copied again.

:func:`sync_aliases` rebuilds a replica's aliases from the ledger (the record of every alias
change), for a replica that lost its state, such as the in-memory loopback server of
``make run``. Each alias it writes carries the anchor of its ledger entry, so the replica holds
the anchors of its own aliases' entries, away from the ledger in the store of record; then it
carries the ledger's head there (:func:`carry_head`), as every promotion does.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.registry import head, ledger
from pipelines.registry.aliases import anchor_alias, read_alias, write_alias
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import (
    ChecksumMismatch,
    PolicyViolation,
    RegistryError,
    StoreUnreachable,
)
from pipelines.registry.history import anchors, read_ledger
from pipelines.registry.names import check_cloud, file_key, marker_key
from pipelines.registry.versions import read_version

log = logging.getLogger("recflow.registry.replication")


@dataclass
class Replication:
    """What a replication did: objects copied, objects found intact, whether the marker was
    written."""

    version: str
    cloud: str
    copied: list[str] = field(default_factory=list)
    intact: list[str] = field(default_factory=list)
    marker_written: bool = False


def replicate(registry: Registry, version: str, cloud: str) -> Replication:
    """Copy ``version`` from the store of record to the replica ``cloud`` and verify it there.

    Raises:
        PolicyViolation: An object of the version may not cross; nothing was sent.
        UnknownVersion: The store of record has no such version.
        ChecksumMismatch: An object does not hash right on either side.
        StoreError: A store failed; the replica shows no new version.
    """
    check_cloud(cloud)
    source, target = registry.record, registry.store(cloud)
    if target is source:
        raise RegistryError(f"{cloud!r} is the store of record: there is nothing to replicate to")
    parsed = read_version(source, version)
    # the policy first, for every object, so that a refused one stops the copy before any byte
    for item in parsed.files:
        target.policy.check_kind(target.name, target.role, file_key(version, item.path), item.kind)
    target.policy.check_kind(target.name, target.role, marker_key(version), "version_marker")
    report = Replication(version, cloud)
    with tempfile.TemporaryDirectory(prefix="recflow-replicate-") as scratch:
        for item in parsed.files:
            key = file_key(version, item.path)
            info = target.head(key)
            if (
                info is not None
                and info.sha256 == item.sha256
                and target.rehash(key) == item.sha256
            ):
                report.intact.append(item.path)
                continue
            local = Path(scratch) / item.sha256
            if not local.exists():
                source.download(key, local, item.sha256)
            target.put_file(key, local, item.kind)
            far = target.rehash(key)
            if far != item.sha256:
                raise ChecksumMismatch(
                    f"{target.where(key)} hashes to {far[:12]}… after replication, not "
                    f"{item.sha256[:12]}…; the version's marker was not written"
                )
            report.copied.append(item.path)
    marker, info = source.read(marker_key(version))
    there = target.head(marker_key(version))
    if there is None or there.sha256 != info.sha256 or target.rehash(there.key) != info.sha256:
        target.put_bytes(marker_key(version), marker, "version_marker")
        report.marker_written = True
    log.info(
        "replicated version %s to %r: %d object(s) copied, %d intact%s",
        version,
        cloud,
        len(report.copied),
        len(report.intact),
        ", marker written" if report.marker_written else "",
    )
    return report


def ensure_replicated(registry: Registry, version: str, cloud: str) -> None:
    """Replicate ``version`` to ``cloud`` unless its marker is there already (then only the
    marker is checked; :func:`replicate` re-hashes every object)."""
    if registry.store(cloud).head(marker_key(version)) is None:
        replicate(registry, version, cloud)


def sync_aliases(registry: Registry, cloud: str) -> list[str]:
    """Make the replica ``cloud``'s aliases what the ledger says they are.

    Each alias of ``cloud`` in the ledger gets its version replicated and its alias object
    rewritten where it is missing or names another change, anchored to its entry (an alias
    that names its entry's change without the anchor gets it), and the ledger's head is
    carried there (:func:`carry_head`). This restores recorded state; it adds no ledger entry.

    Returns:
        The aliases that were restored.

    Raises:
        LedgerBroken: The ledger is not intact (``history.read_ledger``); nothing was written.
    """
    target = registry.store(cloud)
    notes: list[str] = []  # a head missing or lagging there is carried below
    latest: dict[str, ledger.LedgerEntry] = {}
    for entry in ledger.select(read_ledger(registry, [cloud], notes=notes), cloud=cloud):
        latest[entry.alias] = entry
    restored = []
    for alias, entry in sorted(latest.items()):
        ensure_replicated(registry, entry.version, cloud)
        state = read_alias(target, alias)
        if state is not None and state.change.get("id") == entry.change["id"]:
            if state.anchor is None:
                anchor_alias(target, state, entry)
            continue
        write_alias(target, alias, entry.version, entry.change, state, entry)
        log.info(
            "restored alias %r in %r to %s from ledger entry %d",
            alias,
            cloud,
            entry.version,
            entry.seq,
        )
        restored.append(alias)
    for line in notes:
        log.info("%s", line)
    try:
        carry_head(registry, cloud)
    except PolicyViolation as exc:  # registry.crossing.allow leaves it out
        log.warning("the ledger head was not carried to %r: %s", cloud, exc)
    return restored


def carry_head(registry: Registry, cloud: str) -> bool:
    """Carry the ledger's newest entry to the replica ``cloud`` as its head
    (``pipelines.registry.head``), once the ledger checks out against the anchors of the record
    and of ``cloud`` and the heads the replicas hold: a head carried over an edited entry
    would bless the edit.

    Returns:
        Whether the head there moved (False: it was that entry already, or the ledger is empty).

    Raises:
        LedgerBroken: The ledger is not intact; nothing was written.
        StoreUnreachable: The replica does not answer.
        PolicyViolation: ``registry.crossing.allow`` does not list ``ledger_head``.
    """
    target = registry.store(cloud)
    found = anchors(registry, [cloud], notes=[])  # read before the ledger; gaps are filled here
    physical = ledger.entries(registry.record, physical=True)
    ledger.check(registry.record, physical, found)
    if not physical:
        return False
    moved = head.carry(target, registry.record_cloud, physical[-1])
    if moved:
        log.info("carried the ledger head (entry %d) to %r", physical[-1].seq, cloud)
    return moved


def carry_heads(registry: Registry) -> None:
    """Carry the ledger's head to every replica (:func:`carry_head`); one that does not answer,
    or may not receive it, is left behind with a warning (the next promotion or
    ``recflow registry replicate --sync`` carries it).

    Raises:
        LedgerBroken: The ledger is not intact; nothing was written.
    """
    for cloud in registry.replica_clouds:
        try:
            carry_head(registry, cloud)
        except (StoreUnreachable, PolicyViolation) as exc:
            log.warning(
                "the ledger head was not carried to %r (%s): its copy there lags until the "
                "next promotion or `recflow registry replicate --sync`",
                cloud,
                exc,
            )
