"""The ``table`` source: any CSV, TSV or Parquet file of events.

``cfg.column_map`` maps canonical column names (and ``brand``) to the file's names. Only
``user_id``, ``item_id`` and ``timestamp`` are required.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.io import read_parquet
from pipelines.core.params import IngestConfig
from pipelines.core.schema import EVENT_COLUMNS
from pipelines.data.sources.canonical import REQUIRED, parse_timestamps, read_csv, to_canonical

TABLE_COLUMNS = (*EVENT_COLUMNS, "brand")


def load_table(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """A CSV, TSV or Parquet file with columns named as in ``cfg.column_map``.

    Numeric timestamps are taken as Unix seconds, milliseconds or microseconds by their
    magnitude; strings are parsed as date-times (UTC unless they carry an offset).
    """
    unknown = sorted(set(cfg.column_map) - set(TABLE_COLUMNS))
    if unknown:
        raise InputError(
            f"ingest.column_map has unknown canonical columns {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(TABLE_COLUMNS)}"
        )
    if not path.is_file():
        raise InputError(f"table source {path} is not a file")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        raw = read_parquet(path, "table source").to_pandas()
    elif suffix in {".csv", ".tsv", ".txt"}:
        raw = read_csv(path, "table", sep="\t" if suffix == ".tsv" else ",", dtype=str)
    else:
        raise InputError(
            f"table source {path}: unsupported file type {suffix!r} (csv, tsv, parquet)"
        )

    mapped_missing = sorted(
        f"{canonical} -> {source!r}"
        for canonical, source in cfg.column_map.items()
        if source not in raw
    )
    if mapped_missing:
        raise InputError(
            f"{path}: mapped columns not in the file: {', '.join(mapped_missing)} "
            f"(columns: {', '.join(map(str, raw.columns))})"
        )
    columns = {
        c: cfg.column_map.get(c, c) for c in TABLE_COLUMNS if cfg.column_map.get(c, c) in raw
    }
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(
            f"{path} has no column {', '.join(map(repr, missing))}; map it with ingest.column_map "
            f"(columns: {', '.join(map(str, raw.columns))})"
        )
    events = pd.DataFrame({c: raw[source] for c, source in columns.items() if c != "brand"})
    events["timestamp"] = parse_timestamps(raw[columns["timestamp"]], path)
    items = None
    if "brand" in columns:
        items = pd.DataFrame({"item_id": raw[columns["item_id"]], "brand": raw[columns["brand"]]})
        for column in ("category", "price"):
            if column in columns:
                items[column] = raw[columns[column]]
        items = (
            items.assign(_t=events["timestamp"]).sort_values("_t", kind="stable").drop(columns="_t")
        )
    return to_canonical(events, items, cfg, path)
