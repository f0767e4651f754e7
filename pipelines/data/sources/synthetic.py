"""The ``synthetic`` source: a folder with ``events.parquet`` and ``catalog.parquet``.

Both are in the canonical schema, as written by ``generate``; columns may come in another order
or with types that cast to the canonical ones (``large_string`` for ``string``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet
from pipelines.core.params import IngestConfig
from pipelines.core.schema import CATALOG_FILE, CATALOG_SCHEMA, EVENT_SCHEMA, EVENTS_FILE


def load_synthetic(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """A folder with ``events.parquet`` and ``catalog.parquet`` in the canonical schema."""
    tables = []
    for name, what, schema in (
        (EVENTS_FILE, "synthetic events", EVENT_SCHEMA),
        (CATALOG_FILE, "synthetic catalog", CATALOG_SCHEMA),
    ):
        file = path / name
        table = read_parquet(file, what, list(schema.names)).select(schema.names)
        if not table.schema.equals(schema):
            try:
                table = table.cast(schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise InputError(f"{file} does not match the canonical schema: {exc}") from exc
        tables.append(table)
    return tables[0], tables[1]
