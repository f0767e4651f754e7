"""Start the server: prepare the run folder, then uvicorn with one worker process per core.

The run folder holds the desired state every worker applies (``state``), the workers'
reports, the settings the workers read at start, and the Prometheus multiprocess files. The
tokens stay in the environment, which the workers inherit; no file holds them.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pipelines.core.errors import InputError
from pipelines.core.io import write_json
from pipelines.core.names import check_version_name
from pipelines.core.params import ServeConfig
from pipelines.serving.items import ItemTable
from pipelines.serving.manifest import read_manifest
from pipelines.serving.server import state as run_state
from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, API_TOKENS_ENV, Tokens
from pipelines.serving.server.pseudonyms import KeyedHash
from pipelines.serving.server.sources import ModelSource, VersionFolder
from pipelines.serving.server.state import MULTIPROC_ENV, RUN_DIR_ENV, SETTINGS

log = logging.getLogger("recflow.serve")

# the workers' application: a uvicorn factory that reads the run folder's settings
APP_FACTORY = "pipelines.serving.server.app:create_app"


def worker_count(cfg: ServeConfig) -> int:
    """``serve.workers``, or one per core this process may run on."""
    if cfg.workers is not None:
        return cfg.workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_model_folder(folder: Path) -> None:
    """Fail early, naming the problem, when ``folder`` cannot be served.

    Raises:
        InputError: No manifest, or no item table matching it.
    """
    if not folder.is_dir():
        raise InputError(f"model folder {folder} not found")
    manifest = read_manifest(folder)
    ItemTable.read(folder, manifest.n_items)


def prepare_run(
    cfg: ServeConfig,
    *,
    model: Path | None,
    versions: Path | None,
    version: str | None,
    workers: int,
    source: ModelSource | None = None,
    settings: dict[str, object] | None = None,
) -> run_state.DesiredState:
    """Check the tokens and the model, and lay out the run folder for a fresh server.

    Args:
        cfg: The ``serve`` section.
        model: An optimized folder served directly (no registry needed).
        versions: A version folder (:class:`VersionFolder`): the source of ``version`` and of
            admin loads (``recflow serve --registry``).
        version: The version to serve: its name in the version source, or the name given to
            ``model`` (default: ``local-`` and the start of its model's sha256).
        workers: Worker processes.
        source: Another source than a folder (the model registry's store of a cloud): the
            source of ``version``; the workers' application (see :func:`serve`) opens it again
            from ``settings``.
        settings: More settings for the workers' application.

    Raises:
        InputError: No client token, no pseudonymization key while the request log is on,
            neither or both of ``model`` and a version from a source, or a model that cannot
            serve.
    """
    tokens = Tokens.from_env()
    if not tokens.clients:
        raise InputError(f"{API_TOKENS_ENV} is not set: give at least one client token")
    if tokens.admin is None:
        log.warning("%s is not set: the admin API is disabled", ADMIN_TOKEN_ENV)
    if cfg.request_log.enabled:
        KeyedHash.from_env()
    run_dir = cfg.run_dir.resolve()
    for sub in ("workers", "metrics"):
        shutil.rmtree(run_dir / sub, ignore_errors=True)
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    if model is not None:
        if versions is not None and version is not None:
            raise InputError("give --model or a registry --version to serve, not both")
        check_model_folder(model)
        name = version or f"local-{read_manifest(model).model_sha256[:12]}"
        folder = model.resolve()
    elif (versions is not None or source is not None) and version is not None:
        name = check_version_name(version)
        if source is None:
            assert versions is not None
            source = VersionFolder(versions)
        folder = source.fetch(version, run_dir / "versions")
        check_model_folder(folder)
    else:
        raise InputError(
            "nothing to serve: give --model FOLDER, or a registry (--registry DIR or --cloud C) "
            "and --version V"
        )
    desired = run_state.DesiredState(
        generation=1, stable=check_version_name(name), versions={name: str(folder)}
    )
    run_state.write_initial(run_dir, desired)
    write_json(
        run_dir / SETTINGS,
        {
            "config": {**cfg.model_dump(mode="json"), "run_dir": str(run_dir)},
            "registry": str(versions.resolve()) if versions else None,
            "workers": workers,
            **(settings or {}),
        },
    )
    return desired


def serve(
    cfg: ServeConfig,
    *,
    model: Path | None = None,
    versions: Path | None = None,
    version: str | None = None,
    source: ModelSource | None = None,
    app_factory: str = APP_FACTORY,
    settings: dict[str, object] | None = None,
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM: in-flight requests finish first).

    ``source``, ``app_factory`` and ``settings`` serve from another source than a folder:
    the factory (``module:function``) builds each worker's application and its source of
    versions from the run folder's settings (see :func:`prepare_run`).
    """
    import uvicorn

    workers = worker_count(cfg)
    desired = prepare_run(
        cfg,
        model=model,
        versions=versions,
        version=version,
        workers=workers,
        source=source,
        settings=settings,
    )
    run_dir = cfg.run_dir.resolve()
    # before any worker imports prometheus_client: every worker writes its values there
    os.environ[MULTIPROC_ENV] = str(run_dir / "metrics")
    os.environ[RUN_DIR_ENV] = str(run_dir)
    log.info(
        "serving %s on http://%s:%d with %d worker(s)", desired.stable, cfg.host, cfg.port, workers
    )
    uvicorn.run(
        app_factory,
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=30,
        backlog=4096,
    )
