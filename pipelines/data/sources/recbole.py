"""The ``recbole`` source: RecBole atomic files.

A ``.inter`` file (or a folder holding exactly one), tab-separated, with a ``name:type`` header
such as ``user_id:token  item_id:token  rating:float  timestamp:float`` (Unix seconds). An
``.item`` file with the same stem beside it gives the catalog: the first token of
``category``/``categories``/``class``/``genre`` is the category; ``brand`` and ``price`` are
used when present.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.params import IngestConfig
from pipelines.data.sources.canonical import (
    REQUIRED,
    epoch_timestamps,
    read_csv,
    require_columns,
    to_canonical,
)

RECBOLE_CATEGORY_FIELDS = ("category", "categories", "class", "genre", "genres")


def _recbole_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not header:
        raise InputError(f"{path} is empty")
    fields = header.split("\t")
    if not all(":" in field for field in fields):
        raise InputError(f"{path}: header must be tab-separated name:type fields, got {header!r}")
    return [field.split(":", 1)[0] for field in fields]


def _read_recbole(path: Path) -> pd.DataFrame:
    names = _recbole_header(path)
    return read_csv(
        path,
        "RecBole file",
        sep="\t",
        header=0,
        names=names,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        quoting=csv.QUOTE_NONE,
    )


def load_recbole(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """RecBole atomic files: ``.inter`` (events) and optional ``.item`` (catalog).

    Field names default to ``user_id``, ``item_id`` and ``timestamp``; ``cfg.column_map``
    can name others. Ratings become ``view`` events.
    """
    if path.is_dir():
        found = sorted(path.glob("*.inter"))
        if len(found) != 1:
            raise InputError(
                f"RecBole folder {path} must hold exactly one .inter file, found {len(found)}"
            )
        path = found[0]
    elif path.suffix != ".inter":
        raise InputError(f"RecBole source {path} is not a .inter file")
    inter = _read_recbole(path)
    inter = inter.rename(columns={v: k for k, v in cfg.column_map.items()})
    require_columns(inter, REQUIRED, path)
    events = inter[list(REQUIRED)].copy()
    events["timestamp"] = epoch_timestamps(inter["timestamp"], "s", path)

    items = None
    item_file = path.with_suffix(".item")
    if item_file.is_file():
        raw = _read_recbole(item_file).rename(columns={v: k for k, v in cfg.column_map.items()})
        require_columns(raw, ("item_id",), item_file)
        items = pd.DataFrame({"item_id": raw["item_id"]})
        field = next((f for f in RECBOLE_CATEGORY_FIELDS if f in raw), None)
        if field is not None:
            # token_seq fields are space-separated; the first token is the main category
            first = raw[field].str.split(" ", n=1).str[0].str.strip("'\"[],")
            items["category"] = first.where(first.str.len() > 0)
        if "brand" in raw:
            items["brand"] = raw["brand"]
        if "price" in raw:
            items["price"] = pd.to_numeric(raw["price"], errors="coerce")
    return to_canonical(events, items, cfg, path)
