"""Task ``monitor``: drift and online quality of served traffic or a batch (``monitoring``).

    recflow monitor                                   the private cloud's production version and
                                                      its request log over the last window_hours
    recflow monitor --all-clouds                      each cloud of monitor.clouds (the chain's)
    recflow monitor --cloud public --since 2026-12-06T00:00:00Z --until 2026-12-07T00:00:00Z
    recflow monitor --version 0123456789abcdef --events data/raw/events/2026-11-23
    recflow monitor --reference data/prepared         against a prepare stage's folder

After ``deploy`` in the chain (the traffic its rollout served), and hourly per cloud in the
``recsys_drift_monitor`` DAG. The reference is the one the version was registered with (built
once by the ``reference`` stage); the window's report, summary, gauges and trend go to
``monitor.out/<cloud>/<window>/``. A drift verdict is a finding, not a failure: the command
exits 0 for ``drift``, ``no_drift`` and ``insufficient_data``, and non-zero only when it cannot
monitor at all (bad arguments, a version without a reference, a batch that fails validation),
changing nothing then. The window's end is the time the command was started unless
``--until`` gives it: the monitoring code itself never reads the clock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.logs import quiet_http_client
from pipelines.core.params import Params, load_params
from pipelines.monitoring.monitor import (
    Feedback,
    Source,
    load_reference,
    reference_from_prepared,
    run_monitor,
)
from pipelines.registry.clouds import Registry, open_registry
from pipelines.registry.errors import MissingReference, UnknownAlias
from pipelines.registry.monitoring import fetch_reference, resolve_version
from pipelines.registry.names import check_cloud
from pipelines.registry.pseudonyms import served_key
from pipelines.serving.server.pseudonyms import KeyedHash

log = logging.getLogger("recflow.monitor")


def _time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _parser() -> argparse.ArgumentParser:
    parser = stage_parser("recflow monitor", "Drift and online quality of traffic or a batch.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cloud", default="private", help="whose traffic and registry (private)")
    where.add_argument(
        "--all-clouds", action="store_true", help="each cloud of monitor.clouds in turn"
    )
    parser.add_argument(
        "--version", default=None, help="a version id or alias (default: the cloud's production)"
    )
    parser.add_argument(
        "--reference", type=Path, default=None, help="a prepare stage's folder as the reference"
    )
    parser.add_argument("--events", type=Path, default=None, help="monitor this events batch")
    parser.add_argument("--since", type=_time, default=None, help="window start (UTC)")
    parser.add_argument("--until", type=_time, default=None, help="window end (UTC; default: now)")
    parser.add_argument(
        "--feedback-prepared",
        type=Path,
        default=None,
        help="replayed sessions' true next items as feedback (a prepare stage's folder)",
    )
    parser.add_argument(
        "--feedback-events", type=Path, default=None, help="later events as feedback (a batch)"
    )
    return parser


def _monitor_cloud(
    args: argparse.Namespace,
    params: Params,
    registry: Registry,
    cloud: str,
    window: Source,
    pseudonymize: KeyedHash,
) -> int:
    """Monitor one cloud; 0 when a report was written, 1 when the cloud could not be monitored."""
    kind: Literal["version", "prepared"]
    if args.reference is not None:
        version, kind = None, "prepared"
        reference = reference_from_prepared(
            args.reference, None, params.monitor, seed=params.run.seed
        )
    else:
        name = args.version or params.registry.promote_alias
        try:
            version = resolve_version(registry, cloud, name)
            folder = fetch_reference(registry, cloud, version, args.root / params.registry.cache)
        except (MissingReference, UnknownAlias) as exc:
            # nothing to compare with: say so by name, write nothing, go on with the next cloud
            log.error("monitor %s: %s", cloud, exc)
            print(f"monitor {cloud}: not monitored: {exc}")
            return 1
        kind = "version"
        reference = load_reference(folder)
    outcome = run_monitor(
        params,
        args.root,
        replace(window, cloud=cloud),
        reference=reference,
        reference_version=version,
        reference_kind=kind,
        feedback=Feedback(
            prepared=args.feedback_prepared,
            split=params.deploy.replay.split,
            events=args.feedback_events,
        ),
        pseudonymize=pseudonymize,
        now=args.now,
    )
    document = outcome.document
    drifted = ", ".join(d.feature for d in document.drifted) or "none"
    quality = "; ".join(
        f"hit rate {q.hit_rate:.3f} [{q.low:.3f}, {q.high:.3f}] ({q.version[:12]}/{q.arm})"
        for q in document.quality
        if q.hit_rate is not None and q.low is not None and q.high is not None
    )
    print(
        f"monitor {cloud}: {outcome.verdict} ({document.rows:,} requests, drifted: {drifted}"
        f"{'; ' + quality if quality else ''}) -> {_shown(outcome.folder, args.root)}/"
    )
    return 0


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # the one read of the clock: the default end of the window, passed in from here
    args.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if args.version is not None and args.reference is not None:
        parser.error("give --version or --reference, not both")
    if args.feedback_prepared is not None and args.feedback_events is not None:
        parser.error("give --feedback-prepared or --feedback-events, not both")
    params = load_params(args.params)
    # the project root is the params file's folder: relative paths of params are under it
    args.root = Path(args.params).resolve().parent
    quiet_http_client()
    clouds = list(params.monitor.clouds) if args.all_clouds else [check_cloud(args.cloud)]
    until = args.until or args.now
    since = args.since or until - dt.timedelta(hours=params.monitor.window_hours)
    if since >= until:
        parser.error(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    registry = open_registry(params, args.root)
    window = Source(cloud=clouds[0], since=since, until=until, events=args.events)
    # the servers' key, read once from the store of record: the same user, the same pseudonym
    # in every cloud's log and in the feedback
    pseudonymize = KeyedHash(served_key(registry.record).encode())
    failed = [c for c in clouds if _monitor_cloud(args, params, registry, c, window, pseudonymize)]
    if failed and len(failed) == len(clouds):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``recflow monitor``; 0 whatever the verdict, non-zero when it cannot monitor."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
