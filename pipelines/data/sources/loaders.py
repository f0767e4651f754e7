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

``open_source(kind, path, cfg)`` gives the same events as an ``EventSource`` read a batch at a
time: from disk for ``synthetic`` (large: never held whole), from memory for the others.
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
from pipelines.data.sources.stream import EventSource, in_memory
from pipelines.data.sources.synthetic import load_synthetic, open_synthetic
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


# Sources read from disk a batch at a time; the others are loaded whole.
OPENERS: dict[str, Callable[[Path, IngestConfig], EventSource]] = {"synthetic": open_synthetic}


def _loader(kind: str, path: Path) -> Loader:
    loader = LOADERS.get(kind)
    if loader is None:
        raise InputError(f"unknown source kind {kind!r}; known kinds: {', '.join(LOADERS)}")
    if not path.exists():
        raise InputError(f"{kind} source {path} does not exist")
    return loader


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
    path = Path(path)
    events, catalog = _loader(kind, path)(path, cfg)
    log.info(
        "loaded %d events and %d catalog items from %s (%s)",
        events.num_rows,
        catalog.num_rows,
        path,
        kind,
    )
    return events, catalog


def open_source(kind: str, path: Path, cfg: IngestConfig) -> EventSource:
    """Open a source of the given kind for reading its canonical events a batch at a time.

    The same events and catalog as :func:`load_source`, in the same row order; a ``synthetic``
    folder's events stay on disk until read.

    Raises:
        InputError: As :func:`load_source`; a ``synthetic`` events file whose batches do not
            cast to the canonical types fails when those batches are read.
    """
    path = Path(path)
    loader = _loader(kind, path)
    opener = OPENERS.get(kind)
    if opener is None:
        events, catalog = loader(path, cfg)
        source = in_memory(events, catalog, f"{kind} source {path}")
    else:
        source = opener(path, cfg)
    log.info(
        "opened %d events and %d catalog items from %s (%s)",
        source.rows,
        source.catalog.num_rows,
        path,
        kind,
    )
    return source
