"""Promotion and rollback: an alias change by compare-and-set, recorded in the ledger.

The alias object is changed first (compare-and-set), carrying the record of the change; the
ledger entry follows. If the process dies between the two, the next promotion or rollback of
that alias finds the alias's change missing from the ledger and records it then
(:func:`record_pending`), so every alias change ends up in the ledger exactly once, and a
writer that lost a race wrote nothing anywhere. Once recorded, the alias object is anchored to
its entry (``aliases.anchor_alias``), and the ledger's new head is carried to every replica
(``replication.carry_heads``). A writer links a new entry only to a newest entry that agrees
with the anchors of the record and of the cloud it changes and with the heads the replicas
hold.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pipelines.registry import ledger
from pipelines.registry.aliases import AliasState, anchor_alias, read_alias, write_alias
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import RegistryError, UnknownAlias
from pipelines.registry.history import anchors, read_ledger
from pipelines.registry.names import check_alias, check_cloud, check_version_id
from pipelines.registry.replication import carry_heads, ensure_replicated
from pipelines.registry.versions import Version, read_version

log = logging.getLogger("recflow.registry.promotion")

EVIDENCE = {
    "verdict_sha256": "evaluation/verdict.json",
    "report_sha256": "evaluation/report.md",
    "lineage_sha256": "lineage.json",
    "manifest_sha256": "optimized/manifest.json",
}


def evidence(version: Version) -> dict[str, Any]:
    """The hashes a ledger entry keeps of the evidence behind a version."""
    paths = {f.path: f.sha256 for f in version.files}
    found: dict[str, Any] = {"version_digest": version.digest}
    for name, path in EVIDENCE.items():
        if path in paths:
            found[name] = paths[path]
    return found


def record_pending(registry: Registry, cloud: str, alias: str) -> AliasState | None:
    """Read ``alias`` in ``cloud`` and make sure the change that set it is in the ledger.

    A writer appends its change after its compare-and-set; if it died in between, or has not
    got there yet, the change is recorded here, so that it takes its place in the ledger before
    any change that replaces it. (If the writer then appends it too, the ledger reads the
    change once, at its first place.) An alias whose change is recorded but not anchored is
    anchored here.

    Returns:
        The alias's state, None when it is not set.

    Raises:
        LedgerBroken: The ledger's newest entry disagrees with an anchor; nothing was recorded.
    """
    store = registry.store(cloud)
    state = read_alias(store, alias)
    if state is None or state.anchor is not None:
        return state
    entry = ledger.recorded(registry.record, state.change)
    if entry is None:
        log.warning(
            "alias %r in %r names %s by a change not yet in the ledger: recording it now",
            alias,
            cloud,
            state.version,
        )
        entry = ledger.append(registry.record, state.change, anchors(registry, [cloud], notes=[]))
    anchored = anchor_alias(store, state, entry)
    carry_heads(registry)
    return anchored or read_alias(store, alias)


def promote(
    registry: Registry,
    version: str,
    alias: str,
    cloud: str,
    *,
    reason: str,
    actor: str,
    at: dt.datetime,
    run: dict[str, Any] | None = None,
    action: str = "promote",
    rolls_back: int | None = None,
    decision: dict[str, Any] | None = None,
) -> ledger.LedgerEntry | None:
    """Point ``alias`` in ``cloud`` at ``version`` and record it in the ledger.

    In a replica cloud the version is replicated there first if it is not there yet.

    Args:
        registry: The registry.
        version: The version id.
        alias: The alias.
        cloud: The cloud whose alias changes.
        reason: Why (the gate's verdict, a canary decision, a rollback's reason).
        actor: Who or which run.
        at: When (the caller's clock, read at the command's edge).
        run: The Airflow run, when there is one.
        action: ``promote`` or ``rollback``.
        rolls_back: For a rollback, the ledger entry it undoes.
        decision: What decided the change, kept in the entry's evidence under ``decision``
            (a rollout's steps, metrics and thresholds).

    Returns:
        The ledger entry, or None when the alias already named ``version`` (nothing changed).

    Raises:
        BadName: A name does not match its pattern.
        UnknownVersion: The version does not exist.
        AliasConflict: Another writer changed the alias meanwhile; nothing was changed.
    """
    check_version_id(version)
    check_alias(alias)
    check_cloud(cloud)
    if not reason.strip():
        raise RegistryError("a promotion needs a reason")
    store = registry.store(cloud)
    if store is not registry.record:
        ensure_replicated(registry, version, cloud)
    target = read_version(store, version)
    # the change being replaced goes into the ledger before the one replacing it
    current = record_pending(registry, cloud, alias)
    if current is not None and current.version == version:
        log.info("alias %r in %r already names %s: nothing to do", alias, cloud, version)
        return None
    # refused before the alias moves, rather than after it
    # (a replica's head that lags or does not answer is carried after the change, or noted)
    ledger.check_head(registry.record, anchors(registry, [cloud], notes=[]))
    change = ledger.make_change(
        cloud=cloud,
        alias=alias,
        from_version=current.version if current else None,
        to_version=version,
        action=action,
        reason=reason,
        actor=actor,
        at=at,
        run=run,
        evidence={**evidence(target), **({"decision": decision} if decision else {})},
        rolls_back=rolls_back,
    )
    state = write_alias(store, alias, version, change, current)
    entry = ledger.append(registry.record, change, anchors(registry, [cloud], notes=[]))
    anchor_alias(store, state, entry)
    carry_heads(registry)
    log.info(
        "%s: alias %r in %r %s -> %s (ledger entry %d)",
        action,
        alias,
        cloud,
        change["from_version"],
        version,
        entry.seq,
    )
    return entry


def rollback(
    registry: Registry,
    alias: str,
    cloud: str,
    *,
    reason: str,
    actor: str,
    at: dt.datetime,
    run: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
) -> ledger.LedgerEntry:
    """Point ``alias`` in ``cloud`` back at its last known good version, recorded in the ledger.

    ``decision`` goes into the entry's evidence as in :func:`promote`.

    Raises:
        UnknownAlias: The alias is not set in that cloud.
        NothingToRollBack: The ledger has no earlier known-good version.
        AliasConflict: Another writer changed the alias meanwhile.
    """
    check_alias(alias)
    check_cloud(cloud)
    if read_alias(registry.store(cloud), alias) is None:
        raise UnknownAlias(
            f"alias {alias!r} is not set in {cloud!r}: there is nothing to roll back"
        )
    record_pending(registry, cloud, alias)
    # a replica's head that lags or does not answer is noted by the promotion below
    found = read_ledger(registry, [cloud], notes=[])
    target, undone = ledger.last_known_good(found, alias, cloud)
    entry = promote(
        registry,
        target,
        alias,
        cloud,
        reason=reason,
        actor=actor,
        at=at,
        run=run,
        action="rollback",
        rolls_back=undone,
        decision=decision,
    )
    if entry is None:
        raise RegistryError(f"alias {alias!r} in {cloud!r} already names {target}")
    return entry


def resolve(registry: Registry, alias: str, cloud: str) -> str:
    """The version ``alias`` names in ``cloud``.

    Raises:
        UnknownAlias: It is not set.
    """
    state = read_alias(registry.store(check_cloud(cloud)), alias)
    if state is None:
        raise UnknownAlias(f"alias {alias!r} is not set in {cloud!r}")
    return state.version
