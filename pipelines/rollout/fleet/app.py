"""The application of a fleet server's workers: the inference server with one cloud's registry
store as its source of versions.

``recflow serve --cloud C`` starts uvicorn with :func:`create_app` as its factory (named by
``pipelines.rollout.fleet.source.FACTORY``: this module loads prometheus_client, which must not
happen before the launcher set its multiprocess folder); the run folder's settings name the params
file, the project root and the cloud, from which each worker opens the cloud's store
(:class:`~pipelines.rollout.fleet.source.StoreSource`). The pseudonymization key of the
request log comes from the environment (``RECFLOW_PSEUDONYM_KEY``): a local fleet gets the
private store's key from the controller, a Kubernetes pod from a Secret; a server never reads
another cloud's store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from starlette.applications import Starlette

from pipelines.core.params import ServeConfig
from pipelines.rollout.fleet.source import open_source
from pipelines.serving.server.app import build_app
from pipelines.serving.server.auth import Tokens
from pipelines.serving.server.pseudonyms import KeyedHash
from pipelines.serving.server.state import RUN_DIR_ENV, SETTINGS


def create_app() -> Starlette:
    """One worker's application, from the run folder the launcher prepared (uvicorn factory)."""
    run_dir = Path(os.environ[RUN_DIR_ENV])
    settings = json.loads((run_dir / SETTINGS).read_text(encoding="utf-8"))
    cfg = ServeConfig.model_validate(settings["config"])
    return build_app(
        cfg,
        run_dir,
        Tokens.from_env(),
        source=open_source(settings),
        pseudonymize=KeyedHash.from_env() if cfg.request_log.enabled else None,
        workers=int(settings.get("workers", 1)),
    )
