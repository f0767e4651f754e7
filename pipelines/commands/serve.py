"""Command ``recflow serve``: the inference server (not a stage: no DVC stage, no DAG task).

    RECFLOW_API_TOKENS=... RECFLOW_ADMIN_TOKEN=... RECFLOW_PSEUDONYM_KEY=... \\
        recflow serve --model models/candidate/optimized
    recflow serve --registry FOLDER --version v3 --workers 2 --port 8000
    recflow serve --cloud private --version 0123456789abcdef

The ``serve`` section of ``params.yaml`` holds every setting; the options here override the
address, the worker count and the server's folders (``pipelines.serving.server``). With
``--cloud`` the server loads versions from that cloud's store of the model registry, each file
verified against its sha256 (``pipelines.rollout.fleet``). ``--registry`` is a folder of served
versions (``pipelines.serving.server.sources.VersionFolder``), not a store of the model
registry: given a cloud's ``file:`` store folder, it is refused with the ``--cloud`` to use.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import Params, load_params


def _store_cloud(params: Params, root: Path, folder: Path) -> str | None:
    """The cloud whose ``file:`` store of the model registry is ``folder``, if one is."""
    from pipelines.registry.names import CLOUDS
    from pipelines.registry.stores.open import file_root

    for cloud in CLOUDS:
        url = getattr(params.stores, cloud).url
        if url.startswith("file:") and file_root(url, root).resolve() == folder.resolve():
            return cloud
    return None


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser("recflow serve", "Serve recommendations over HTTP.")
    parser.add_argument("--model", type=Path, default=None, help="an optimized folder to serve")
    parser.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="a folder of served versions (for a cloud's store: --cloud)",
    )
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
    root = args.params.resolve().parent
    if args.registry is not None:
        cloud = _store_cloud(params, root, args.registry)
        if cloud is not None:
            parser.error(
                f"{args.registry} is the {cloud} cloud's store of the model registry: "
                f"serve from it with --cloud {cloud} --version V"
            )
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
        serve(cfg, model=args.model, versions=args.registry, version=args.version)
        return 0
    from pipelines.registry.clouds import open_registry
    from pipelines.rollout.fleet.source import FACTORY, StoreSource, store_settings

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
