"""Command ``recflow replay``: held-out sessions replayed as users against a server.

    RECFLOW_API_TOKENS=... recflow replay --endpoint http://127.0.0.1:8000 \\
        --prepared data/prepared --rate 200 --concurrency 8 --requests 2000 --max-seconds 60

Sends each session's user id and history, paced at ``--rate`` with at most ``--concurrency`` in
flight, bounded by ``--requests`` and ``--max-seconds``, to loopback endpoints only, and reports
the hit rate of the true next items (beside the popularity fallback's on the same sessions),
errors and latency, per model version and arm (``pipelines.rollout.replay``). Defaults come from
``deploy.replay`` in ``params.yaml``; the client token from ``RECFLOW_API_TOKENS`` (the first).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.errors import InputError
from pipelines.core.logs import quiet_http_client
from pipelines.core.params import load_params
from pipelines.rollout.replay import ReplaySettings, replay
from pipelines.rollout.sessions import load_sessions
from pipelines.serving.server.auth import API_TOKENS_ENV


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow replay", "Replay held-out sessions against a server.")
    parser.add_argument(
        "--endpoint",
        action="append",
        required=True,
        help="a server's base URL on loopback (repeat for several: round-robin)",
    )
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", choices=("test", "valid"), default=None)
    parser.add_argument("--rate", type=float, default=None, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight")
    parser.add_argument("--requests", type=int, default=1000, help="requests at most")
    parser.add_argument("--max-seconds", type=float, default=None, help="seconds at most")
    parser.add_argument("--k", type=int, default=None, help="items asked for")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = params.deploy.replay
    token = next(
        (t.strip() for t in os.environ.get(API_TOKENS_ENV, "").split(",") if t.strip()), ""
    )
    if not token:
        raise InputError(f"{API_TOKENS_ENV} is not set: the replay needs a client token")
    settings = ReplaySettings(
        rate=args.rate if args.rate is not None else cfg.rate,
        concurrency=args.concurrency if args.concurrency is not None else cfg.concurrency,
        max_requests=args.requests,
        max_s=args.max_seconds if args.max_seconds is not None else cfg.max_s,
        k=args.k if args.k is not None else cfg.k,
        timeout_s=cfg.timeout_s,
    )
    held_out = load_sessions(args.prepared, args.split or cfg.split, seed=params.run.seed)
    report = replay(args.endpoint, held_out, token, settings).summary()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    latency = report["latency_ms"]
    print(
        f"{report['sent']} requests in {report['seconds']} s ({report['rate'] or 0:.0f}/s), "
        f"{report['answered']} answered; stopped by {report['stopped']}"
    )
    print(
        f"hit rate {report['hit_rate']:.4f} (popularity fallback "
        f"{report['popularity_hit_rate']:.4f} on the same sessions), k={settings.k}"
    )
    print(
        f"errors {100 * report['error_rate']:.2f}% {report['errors'] or ''}; latency p50 "
        f"{latency['p50'] or 0:.1f} ms, p99 {latency['p99'] or 0:.1f} ms"
    )
    for arm, tally in report["arms"].items():
        hit = tally["hits"] / max(tally["answered"], 1)
        print(
            f"  {arm}: {tally['answered']} answered, hit rate {hit:.4f}, "
            f"{tally['fallbacks']} fallbacks"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow replay`` / ``python -m pipelines.commands.replay``."""
    quiet_http_client()
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
