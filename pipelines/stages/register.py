"""Task ``register``: the gated candidate becomes a version of the model registry.

    python -m pipelines.stages.register --params params.yaml --candidate models/candidate \\
        --lock dvc.lock --validation metrics/validation.json

After ``evaluate``. Registers the candidate with its lineage in the private store of record,
replicates it to the public store and verifies it there, and, if the gate passed it, points the
``candidate`` alias at it in both clouds, each change in the ledger
(``pipelines.registry.publish``); the ``deploy`` task then rolls it out and moves ``production``
in each cloud whose rollout completes.
It writes to the stores, a side effect, so it is not a DVC stage: after a local ``dvc repro``,
``recflow register`` does the same by hand. Rerunning it changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.registry import lineage
from pipelines.registry.clouds import open_registry
from pipelines.registry.publish import publish

log = logging.getLogger("recflow.register")


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow register", "Register the candidate in the model registry.")
    parser.add_argument("--candidate", type=Path, default=Path("models/candidate"))
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="the run's dvc.lock")
    parser.add_argument(
        "--validation",
        type=Path,
        default=Path("metrics/validation.json"),
        help="the validate stage's metrics (the validation result in the lineage)",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    root = args.params.resolve().parent
    run = lineage.airflow_run(os.environ)
    record = lineage.collect(params, args.candidate, args.lock, args.validation, root, os.environ)
    result = publish(
        open_registry(params, root),
        args.candidate,
        record,
        actor=lineage.actor(os.environ),
        # when the aliases change: the ledger's time, read once here at the edge; the version
        # and its lineage carry the run's own time, never this one
        at=dt.datetime.now(dt.UTC),
        run=run,
    )
    log.info(
        "version %s (%s); %s",
        result.version.id,
        "new" if result.created else "already registered",
        ", ".join(f"{e.alias} in {e.cloud} -> {e.version}" for e in result.promoted)
        or "no alias changed",
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow register`` / ``python -m pipelines.stages.register``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
