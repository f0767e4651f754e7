"""Command ``recflow serve``: the inference server (not a stage: no DVC stage, no DAG task).

    RECFLOW_API_TOKENS=... RECFLOW_ADMIN_TOKEN=... RECFLOW_PSEUDONYM_KEY=... \\
        recflow serve --model models/candidate/optimized
    recflow serve --registry REGISTRY --version v3 --workers 2 --port 8000
    recflow serve --cloud public --version 0123456789abcdef

The ``serve`` section of ``params.yaml`` holds every setting; the options here override the
address, the worker count and the server's folders (``pipelines.serving.server``). With
``--cloud`` the server loads versions from that cloud's store of the model registry, each file
verified against its sha256 (``pipelines.rollout.fleet``).
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
    parser.add_argument(
        "--cloud",
        choices=("private", "public"),
        default=None,
        help="serve versions from this cloud's store of the model registry",
    )
    parser.add_argument("--version", default=None, help="version to serve (or name of --model)")
    parser.add_argument("--host", default=None, help="address to bind (default: serve.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: serve.port)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: serve.run_dir")
    parser.add_argument(
        "--request-log-dir", type=Path, default=None, help="default: serve.request_log.dir"
    )
    args = parser.parse_args(argv)
    if args.cloud is not None and (args.registry is not None or args.model is not None):
        parser.error("--cloud serves from the model registry: give no --registry or --model")
    params = load_params(args.params)
    cfg = params.serve
    overrides = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("workers", args.workers),
            ("run_dir", args.run_dir),
        )
        if value is not None
    }
    values = {**cfg.model_dump(), **overrides}
    if args.request_log_dir is not None:
        values["request_log"] = {**values["request_log"], "dir": args.request_log_dir}
    cfg = cfg.model_validate(values)
    # the server's modules (and prometheus_client) load only after the environment is set
    from pipelines.serving.server.launch import serve

    if args.cloud is None:
        serve(cfg, model=args.model, registry=args.registry, version=args.version)
        return 0
    from pipelines.registry.clouds import open_registry
    from pipelines.rollout.fleet.source import FACTORY, StoreSource, store_settings

    root = args.params.resolve().parent
    store = open_registry(params, root).store(args.cloud)
    serve(
        cfg,
        version=args.version,
        source=StoreSource(store),
        app_factory=FACTORY,
        settings=store_settings(args.params, root, args.cloud),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``recflow serve`` / ``python -m pipelines.commands.serve``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
