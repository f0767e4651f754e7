"""``recflow``: one subcommand per stage of the stage table (``python -m pipelines.stages.<name>``)
and per command that is not a stage (``python -m pipelines.commands.<name>``); a stage's
operator commands (``recflow deploy status``) run from ``pipelines.commands.<stage>``."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

from pipelines.core.cli import quiet_on_broken_pipe
from pipelines.stages.table import COMMANDS, STAGES


def _entries() -> dict[str, str]:
    """Subcommand name to the module whose ``main`` runs it."""
    return {spec.name: spec.module for spec in STAGES} | {c.name: c.module for c in COMMANDS}


def _usage() -> str:
    width = max(len(name) for name in _entries())
    lines = ["usage: recflow <stage> [options]   (recflow <stage> --help: its options)", ""]
    lines += ["stages of the chain:"]
    lines += [f"  {spec.name:<{width}}  {spec.help}" for spec in STAGES]
    lines += ["", "commands:"]
    lines += [f"  {spec.name:<{width}}  {spec.help}" for spec in COMMANDS]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the stage's or command's own ``main``; a closed reader of standard output
    (``recflow ... | head``) ends any of them quietly."""
    return quiet_on_broken_pipe(lambda: _dispatch(list(sys.argv[1:] if argv is None else argv)))


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        print(f"recflow {importlib.metadata.version('recflow')}")
        return 0
    name, rest = args[0], args[1:]
    modules = _entries()
    if name not in modules:
        print(f"recflow: unknown stage {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(_module_for(name, rest, modules))
    return int(module.main(rest))


def _module_for(name: str, rest: Sequence[str], modules: dict[str, str]) -> str:
    """The stage's operator commands when ``rest`` starts with one of them, else ``modules``'s."""
    spec = next((s for s in STAGES if s.name == name), None)
    if spec is not None and spec.commands_module and rest and rest[0] in spec.subcommands:
        return spec.commands_module
    return modules[name]


if __name__ == "__main__":
    sys.exit(main())
