"""Operator commands on rollouts, beside the ``deploy`` task (``pipelines/stages/deploy.py``).

    recflow deploy approve [--reason R]           let a rollout waiting after private go on
    recflow deploy status [VERSION] [--json]      where a rollout stands
    recflow deploy manifests --cloud C [--version V] [--out FILE]

``recflow deploy`` runs this module when its first word is one of ``SUBCOMMANDS`` (the stage
table lists them on the ``deploy`` stage), and the stage otherwise. These commands read the
rollout records under ``deploy.run_dir`` or ask the controller to go on; none of them rolls a
version out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.errors import InputError, RecflowError
from pipelines.core.logs import quiet_http_client
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import open_registry
from pipelines.registry.names import check_version_id
from pipelines.rollout.context import Context
from pipelines.rollout.controller import approve
from pipelines.rollout.kubernetes import render_manifests
from pipelines.rollout.record import Records


def _version(text: str) -> str:
    try:
        return check_version_id(text)
    except RecflowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _approve(argv: Sequence[str]) -> int:
    parser = stage_parser("recflow deploy approve", "Let a waiting rollout go on.")
    parser.add_argument("--reason", default="approved", help="why, for the record")
    args = parser.parse_args(argv)
    record = approve(Context.open(args.params), args.reason)
    print(f"approved: the rollout of {record.version} goes on ({record.where()})")
    return 0


def _status(argv: Sequence[str]) -> int:
    parser = stage_parser("recflow deploy status", "Where a rollout stands.")
    parser.add_argument("version", type=_version, nargs="?")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ctx = Context.open(args.params)
    records = Records(ctx.run_dir)
    record = records.load(args.version) if args.version else records.latest()
    if record is None:
        raise InputError("no rollout yet" if not args.version else f"no rollout of {args.version}")
    if args.json:
        print(json.dumps(record.to_json(), indent=2, sort_keys=True))
        return 0
    print(f"rollout of {record.version}: {record.status} ({record.where()})")
    for target in record.targets:
        steps = ", ".join(f"{s['step']} {s['outcome']}" for s in target.steps) or "no steps yet"
        print(f"  {target.cloud}: {target.phase}; stable {target.stable}; {steps}")
        if target.note:
            print(f"    {target.note}")
    if record.failure:
        print(f"  failure: {record.failure.get('reason')}")
    return 0


def _manifests(argv: Sequence[str]) -> int:
    parser = stage_parser("recflow deploy manifests", "Serving manifests for a cloud.")
    parser.add_argument("--cloud", choices=("private", "public"), required=True)
    parser.add_argument("--version", type=_version, default=None, help="default: production")
    parser.add_argument("--out", type=Path, default=None, help="a YAML file (default: stdout)")
    args = parser.parse_args(argv)
    ctx = Context.open(args.params)
    version = args.version
    if version is None:
        registry = open_registry(ctx.params, ctx.root)
        state = read_alias(registry.store(args.cloud), registry.cfg.promote_alias)
        if state is None:
            raise InputError(f"nothing is production in {args.cloud}: give --version")
        version = state.version
    text = yaml.safe_dump_all(render_manifests(ctx.params, args.cloud, version), sort_keys=False)
    if args.out is None:
        print(text, end="")
    else:
        from pipelines.core.io import write_text

        write_text(args.out, text)
    return 0


SUBCOMMANDS = {"approve": _approve, "status": _status, "manifests": _manifests}


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        print(f"usage: recflow deploy {{{','.join(SUBCOMMANDS)}}} [options]", file=sys.stderr)
        return 2
    return SUBCOMMANDS[args[0]](args[1:])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow deploy approve|status|manifests``."""
    quiet_http_client()
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
