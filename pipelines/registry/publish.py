"""The register step of the chain: register the candidate, replicate it, and name it the
candidate for production if it passed.

After ``evaluate``: the candidate folder becomes a version in the store of record (a no-op if
that content is already one; a blocked candidate is kept there too, for the record), every
replica gets its aliases rebuilt from the ledger where they were lost, and, if the gate let
the version through, it is replicated to every replica and verified there, and
``registry.candidate_alias`` points at it in each of ``registry.promote_clouds``, each change
recorded in the ledger with the gate's verdict as its reason. ``registry.promote_alias``
(production: what serves) moves only when a rollout to that cloud's fleet completes
(``recflow deploy``, ``pipelines.rollout``), so the ledger's production entries say what served
where and when.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.registry.clouds import Registry
from pipelines.registry.ledger import LedgerEntry
from pipelines.registry.promotion import promote
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from pipelines.registry.replication import Replication, replicate, sync_aliases
from pipelines.registry.versions import Version

log = logging.getLogger("recflow.registry.publish")


@dataclass
class Published:
    """What the register step did."""

    version: Version
    created: bool
    replicated: list[Replication] = field(default_factory=list)
    promoted: list[LedgerEntry] = field(default_factory=list)


def publish(
    registry: Registry,
    candidate: Path,
    lineage: dict[str, Any],
    *,
    actor: str,
    at: dt.datetime,
    run: dict[str, Any] | None = None,
) -> Published:
    """Register ``candidate``; if the gate passed it, replicate it and name it the candidate.

    Args:
        registry: The registry.
        candidate: The candidate folder (``models/candidate``).
        lineage: Its lineage record (``pipelines.registry.lineage.collect``).
        actor: Who or which run registers it.
        at: When, for the ledger (read at the command's edge).
        run: The Airflow run, when there is one.

    Returns:
        The version, whether it was new, the replications and the ledger entries written
        (``promoted``: the candidate alias's changes).

    Raises:
        InputError: The candidate is incomplete or inconsistent.
        PolicyViolation: Something of it may not cross to a replica (nothing was sent).
        StoreError: A store failed; rerunning completes what is missing.
    """
    cfg = registry.cfg
    registration = register(
        registry.record,
        candidate,
        lineage,
        lambda: pseudonym_key(registry.record),
        cfg.crossing.id_fields,
    )
    version = registration.version
    result = Published(version, registration.created)
    for cloud in registry.replica_clouds:
        sync_aliases(registry, cloud)
    if not version.passed:
        log.warning(
            "version %s: the gate's verdict is %s (blocked): registered in the record, "
            "neither replicated nor promoted",
            version.id,
            version.gate.get("verdict"),
        )
        return result
    for cloud in registry.replica_clouds:
        result.replicated.append(replicate(registry, version.id, cloud))
    verdict = version.gate.get("verdict")
    reason = f"gate verdict {verdict}" + (
        " (first-model rule)" if version.gate.get("bootstrap") else ""
    )
    for cloud in cfg.promote_clouds:
        entry = promote(
            registry,
            version.id,
            cfg.candidate_alias,
            cloud,
            reason=reason,
            actor=actor,
            at=at,
            run=run,
        )
        if entry is not None:
            result.promoted.append(entry)
    return result
