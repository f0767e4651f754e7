"""``recflow``: one subcommand per stage of the registry (``python -m pipelines.stages.<name>``)
and per CLI-only command (``COMMANDS``, e.g. ``recflow serve``)."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

from pipelines.stages.registry import COMMANDS, STAGES


def _usage() -> str:
    width = max(len(name) for name in _modules())
    lines = ["usage: recflow <stage> [options]   (recflow <stage> --help: its options)", ""]
    lines += [f"  {spec.name:<{width}}  {spec.help}" for spec in STAGES]
    lines += ["", "commands:"] + [f"  {spec.name:<{width}}  {spec.help}" for spec in COMMANDS]
    return "\n".join(lines)


def _modules() -> dict[str, str]:
    """Subcommand -> module: the stages, then the CLI-only commands."""
    return {
        **{spec.name: spec.module for spec in STAGES},
        **{spec.name: spec.module for spec in COMMANDS},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the stage's own ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        print(f"recflow {importlib.metadata.version('recflow')}")
        return 0
    name, rest = args[0], args[1:]
    modules = _modules()
    if name not in modules:
        print(f"recflow: unknown stage {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(modules[name])
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
