"""Task ``pin_production``: pin the production version the run's gate compares against.

    python -m pipelines.stages.pin_production --params params.yaml --out models/production.json

Resolves ``registry.gate_alias`` in ``registry.gate_cloud`` and writes ``{"alias", "cloud",
"version"}`` (``version`` null when there is no production model yet). The evaluate stage
depends on the file in ``dvc.yaml``, so a new production version makes DVC judge the candidate
again, and the run judges against the version pinned when it started, even after its own
promotion. Not a DVC stage: it reads the registry, which DVC cannot track. ``recflow registry
promote`` and ``rollback`` of the gate's alias rewrite the pin too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.registry.production import write_pin

log = logging.getLogger("recflow.pin_production")


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow pin_production", "Pin the gate's production version.")
    parser.add_argument("--out", type=Path, default=Path("models/production.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    pin = write_pin(params, args.out, root=args.params.resolve().parent)
    log.info(
        "production pinned: %s (%s in %s)",
        pin["version"] or "none (the gate's first-model rule applies)",
        pin["alias"],
        pin["cloud"],
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow pin_production`` / ``python -m pipelines.stages.pin_production``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
