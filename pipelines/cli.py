"""``recflow``: one subcommand per stage, each the same as ``python -m pipelines.<stage>``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help). Adding a stage adds one line here.
STAGES: dict[str, tuple[str, str]] = {
    "generate": ("pipelines.generate", "generate the synthetic clickstream (embedded default)"),
    "ingest": ("pipelines.ingest", "write the run's immutable raw batch from a source"),
    "validate": ("pipelines.validate", "validate a batch with Great Expectations"),
    "prepare": ("pipelines.prepare", "build user sequences, splits and reference statistics"),
    "train": ("pipelines.train", "train the SASRec recommender (under torchrun for DDP)"),
    "optimize": ("pipelines.optimize", "export to ONNX, build runtime artifacts, check parity"),
    "evaluate": ("pipelines.evaluate", "regression gate of the candidate against production"),
}


def _usage() -> str:
    width = max(len(name) for name in STAGES)
    lines = ["usage: recflow <stage> [options]   (recflow <stage> --help: its options)", ""]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in STAGES.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the stage's own ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        from pipelines import __version__

        print(f"recflow {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in STAGES:
        print(f"recflow: unknown stage {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[name][0])
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
