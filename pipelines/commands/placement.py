"""Command ``recflow placement``: decide which cloud a task runs in, and record it.

    recflow placement --task train [--dry-run] [--json] [--free-gpus CLOUD=N] [--out FILE]

Weighs the clouds of ``execution.placement`` for the task (``pipelines.core.placement``): the
private cloud when it has the GPUs before the task's deadline, a burst to the public one
otherwise, and never a cloud that may not read the task's inputs under the registry's
crossing rule (``registry.crossing``). It prints and logs the decision, its inputs and the
estimated cost, and records it in ``models/placement/<task>.json``, which the register step
copies, checked, into the version's lineage; ``--dry-run`` prints it and records nothing. A
refusal (no cloud may run the task) exits 1 with the reason, per cloud.

``--free-gpus`` replaces a cloud's free GPUs from ``params.yaml`` for this decision (what a
look at the cluster says now), e.g. ``--free-gpus private=0``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.io import write_json
from pipelines.core.params import Params, load_params
from pipelines.core.placement import Decision, PlacedTask, decision_record, record_path
from pipelines.core.placing import CLOUD_NAMES, place

log = logging.getLogger("recflow.placement")


def _free_gpus(text: str) -> tuple[str, int]:
    cloud, sep, count = text.partition("=")
    if not sep or cloud not in CLOUD_NAMES or not count.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not CLOUD=N with CLOUD one of {', '.join(CLOUD_NAMES)} and N >= 0"
        )
    return cloud, int(count)


def record(decision: Decision, params: Params, path: Path) -> None:
    """Write the decision where the register step reads it into the run's lineage."""
    write_json(path, decision_record(decision, params.run.logical_date.isoformat()))
    log.info("placement of %s recorded in %s", decision.task, path)


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow placement", "Decide which cloud a task runs in.")
    parser.add_argument("--task", choices=get_args(PlacedTask), required=True)
    parser.add_argument("--dry-run", action="store_true", help="print the decision, record nothing")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    parser.add_argument(
        "--free-gpus",
        type=_free_gpus,
        action="append",
        default=[],
        metavar="CLOUD=N",
        help="a cloud's free GPUs now, instead of params.yaml's (repeat per cloud)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="the record (default: models/placement/TASK.json)"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    decision = place(params, args.task, args.free_gpus)
    if args.json:
        print(json.dumps(decision.to_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(decision.lines()))
    if args.dry_run:
        print("dry run: nothing recorded", file=sys.stderr)
        return 0
    record(decision, params, args.out or record_path(args.task))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow placement`` / ``python -m pipelines.commands.placement``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
