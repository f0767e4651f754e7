"""Map event data sets to the canonical event and catalog schema (``pipelines.core.schema``).

One loader per source kind, each in its own module; ``load_source(kind, path, cfg)`` picks it:

``synthetic``
    A folder with ``events.parquet`` and ``catalog.parquet`` as written by ``generate``.
``recbole``
    RecBole atomic files: a ``.inter`` file (or a folder holding one), optional ``.item``.
``movielens``
    MovieLens ratings: ``u.data``, ``ratings.dat`` or ``ratings.csv``, with movie genres.
``retailrocket``
    RetailRocket ``events.csv``, with categories from ``item_properties*.csv``.
``table``
    Any CSV, TSV or Parquet file; ``cfg.column_map`` names its columns.

What a source lacks (prices, categories, brands, event types, sessions, event ids) is filled
in the same way for every kind, in ``pipelines.data.sources.canonical``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.params import IngestConfig
from pipelines.data.sources.movielens import load_movielens
from pipelines.data.sources.recbole import load_recbole
from pipelines.data.sources.retailrocket import load_retailrocket
from pipelines.data.sources.synthetic import load_synthetic
from pipelines.data.sources.table import load_table

log = logging.getLogger("recflow.loaders")

Loader = Callable[[Path, IngestConfig], tuple[pa.Table, pa.Table]]

LOADERS: dict[str, Loader] = {
    "synthetic": load_synthetic,
    "recbole": load_recbole,
    "movielens": load_movielens,
    "retailrocket": load_retailrocket,
    "table": load_table,
}


def load_source(kind: str, path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """Load a source of the given kind as canonical ``(events, catalog)`` tables.

    Args:
        kind: One of ``LOADERS`` (``synthetic``, ``recbole``, ``movielens``,
            ``retailrocket``, ``table``).
        path: The file or folder to read.
        cfg: Column mapping and defaults for what the source lacks.

    Returns:
        Events matching ``EVENT_SCHEMA`` (in no particular order) and a catalog matching
        ``CATALOG_SCHEMA`` with one row per item, sorted by ``item_id``.

    Raises:
        InputError: Unknown kind; missing, unreadable or malformed files; mapped columns
            that are not in the file; event types that cannot be mapped.
    """
    loader = LOADERS.get(kind)
    if loader is None:
        raise InputError(f"unknown source kind {kind!r}; known kinds: {', '.join(LOADERS)}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{kind} source {path} does not exist")
    events, catalog = loader(path, cfg)
    log.info(
        "loaded %d events and %d catalog items from %s (%s)",
        events.num_rows,
        catalog.num_rows,
        path,
        kind,
    )
    return events, catalog
