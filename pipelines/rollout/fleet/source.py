"""The model registry's store of one cloud as a server's source of versions.

A server asks its source to *fetch version V into a local folder, every object verified*
(:class:`pipelines.serving.server.sources.ModelSource`). :class:`StoreSource` reads the version's
marker from the cloud's store and downloads the files under ``optimized/`` (the artifacts, their
manifest and the item table: what a server loads), each checked against the sha256 the marker
records. A fleet of the public cloud is given the public store: it never reads the private one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.core.io import atomic_dir, sha256_file
from pipelines.core.names import check_version_name
from pipelines.core.params import load_params
from pipelines.registry.clouds import open_registry
from pipelines.registry.errors import RegistryError, UnknownVersion
from pipelines.registry.names import file_key
from pipelines.registry.stores.base import Store
from pipelines.registry.versions import Version, read_version
from pipelines.serving.server.sources import SourceError

log = logging.getLogger("recflow.rollout.source")

# the part of a version a server loads (the optimize stage's folder with its item table)
SERVED = "optimized/"
# the workers' application of a server whose source is a store (a string: importing the app
# here would load prometheus_client before the launcher sets its multiprocess folder)
FACTORY = "pipelines.rollout.fleet.app:create_app"


def served_files(version: Version) -> list[tuple[str, str]]:
    """``(path under optimized/, sha256)`` of each file a server needs from ``version``."""
    return [
        (item.path.removeprefix(SERVED), item.sha256)
        for item in version.files
        if item.path.startswith(SERVED)
    ]


class StoreSource:
    """Versions from one cloud's registry store, verified file by file.

    Args:
        store: The cloud's store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def fetch(self, version: str, into: Path) -> Path:
        """The served folder of ``version`` at ``into/<version>`` (reused when still intact).

        Raises:
            BadVersionName: The version is badly named.
            SourceError: The version is not in this store (the message says "not in the
                registry", which the admin API answers with 404), has nothing to serve, or an
                object is missing or fails its sha256 (nothing is left in ``into``).
        """
        check_version_name(version)
        try:
            marker = read_version(self.store, version)
        except UnknownVersion as exc:
            raise SourceError(
                f"version {version} is not in the registry (store {self.store.name!r})"
            ) from exc
        except RegistryError as exc:
            raise SourceError(f"version {version}: {exc}") from exc
        files = served_files(marker)
        if not any(path == "manifest.json" for path, _ in files):
            raise SourceError(f"version {version} has no {SERVED}manifest.json: nothing to serve")
        target = into / version
        if target.is_dir() and all(
            (target / path).is_file() and sha256_file(target / path) == sha256
            for path, sha256 in files
        ):
            return target
        try:
            with atomic_dir(target) as folder:
                for path, sha256 in files:
                    self.store.download(file_key(version, SERVED + path), folder / path, sha256)
        except RegistryError as exc:
            raise SourceError(f"version {version} refused: {exc}") from exc
        log.info("version %s fetched from %r and verified", version, self.store.name)
        return target


def store_settings(params: Path, root: Path, cloud: str) -> dict[str, Any]:
    """The run folder's settings that name the store a server loads versions from."""
    return {"store": {"params": str(params.resolve()), "root": str(root.resolve()), "cloud": cloud}}


def open_source(settings: dict[str, Any]) -> StoreSource:
    """The store the settings name (see :func:`store_settings`)."""
    where = settings["store"]
    params = load_params(Path(where["params"]))
    registry = open_registry(params, Path(where["root"]))
    return StoreSource(registry.store(str(where["cloud"])))
