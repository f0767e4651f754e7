"""What a rollout runs with, shared by the state machine (``controller``) and the rollback
(``rollback``): the context a command gives, and one version's rollout over the registry and
its records."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.params import Params, load_params
from pipelines.registry import lineage
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.promotion import promote
from pipelines.rollout.record import Records, RolloutRecord, TargetRecord

log = logging.getLogger("recflow.rollout")
# one line per step, shown on the main job's console
steps_log = logging.getLogger("recflow.rollout.steps")

Clock = Callable[[], dt.datetime]


@dataclass
class Context:
    """What a controller runs with.

    Attributes:
        params: The project's params.
        params_file: Their file (the local fleets' servers read it).
        root: The project root (relative stores and folders are under it).
        prepared: The prepare stage's folder: the held-out sessions to replay.
        actor: Who deploys (the ledger's actor).
        run: The Airflow run, when there is one.
        clock: The time of the record and the ledger.
    """

    params: Params
    params_file: Path
    root: Path
    prepared: Path
    actor: str
    run: dict[str, Any] | None = None
    clock: Clock = field(default=lambda: dt.datetime.now(dt.UTC))

    @classmethod
    def open(
        cls,
        params_file: Path,
        prepared: Path = Path("data/prepared"),
        environ: Mapping[str, str] = os.environ,
    ) -> Context:
        """The context of a command run with ``params_file``: the project root is its folder,
        a relative ``prepared`` is under it, and the actor and Airflow run come from
        ``environ``."""
        params = load_params(params_file)
        root = params_file.resolve().parent
        return cls(
            params=params,
            params_file=params_file.resolve(),
            root=root,
            prepared=prepared if prepared.is_absolute() else root / prepared,
            actor=lineage.actor(environ),
            run=lineage.airflow_run(environ),
        )

    @property
    def run_dir(self) -> Path:
        """The rollout records' folder."""
        return self.root / self.params.deploy.run_dir


def short(version: str | None) -> str:
    """A version's id as the console shows it."""
    return version[:12] if version else "none"


class Rollout:
    """One version's rollout: its context, the registry it promotes in, and its records.

    Args:
        ctx: The context.
        version: The version rolled out.
    """

    def __init__(self, ctx: Context, version: str) -> None:
        self.ctx = ctx
        self.cfg = ctx.params.deploy
        self.version = version
        self.registry: Registry = open_registry(ctx.params, ctx.root)
        self.records = Records(ctx.run_dir)

    def now(self) -> str:
        """The context's time, as the record and the ledger write it."""
        return self.ctx.clock().astimezone(dt.UTC).isoformat()

    def save(self, record: RolloutRecord) -> None:
        """Stamp and persist ``record`` (every transition ends here)."""
        record.updated_at = self.now()
        self.records.save(record)

    def production(self, cloud: str) -> str | None:
        """The version ``production`` names in ``cloud`` (None: nothing serves there yet)."""
        state = read_alias(self.registry.store(cloud), self.registry.cfg.promote_alias)
        return state.version if state else None

    def decision(self, target: TargetRecord, **more: Any) -> dict[str, Any]:
        """What a ledger entry keeps of the rollout: its steps' outcomes and checks (values,
        baselines, limits), and the thresholds."""
        steps = [
            {
                "step": s["step"],
                "outcome": s["outcome"],
                "checks": [
                    {k: c[k] for k in ("metric", "outcome", "value", "baseline", "limit")}
                    for c in s.get("checks", [])
                ],
            }
            for s in target.steps
        ]
        return {
            "rollout": self.version,
            "cloud": target.cloud,
            "stable": target.stable,
            "steps": steps,
            "thresholds": self.cfg.analysis.model_dump(mode="json"),
            **more,
        }

    def promote(
        self,
        target: TargetRecord,
        alias: str,
        reason: str,
        decision: dict[str, Any] | None = None,
    ) -> int | None:
        """Point ``alias`` at the version in the target's cloud, in the ledger; the entry's
        number, also kept in the target's record (None: it pointed there already)."""
        entry = promote(
            self.registry,
            self.version,
            alias,
            target.cloud,
            reason=reason,
            actor=self.ctx.actor,
            at=self.ctx.clock(),
            run=self.ctx.run,
            decision=decision,
        )
        if entry is None:
            return None
        target.ledger.append(entry.seq)
        return entry.seq
