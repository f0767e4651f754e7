"""Open a store from its section of ``params.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.core.params import RegistryConfig, StoreConfig
from pipelines.registry.errors import StoreUnreachable
from pipelines.registry.policy import CrossingPolicy
from pipelines.registry.stores.base import Store
from pipelines.registry.stores.credentials import endpoint_env, session_for
from pipelines.registry.stores.file import FileStore
from pipelines.registry.stores.s3 import S3Store


def file_root(url: str, root: Path) -> Path:
    """The folder of a ``file:`` URL; a relative one is relative to the project ``root``."""
    path = Path(url.removeprefix("file:").removeprefix("//"))
    return path if path.is_absolute() else root / path


def open_store(name: str, cfg: StoreConfig, registry: RegistryConfig, root: Path) -> Store:
    """The store ``name`` as ``cfg`` describes it. Nothing is contacted yet.

    Args:
        name: The cloud (``private``, ``public``) or ``backup``.
        cfg: Its section of ``stores``.
        registry: The ``registry`` section (crossing policy, transfers, retries).
        root: The project root, against which a relative ``file:`` URL is resolved.

    Raises:
        StoreUnreachable: The store is served by the loopback server, which is not running.
        AccessDenied: Its profile or Airflow connection does not exist.
    """
    policy = CrossingPolicy(registry.crossing)
    if cfg.url.startswith("file:"):
        return FileStore(
            name,
            cfg.role,
            file_root(cfg.url, root),
            policy,
            min_free_bytes=int(cfg.min_free_mb * 2**20),
        )
    session, endpoint = session_for(name, cfg)
    if cfg.loopback and not os.environ.get(endpoint_env(name)):
        raise StoreUnreachable(
            f"store {name!r} ({cfg.url}) is served by the loopback S3 server, which is not "
            f"running: run through `make run`, or `python -m pipelines.registry.loopback -- "
            f"<command>`, or set {endpoint_env(name)}"
        )
    return S3Store(name, cfg, registry, policy, session, endpoint)
