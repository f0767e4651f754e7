"""Stage ``reference``: what the monitor compares a version's traffic with, built once per model.

    python -m pipelines.stages.reference --params params.yaml --prepared data/prepared \\
        --model models/candidate/optimized --out models/candidate/monitoring

After ``optimize``. The held-out ``test`` sessions, sent as requests the way a replay sends
them, with the shipped artifact's top-k answers (k: ``deploy.replay.k``, what a replayed user
is served), featurized like served traffic and sampled (``monitor.reference_rows``, seeded by
``run.seed``) (``pipelines.monitoring.reference``). It lands in the candidate folder, so the
register stage keeps it in the version (kind ``monitoring_reference``, which may cross to the
public cloud: request features and item ids only) and each cloud's monitor reads it from there.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params
from pipelines.monitoring.reference import build_reference


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow reference", "Build the monitoring reference of the candidate.")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument(
        "--model",
        type=Path,
        default=Path("models/candidate/optimized"),
        help="the optimized folder whose shipped artifact answers the requests",
    )
    parser.add_argument("--out", type=Path, default=Path("models/candidate/monitoring"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    build_reference(
        args.prepared,
        args.model,
        args.out,
        params.monitor,
        seed=params.run.seed,
        k=params.deploy.replay.k,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow reference`` / ``python -m pipelines.stages.reference``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
