"""Task ``deploy``: roll a registered version out to the serving fleets (``pipelines.rollout``).

    recflow deploy VERSION [--dry-run]            roll VERSION out (or resume its rollout)
    recflow deploy --from-alias candidate         the version an alias names
    recflow deploy --from-alias candidate --target private    up to and including one target
                   [--require-approval | --no-require-approval]   (the DAG's task per cloud)
                   [--fleets kubernetes]      each cloud's Deployment (Kubernetes mode)
    recflow deploy --rollback --reason R [VERSION]

After ``register``: per target of ``deploy.targets`` (private, then public), an infra check,
a shadow bake, canary steps and full, each step judged against stable; a failed step rolls
everything back and fails the task. With ``--target`` the rollout stops after that target,
its record open for the next one (a target done already is a no-op, so a retry is safe);
before a later target it needs the decision (``recflow deploy approve|reject`` or the Airflow
approval task) when approval is required, and a reject fails it naming who rejected. The
fleets are local server processes started by each run for the targets it rolls out and
stopped when it ends; the rollout record under ``deploy.run_dir`` lets a killed controller
resume. With ``--fleets kubernetes`` (the deploy tasks of a Kubernetes-mode run) the fleets
are each cloud's Deployment in its cluster instead (``pipelines.rollout.cluster``). Deployment
is a side effect on the fleets and the registry, so this is not
a DVC stage. The operator commands beside it (``recflow deploy approve|status|manifests``)
are in ``pipelines/commands/deploy.py``; approval and rejection (``approve|reject``) too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.errors import InputError, RecflowError
from pipelines.core.logs import quiet_http_client
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import open_registry
from pipelines.registry.names import check_version_id
from pipelines.rollout.context import Context
from pipelines.rollout.controller import deploy
from pipelines.rollout.plan import plan_lines
from pipelines.rollout.rollback import request_rollback

log = logging.getLogger("recflow.deploy")


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


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow deploy", "Roll a registered version out to the fleets.")
    parser.add_argument("version", type=_version, nargs="?", help="the version to deploy")
    parser.add_argument("--from-alias", default=None, help="deploy the version this alias names")
    parser.add_argument(
        "--prepared",
        type=Path,
        default=Path("data/prepared"),
        help="the prepare stage's folder: the held-out sessions replayed at each step",
    )
    parser.add_argument(
        "--target",
        default=None,
        metavar="CLOUD",
        help="roll out up to and including this target of deploy.targets, then stop",
    )
    parser.add_argument(
        "--require-approval",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the targets after the first wait for approval, for this run "
        "(default: deploy.require_approval)",
    )
    parser.add_argument(
        "--fleets",
        choices=("local", "kubernetes"),
        default="local",
        help="the fleets to roll out to: local server processes started for the run, or each "
        "cloud's Deployment in its cluster (the deploy tasks of a Kubernetes-mode run)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--rollback", action="store_true", help="roll back the latest rollout")
    parser.add_argument("--reason", default="", help="why (for --rollback)")
    args = parser.parse_args(argv)
    ctx = Context.open(args.params, args.prepared)
    if args.rollback:
        if args.from_alias or args.dry_run or args.target or args.require_approval is not None:
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
        print("\n".join(plan_lines(ctx, version, args.target, args.require_approval)))
        return 0
    record = deploy(
        ctx,
        version,
        through=args.target,
        require_approval=args.require_approval,
        fleets=args.fleets,
    )
    log.info(
        "%s: %s (%s)",
        version,
        record.status,
        ", ".join(f"{t.cloud} {t.phase}" for t in record.targets),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow deploy`` / ``python -m pipelines.stages.deploy``."""
    quiet_http_client()
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
