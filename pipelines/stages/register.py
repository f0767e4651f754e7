"""Task ``register``: the gated candidate becomes a version of the model registry.

    python -m pipelines.stages.register --params params.yaml --candidate models/candidate \\
        --lock dvc.lock --validation metrics/validation.json --trigger "$RECFLOW_TRIGGER"

After ``evaluate``. Registers the candidate with its lineage in the private store of record,
replicates it to the public store and verifies it there, and, if the gate passed it, points the
``candidate`` alias at it in both clouds, each change in the ledger
(``pipelines.registry.publish``); the ``deploy`` task then rolls it out and moves ``production``
in each cloud whose rollout completes.
It writes to the stores, a side effect, so it is not a DVC stage: after a local ``dvc repro``,
``recflow register`` does the same by hand. Rerunning it changes nothing.

``--trigger`` is why the run happened, as JSON: in the DAG, the reason carried by the asset
events that started the retrain (a drift finding of the monitor), from ``RECFLOW_TRIGGER``;
empty for a run started by hand or by its schedule. It is recorded in the version's lineage
under ``trigger`` (``recflow registry show`` prints it first); text that is not a JSON object
or list of objects stops the command before anything is written.
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
    parser.add_argument(
        "--placement",
        type=Path,
        default=Path("models/placement/train.json"),
        help="where training ran, as recflow placement recorded it (kept in the lineage)",
    )
    parser.add_argument(
        "--trigger",
        default="",
        help="why the run happened, as JSON (the drift reason of the asset event that started "
        "it); empty: by hand or by schedule",
    )
    args = parser.parse_args(argv)
    # before anything else: a malformed reason must not leave a version without one
    trigger = lineage.parse_trigger(args.trigger)
    params = load_params(args.params)
    root = args.params.resolve().parent
    run = lineage.airflow_run(os.environ)
    record = lineage.collect(
        params,
        args.candidate,
        args.lock,
        args.validation,
        root,
        os.environ,
        trigger,
        placement=args.placement,
    )
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
        # a version keeps the lineage, and so the trigger, of its first registration
        f"new, {lineage.trigger_line(record)}" if result.created else "already registered",
        ", ".join(f"{e.alias} in {e.cloud} -> {e.version}" for e in result.promoted)
        or "no alias changed",
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow register`` / ``python -m pipelines.stages.register``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
