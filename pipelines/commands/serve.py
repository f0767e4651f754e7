"""Command ``recflow serve``: the inference server (not a stage: no DVC stage, no DAG task).

    RECFLOW_API_TOKENS=... RECFLOW_ADMIN_TOKEN=... RECFLOW_PSEUDONYM_KEY=... \\
        recflow serve --model models/candidate/optimized
    recflow serve --registry REGISTRY --version v3 --workers 2 --port 8000

The ``serve`` section of ``params.yaml`` holds every setting; the options here override the
address and the worker count (``pipelines.serving.server``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import load_params


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow serve", "Serve recommendations over HTTP.")
    parser.add_argument("--model", type=Path, default=None, help="an optimized folder to serve")
    parser.add_argument("--registry", type=Path, default=None, help="a registry folder")
    parser.add_argument("--version", default=None, help="version to serve (or name of --model)")
    parser.add_argument("--host", default=None, help="address to bind (default: serve.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: serve.port)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    args = parser.parse_args(argv)
    cfg = load_params(args.params).serve
    overrides = {
        key: value
        for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if value is not None
    }
    cfg = cfg.model_validate({**cfg.model_dump(), **overrides})
    # the server's modules (and prometheus_client) load only after the environment is set
    from pipelines.serving.server.launch import serve

    serve(cfg, model=args.model, registry=args.registry, version=args.version)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow serve`` / ``python -m pipelines.commands.serve``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
