"""Stage ``train``: fit SASRec on the prepared sequences, plainly or under ``torchrun`` (DDP).

    python -m pipelines.stages.train --params params.yaml --prepared data/prepared \\
        --out models/candidate
    python -m pipelines.stages.train --torchrun --params params.yaml ...   # DVC's and the DAG's
    torchrun --standalone --nproc_per_node=2 -m pipelines.stages.train --prepared data/prepared ...

``--torchrun`` starts ``torchrun --standalone`` with ``train.nproc_per_node`` workers as read
from the params (the run overlay included), each running this command without the flag.

See ``pipelines.model.training`` for what lands in ``--out``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import RunConfig, TrainConfig, load_params, with_json_overrides
from pipelines.model.training.loop import train


def load_config(params: Path, overrides: str | None = None) -> tuple[TrainConfig, RunConfig]:
    """The ``train`` and ``run`` sections of ``params``, with JSON ``overrides`` on top.

    A params file without a ``train`` section gives the defaults of :class:`TrainConfig`. The
    overrides are checked as strictly as the file (``{"epochs": "3"}`` is an error naming
    ``train.epochs``).

    Raises:
        ConfigError: The file, a section or the overrides are invalid.
    """
    checked = load_params(params)  # the whole file: an unknown key anywhere is an error
    if not overrides:
        return checked.train, checked.run
    merged = with_json_overrides(checked, "train", overrides, "--config-json", str(params))
    return merged.train, merged.run


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow train", "Train SASRec on the prepared sequences.")
    parser.add_argument(
        "--prepared",
        type=Path,
        default=Path("data/prepared"),
        help="the prepare stage's output folder (default: data/prepared)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("models/candidate"),
        help="folder for checkpoints, model and metrics (default: models/candidate)",
    )
    parser.add_argument(
        "--config-json",
        default=None,
        help="overrides of the train section as a JSON object, e.g. '{\"epochs\": 3}'",
    )
    parser.add_argument(
        "--torchrun",
        action="store_true",
        help="run under torchrun --standalone with train.nproc_per_node workers (from the params)",
    )
    args = parser.parse_args(argv)
    cfg, run = load_config(args.params, args.config_json)
    if args.torchrun:
        words = list(sys.argv[1:] if argv is None else argv)
        return subprocess.run(torchrun_command(cfg.nproc_per_node, words), check=False).returncode
    train(cfg, run, args.prepared, args.out)
    return 0


def torchrun_command(nproc_per_node: int, argv: Sequence[str]) -> list[str]:
    """``torchrun --standalone`` running this stage with ``argv`` less ``--torchrun``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        "pipelines.stages.train",
        *[word for word in argv if word != "--torchrun"],
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the stage (``recflow train`` / ``python -m pipelines.stages.train``)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
