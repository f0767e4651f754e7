"""Operator commands on rollouts, beside the ``deploy`` task (``pipelines/stages/deploy.py``).

    recflow deploy approve [--version V | --from-alias A] [--actor A] [--reason R]
    recflow deploy reject [--version V | --from-alias A] [--actor A] --reason R
    recflow deploy status [VERSION | --from-alias A] [--json] [--summary]
    recflow deploy manifests --cloud C [--version V] [--out FILE]

``recflow deploy`` runs this module when its first word is one of ``SUBCOMMANDS`` (the stage
table lists them on the ``deploy`` stage), and the stage otherwise. These commands read the
rollout records under ``deploy.run_dir`` or record a decision on one
(``pipelines.rollout.approval``: the first decision wins, in the CLI and in the Airflow
approval task alike: ``--via airflow`` says the decision came from there); none of them rolls
a version out. Without a version they act on the latest rollout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import yaml

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.errors import InputError, RecflowError
from pipelines.core.logs import quiet_http_client
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import open_registry
from pipelines.registry.names import check_version_id
from pipelines.rollout.approval import (
    DecisionWord,
    Via,
    approval_summary,
    decide,
    read_decision,
    waiting_version,
)
from pipelines.rollout.context import Context
from pipelines.rollout.kubernetes import render_manifests
from pipelines.rollout.record import Records


def _version(text: str) -> str:
    try:
        return check_version_id(text)
    except RecflowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _alias_version(ctx: Context, alias: str) -> str:
    registry = open_registry(ctx.params, ctx.root)
    state = read_alias(registry.record, alias)
    if state is None:
        raise InputError(f"alias {alias!r} is not set in {registry.record_cloud!r}")
    return state.version


def _decide(decision: DecisionWord, argv: Sequence[str]) -> int:
    words = {
        "approve": "Let a rollout waiting after its first target go on.",
        "reject": "Reject a rollout waiting after its first target: roll back what it deployed.",
    }
    parser = stage_parser(f"recflow deploy {decision}", words[decision])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--version", type=_version, default=None, help="the rollout's version (default: latest)"
    )
    which.add_argument("--from-alias", default=None, help="the version this alias names")
    parser.add_argument(
        "--actor",
        default=os.environ.get("USER") or "unknown",
        help="who decides (default: $USER)",
    )
    parser.add_argument(
        "--reason",
        required=decision == "reject",
        default="approved",
        help="why, for the record and the ledger",
    )
    parser.add_argument(
        "--via", choices=get_args(Via), default="cli", help="where the decision was taken"
    )
    args = parser.parse_args(argv)
    ctx = Context.open(args.params)
    if args.from_alias:
        version = _alias_version(ctx, args.from_alias)
    else:
        version = args.version or waiting_version(ctx)
    stands = decide(ctx, version, decision, args.actor, args.reason, args.via)
    record = Records(ctx.run_dir).load(version)
    where = record.where() if record else "no record"
    print(f"rollout of {version}: {stands.describe()} ({where})")
    return 0


def _approve(argv: Sequence[str]) -> int:
    return _decide("approve", argv)


def _reject(argv: Sequence[str]) -> int:
    return _decide("reject", argv)


def _status(argv: Sequence[str]) -> int:
    parser = stage_parser("recflow deploy status", "Where a rollout stands.")
    parser.add_argument("version", type=_version, nargs="?")
    parser.add_argument("--from-alias", default=None, help="the version this alias names")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--summary", action="store_true", help="what an approver reads (Markdown)")
    args = parser.parse_args(argv)
    if args.version and args.from_alias:
        parser.error("give a VERSION or --from-alias ALIAS, not both")
    ctx = Context.open(args.params)
    records = Records(ctx.run_dir)
    version = _alias_version(ctx, args.from_alias) if args.from_alias else args.version
    record = records.load(version) if version else records.latest()
    if record is None:
        raise InputError("no rollout yet" if not version else f"no rollout of {version}")
    decision = read_decision(ctx, record.version)
    if args.json:
        out = {**record.to_json(), "decision": decision.to_json() if decision else None}
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    if args.summary:
        print(approval_summary(ctx, record.version), end="")
        return 0
    where = record.where()
    if record.status == "awaiting_approval" and decision is not None and decision.approved:
        where = f"approved; {decision.before} next: recflow deploy {record.version} --target "
        where += decision.before
    print(f"rollout of {record.version}: {record.status} ({where})")
    for target in record.targets:
        steps = ", ".join(f"{s['step']} {s['outcome']}" for s in target.steps) or "no steps yet"
        print(f"  {target.cloud}: {target.phase}; stable {target.stable}; {steps}")
        if target.note:
            print(f"    {target.note}")
    if decision is not None:
        print(f"  decision: {decision.describe()}")
    elif record.status == "awaiting_approval":
        print("  decision: none yet (recflow deploy approve|reject --reason ...)")
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


SUBCOMMANDS = {
    "approve": _approve,
    "reject": _reject,
    "status": _status,
    "manifests": _manifests,
}


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        print(f"usage: recflow deploy {{{','.join(SUBCOMMANDS)}}} [options]", file=sys.stderr)
        return 2
    return SUBCOMMANDS[args[0]](args[1:])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow deploy approve|reject|status|manifests``."""
    quiet_http_client()
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
