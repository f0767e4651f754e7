"""Task ``deploy``: roll a registered version out to the serving fleets (``pipelines.rollout``).

    recflow deploy VERSION [--dry-run]            roll VERSION out (or resume its rollout)
    recflow deploy --from-alias candidate         the version an alias names (the DAG's task)
    recflow deploy --rollback --reason R [VERSION]
    recflow deploy approve [--reason R]           let a rollout waiting after private go on
    recflow deploy status [VERSION]               where a rollout stands
    recflow deploy manifests --cloud C [--version V] [--out FILE]

After ``register``: per target of ``deploy.targets`` (private, then public), an infra check,
a shadow bake, canary steps and full, each step judged against stable; a failed step rolls
everything back and fails the task. The fleets are local server processes started for the
rollout and stopped when it ends; the rollout record under ``deploy.run_dir`` lets a killed
controller resume. Deployment is a side effect on the fleets and the registry, so this is not
a DVC stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.errors import InputError, RecflowError
from pipelines.core.logs import quiet_http_client
from pipelines.core.params import load_params
from pipelines.registry import lineage
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import open_registry
from pipelines.registry.names import check_version_id
from pipelines.rollout.controller import Context, approve, deploy, request_rollback
from pipelines.rollout.kubernetes import render_manifests
from pipelines.rollout.plan import plan_lines
from pipelines.rollout.record import Records

log = logging.getLogger("recflow.deploy")

SUBCOMMANDS = ("approve", "status", "manifests")


def _context(params_file: Path, prepared: Path) -> Context:
    params = load_params(params_file)
    root = params_file.resolve().parent
    return Context(
        params=params,
        params_file=params_file.resolve(),
        root=root,
        prepared=prepared if prepared.is_absolute() else root / prepared,
        actor=lineage.actor(os.environ),
        run=lineage.airflow_run(os.environ),
    )


def _version(text: str) -> str:
    try:
        return check_version_id(text)
    except RecflowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _from_alias(ctx: Context, alias: str) -> str:
    registry = open_registry(ctx.params, ctx.root)
    state = read_alias(registry.record, alias)
    if state is None:
        raise InputError(
            f"alias {alias!r} is not set in {registry.record_cloud!r}: no gated version to deploy "
            "(the register task sets it)"
        )
    return state.version


def _deploy(argv: Sequence[str]) -> int:
    parser = stage_parser("recflow deploy", "Roll a registered version out to the fleets.")
    parser.add_argument("version", type=_version, nargs="?", help="the version to deploy")
    parser.add_argument("--from-alias", default=None, help="deploy the version this alias names")
    parser.add_argument(
        "--prepared",
        type=Path,
        default=Path("data/prepared"),
        help="the prepare stage's folder: the held-out sessions replayed at each step",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--rollback", action="store_true", help="roll back the latest rollout")
    parser.add_argument("--reason", default="", help="why (for --rollback)")
    args = parser.parse_args(argv)
    ctx = _context(args.params, args.prepared)
    if args.rollback:
        if args.from_alias or args.dry_run:
            parser.error("--rollback takes an optional VERSION and --reason only")
        record = request_rollback(ctx, args.version, args.reason)
        print(
            f"rollout of {record.version}: {record.status}; {(record.failure or {}).get('reason')}"
        )
        return 0
    if (args.version is None) == (args.from_alias is None):
        parser.error("give a VERSION or --from-alias ALIAS (one of them)")
    version = args.version or _from_alias(ctx, args.from_alias)
    if args.dry_run:
        print("\n".join(plan_lines(ctx, version)))
        return 0
    record = deploy(ctx, version)
    log.info(
        "%s: %s (%s)",
        version,
        record.status,
        ", ".join(f"{t.cloud} {t.phase}" for t in record.targets),
    )
    return 0


def _approve(argv: Sequence[str]) -> int:
    parser = stage_parser("recflow deploy approve", "Let a waiting rollout go on.")
    parser.add_argument("--reason", default="approved", help="why, for the record")
    args = parser.parse_args(argv)
    record = approve(_context(args.params, Path("data/prepared")), args.reason)
    print(f"approved: the rollout of {record.version} goes on ({record.where()})")
    return 0


def _status(argv: Sequence[str]) -> int:
    parser = stage_parser("recflow deploy status", "Where a rollout stands.")
    parser.add_argument("version", type=_version, nargs="?")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ctx = _context(args.params, Path("data/prepared"))
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
    ctx = _context(args.params, Path("data/prepared"))
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


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return {"approve": _approve, "status": _status, "manifests": _manifests}[args[0]](args[1:])
    return _deploy(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow deploy`` / ``python -m pipelines.stages.deploy``."""
    quiet_http_client()
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
