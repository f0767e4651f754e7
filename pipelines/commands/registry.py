"""``recflow registry``: look into the model registry and change its aliases by hand.

    recflow registry list [--cloud C]
    recflow registry show VERSION [--cloud C]   (why it was made first: its trigger)
    recflow registry promote VERSION --alias A --cloud C --reason R
    recflow registry rollback --alias A --cloud C --reason R
    recflow registry history [--alias A] [--cloud C] [--at TIME]
    recflow registry verify [VERSION] [--cloud C]   (no --cloud: a stopped loopback one is skipped)
    recflow registry replicate [VERSION] [--cloud C] [--sync]
    recflow registry backup DEST      (file:folder or s3://bucket/prefix)
    recflow registry restore SRC

Every name given here is checked against its strict pattern before it reaches a store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import Params, load_params
from pipelines.registry import ledger, lineage
from pipelines.registry.aliases import read_alias
from pipelines.registry.backup import backup, open_destination, restore
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.errors import RegistryError, StoreUnreachable
from pipelines.registry.history import ledger_problems, read_ledger
from pipelines.registry.names import CLOUDS, check_alias, check_cloud, check_version_id
from pipelines.registry.production import PIN_FILE, write_pin
from pipelines.registry.promotion import promote, rollback
from pipelines.registry.replication import replicate, sync_aliases
from pipelines.registry.versions import (
    list_versions,
    read_lineage,
    read_version,
    verify_version,
)


def _alias(text: str) -> str:
    try:
        return check_alias(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cloud(text: str) -> str:
    try:
        return check_cloud(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version(text: str) -> str:
    try:
        return check_version_id(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(text: str) -> dt.datetime:
    try:
        return ledger.parse_time(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = stage_parser("recflow registry", "The model registry of both clouds.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="the versions in a cloud")
    listing.add_argument("--cloud", type=_cloud, default=None, help="default: the record's")
    listing.add_argument("--json", action="store_true")

    show = commands.add_parser("show", help="a version: files, artifacts, gate, lineage")
    show.add_argument("version", type=_version)
    show.add_argument("--cloud", type=_cloud, default=None, help="default: the record's")
    show.add_argument("--json", action="store_true")

    for name, help_text in (
        ("promote", "point an alias in a cloud at a version"),
        ("rollback", "point an alias back at its last known good version"),
    ):
        sub = commands.add_parser(name, help=help_text)
        if name == "promote":
            sub.add_argument("version", type=_version)
        sub.add_argument("--alias", type=_alias, required=True)
        sub.add_argument("--cloud", type=_cloud, required=True, metavar="{private,public}")
        sub.add_argument("--reason", required=True, help="why, for the ledger")

    history = commands.add_parser("history", help="the promotion ledger: what served where, when")
    history.add_argument("--alias", type=_alias, default=None)
    history.add_argument("--cloud", type=_cloud, default=None, metavar="{private,public}")
    history.add_argument("--at", type=_time, default=None, help="ISO time: what served then")
    history.add_argument("--json", action="store_true")

    verify = commands.add_parser("verify", help="re-hash every object and report mismatches")
    verify.add_argument("version", type=_version, nargs="?")
    verify.add_argument("--cloud", type=_cloud, default=None, metavar="{private,public}")

    rep = commands.add_parser("replicate", help="copy a version to a replica and verify it")
    rep.add_argument("version", type=_version, nargs="?")
    rep.add_argument("--cloud", type=_cloud, default="public", metavar="{private,public}")
    rep.add_argument("--sync", action="store_true", help="also rebuild its aliases from the ledger")

    for name, what in (("backup", "DEST"), ("restore", "SRC")):
        sub = commands.add_parser(
            name,
            help="copy the registry of record to a new location"
            if name == "backup"
            else "rebuild an empty registry of record from a backup",
        )
        sub.add_argument("location", metavar=what, help="file:folder or s3://bucket/prefix")
        sub.add_argument("--endpoint-url", default=None, help="for an S3-compatible server")
        sub.add_argument("--region", default=None)
        sub.add_argument("--profile", default=None, help="AWS profile for the location")
    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _list(registry: Registry, args: argparse.Namespace) -> int:
    cloud = args.cloud or registry.record_cloud
    versions = [
        read_version(registry.store(cloud), v) for v in list_versions(registry.store(cloud))
    ]
    if args.json:
        _print_json([{"id": v.id, "gate": v.gate} for v in versions])
        return 0
    if not versions:
        print(f"no versions in {cloud}")
    for v in versions:
        print(f"{v.id}  {v.gate.get('verdict', '?'):<12}  {len(v.files)} files")
    return 0


def _show(registry: Registry, args: argparse.Namespace) -> int:
    store = registry.store(args.cloud or registry.record_cloud)
    version = read_version(store, args.version)
    document = json.loads(version.to_bytes())
    document["lineage"] = read_lineage(store, version)
    if args.json:
        _print_json(document)
        return 0
    # why the version was made, first: a drift finding names the cloud, window and features
    print(lineage.trigger_line(document["lineage"]))
    print(f"version {version.id} in {store.name} (digest {version.digest})")
    print(f"gate: {version.gate}")
    for artifact in version.artifacts:
        print(
            f"  artifact {artifact['name']:<20} {artifact['path']}"
            + ("  [shipped]" if artifact["shipped"] else "")
        )
    for item in version.files:
        print(f"  {item.kind:<14} {item.path}  {item.size} bytes  sha256 {item.sha256[:16]}…")
    print("lineage:")
    print(json.dumps(document["lineage"], indent=2, sort_keys=True))
    return 0


def _entry_line(entry: ledger.LedgerEntry) -> str:
    change = entry.change
    return (
        f"{entry.seq:>5}  {change['at']}  {entry.cloud:<7}  {entry.alias:<11}  "
        f"{change.get('from_version') or '-':<16} -> {entry.version}  {entry.action:<8}  "
        f"{change.get('actor')}  {change.get('reason')}"
    )


def _history(registry: Registry, args: argparse.Namespace) -> int:
    skipped: list[str] = []
    notes: list[str] = []
    entries = read_ledger(registry, skipped=skipped, notes=notes)
    for cloud in skipped:
        print(
            f"not checked against the ledger anchors and head in {cloud}: unreachable",
            file=sys.stderr,
        )
    for line in notes:
        print(f"NOTE {line}", file=sys.stderr)
    if args.at is not None:
        aliases = [args.alias] if args.alias else sorted({e.alias for e in entries})
        clouds = [args.cloud] if args.cloud else list(CLOUDS)
        found = {
            f"{alias}@{cloud}": ledger.serving_at(entries, alias, cloud, args.at)
            for alias in aliases
            for cloud in clouds
        }
        if args.json:
            _print_json({k: e.to_dict() if e else None for k, e in found.items()})
            return 0
        for where, entry in found.items():
            alias, cloud = where.split("@")
            if entry is None:
                print(f"{alias} in {cloud} at {args.at.isoformat()}: not set")
            else:
                print(f"{alias} in {cloud} at {args.at.isoformat()}: {entry.version}")
                print(f"  set by {_entry_line(entry)}")
        return 0
    selected = ledger.select(entries, args.alias, args.cloud)
    if args.json:
        _print_json([e.to_dict() for e in selected])
        return 0
    if not selected:
        print("the ledger has no entries" + (" for that alias and cloud" if entries else ""))
    for entry in selected:
        print(_entry_line(entry))
    return 0


def _verify(registry: Registry, args: argparse.Namespace) -> int:
    """Re-hash every object of the clouds asked for (default: both), and check the ledger.

    Without ``--cloud``, a replica served by the loopback S3 server while that server is not
    running (outside ``make run``: its objects lived in the server's memory) is reported as not
    verified and the rest is verified; asked for by ``--cloud``, it is an error. The exit code
    is 1 when a problem was found, else 0.
    """
    clouds = [args.cloud] if args.cloud else list(CLOUDS)
    problems: list[str] = []
    checked = 0
    verified: list[str] = []
    for cloud in clouds:
        try:
            store = registry.store(cloud)
        except StoreUnreachable as exc:
            if args.cloud or cloud == registry.record_cloud:
                raise
            print(f"not verified: {exc}")
            continue
        verified.append(cloud)
        versions = [args.version] if args.version else list_versions(store)
        for version in versions:
            checked += 1
            problems += verify_version(store, version)
        for key in store.list_keys("aliases/"):
            alias = key.removeprefix("aliases/").removesuffix(".json")
            try:
                state = read_alias(store, alias)
                if state is not None and state.version not in list_versions(store):
                    problems.append(f"alias {alias!r} in {cloud!r} names missing {state.version}")
            except RegistryError as exc:
                problems.append(str(exc))
    ledger_problems_found, unanchored = ledger_problems(registry, verified)
    problems += ledger_problems_found
    for line in unanchored:
        print(f"NOTE {line}")
    for line in problems:
        print(f"MISMATCH {line}")
    print(f"verified {checked} version(s) in {', '.join(verified)}: {len(problems)} problem(s)")
    return 1 if problems else 0


def _replicate(registry: Registry, args: argparse.Namespace) -> int:
    if args.sync:
        restored = sync_aliases(registry, args.cloud)
        print(f"aliases restored from the ledger in {args.cloud}: {', '.join(restored) or 'none'}")
    versions = [args.version] if args.version else list_versions(registry.record)
    for version in versions:
        done = replicate(registry, version, args.cloud)
        print(f"{version} -> {args.cloud}: {len(done.copied)} copied, {len(done.intact)} intact")
    return 0


def _location(params: Params, root: Path, args: argparse.Namespace) -> Any:
    return open_destination(
        args.location,
        params.registry,
        root,
        endpoint_url=args.endpoint_url,
        region=args.region,
        profile=args.profile,
    )


def _repin(params: Params, root: Path, args: argparse.Namespace) -> None:
    """A change of the gate's alias moves the production pin, so DVC judges again."""
    if (args.alias, args.cloud) != (params.registry.gate_alias, params.registry.gate_cloud):
        return
    pin = write_pin(params, root / PIN_FILE, root=root)
    print(f"production pin {PIN_FILE}: {pin['version']}")


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    params = load_params(args.params)
    root = args.params.resolve().parent
    registry = open_registry(params, root)
    now = dt.datetime.now(dt.UTC)
    actor = lineage.actor(os.environ)
    if args.command == "list":
        return _list(registry, args)
    if args.command == "show":
        return _show(registry, args)
    if args.command == "promote":
        entry = promote(
            registry, args.version, args.alias, args.cloud, reason=args.reason, actor=actor, at=now
        )
        print(f"ledger entry {entry.seq}: {_entry_line(entry)}" if entry else "nothing changed")
        _repin(params, root, args)
        return 0
    if args.command == "rollback":
        entry = rollback(registry, args.alias, args.cloud, reason=args.reason, actor=actor, at=now)
        print(f"ledger entry {entry.seq}: {_entry_line(entry)}")
        _repin(params, root, args)
        return 0
    if args.command == "history":
        return _history(registry, args)
    if args.command == "verify":
        return _verify(registry, args)
    if args.command == "replicate":
        return _replicate(registry, args)
    if args.command == "backup":
        report = backup(registry, _location(params, root, args), at=now)
        print(f"backed up {report.objects} objects ({report.versions} versions) to {args.location}")
        return 0
    report = restore(registry, _location(params, root, args))
    print(f"restored {report.objects} objects ({report.versions} versions) from {args.location}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow registry ...`` / ``python -m pipelines.commands.registry``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
