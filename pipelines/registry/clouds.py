"""The registry's clouds: one store per cloud, one of them the registry of record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.params import Params, RegistryConfig, StoresConfig
from pipelines.registry.names import CLOUDS, check_cloud
from pipelines.registry.stores.base import Store
from pipelines.registry.stores.open import open_store


@dataclass
class Registry:
    """The stores of both clouds, opened on first use, and the registry's settings.

    Attributes:
        stores: The ``stores`` section.
        cfg: The ``registry`` section.
        root: The project root (relative ``file:`` stores and the cache live under it).
    """

    stores: StoresConfig
    cfg: RegistryConfig
    root: Path
    opened: dict[str, Store] = field(default_factory=dict)

    def store(self, cloud: str) -> Store:
        """The store of ``cloud``.

        Raises:
            BadName: ``cloud`` is not a cloud.
        """
        check_cloud(cloud)
        if cloud not in self.opened:
            self.opened[cloud] = open_store(cloud, getattr(self.stores, cloud), self.cfg, self.root)
        return self.opened[cloud]

    @property
    def record_cloud(self) -> str:
        """The cloud whose store is the registry of record (it holds the ledger)."""
        return next(c for c in CLOUDS if getattr(self.stores, c).role == "record")

    @property
    def record(self) -> Store:
        """The store of record."""
        return self.store(self.record_cloud)

    @property
    def replica_clouds(self) -> list[str]:
        """The clouds that receive replicas."""
        return [c for c in CLOUDS if getattr(self.stores, c).role == "replica"]


def open_registry(params: Params, root: Path) -> Registry:
    """The registry ``params`` describes, for the project at ``root``."""
    return Registry(params.stores, params.registry, root)
