"""What every loader shares: reading CSV, parsing timestamps, and the canonical tables.

Ratings data sets have no funnel: every rating becomes a ``view`` at its timestamp. What a
source lacks is filled in the same way everywhere: price ``cfg.default_price``, category
``cfg.default_category``, brand ``unknown``, event type ``view``; sessions are cut where a
user is inactive for 30 minutes; event ids are ``e`` + the row's position in the source
file, so they stay put when a file grows at the end. The catalog has every item of the
events, taken from the item file where there is one, else from the events themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.errors import InputError
from pipelines.core.params import IngestConfig
from pipelines.core.schema import CATALOG_COLUMNS, CATALOG_SCHEMA, EVENT_COLUMNS, EVENT_SCHEMA

SESSION_GAP = np.timedelta64(30, "m")
UNKNOWN_BRAND = "unknown"
REQUIRED = ("user_id", "item_id", "timestamp")

# What public data sets call the three event types.
EVENT_TYPE_NAMES: dict[str, str] = {
    **dict.fromkeys(("view", "views", "click", "pageview", "page_view", "detail"), "view"),
    **dict.fromkeys(
        ("add_to_cart", "addtocart", "add-to-cart", "cart", "add_to_basket", "basket"),
        "add_to_cart",
    ),
    **dict.fromkeys(("purchase", "transaction", "buy", "order", "checkout"), "purchase"),
}


# ---------------------------------------------------------------- reading files


def read_csv(path: Path, what: str, **kwargs: object) -> pd.DataFrame:
    """``pandas.read_csv`` with every failure turned into an ``InputError`` naming the file."""
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty")
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{what} {path} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise InputError(f"cannot parse {what} {path}: {exc}") from exc


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    """Raise an ``InputError`` naming ``path`` and the absent columns if ``frame`` lacks any."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path} has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )


def epoch_timestamps(values: pd.Series, unit: str, path: Path) -> pd.Series:
    """Numbers since the Unix epoch in ``unit`` as UTC timestamps."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        raise InputError(
            f"{path}: {int(bad.sum())} timestamps are not numbers, e.g. {values[bad].iloc[0]!r}"
        )
    try:
        return pd.to_datetime(numbers, unit=unit, utc=True)
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise InputError(f"{path}: timestamps out of range: {exc}") from exc


def _guess_epoch_unit(numbers: pd.Series) -> str:
    """Seconds, milliseconds or microseconds, from the magnitude of recent-era values."""
    largest = float(numbers.abs().max()) if len(numbers) else 0.0
    if largest >= 1e14:
        return "us"
    if largest >= 1e11:
        return "ms"
    return "s"


def parse_timestamps(values: pd.Series, path: Path) -> pd.Series:
    """Timestamps from datetimes, epoch numbers (unit guessed) or date-time strings, in UTC."""
    if pd.api.types.is_datetime64_any_dtype(values):
        series = pd.Series(values)
        return series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() == values.notna().sum():
        return epoch_timestamps(values, _guess_epoch_unit(numbers), path)
    try:
        return pd.to_datetime(values, utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{path}: cannot parse timestamps: {exc}") from exc


# ---------------------------------------------------------------- canonical tables


def _normalise_event_types(values: pd.Series, path: Path) -> pd.Series:
    names = values.astype(str).str.strip().str.lower()
    mapped = names.map(EVENT_TYPE_NAMES)
    unknown = names[mapped.isna()].unique()
    if len(unknown):
        shown = ", ".join(repr(v) for v in sorted(unknown)[:5])
        raise InputError(
            f"{path}: unknown event types {shown}; expected one of "
            f"{', '.join(sorted(set(EVENT_TYPE_NAMES)))}"
        )
    return mapped


def _derive_sessions(events: pd.DataFrame) -> pd.Series:
    """Session ids ``<user>#<n>``: a user's n-th run of events without a 30-minute pause."""
    ordered = events.sort_values(["user_id", "timestamp", "_row"], kind="stable")
    user = ordered["user_id"].to_numpy()
    time = ordered["timestamp"].dt.tz_convert(None).to_numpy()
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = (user[1:] != user[:-1]) | ((time[1:] - time[:-1]) > SESSION_GAP)
    number = np.cumsum(starts)
    first_of_user = np.ones(len(ordered), dtype=bool)
    first_of_user[1:] = user[1:] != user[:-1]
    base = np.maximum.accumulate(np.where(first_of_user, number, 0))
    ordinal = pd.Series(number - base, index=ordered.index).astype(str)
    return (ordered["user_id"] + "#" + ordinal).reindex(events.index)


def _catalog(events: pd.DataFrame, items: pd.DataFrame | None, cfg: IngestConfig) -> pd.DataFrame:
    """One row per item of the events (and of ``items``): category, brand and price."""
    if items is not None:
        items = items.dropna(subset=["item_id"]).drop_duplicates("item_id", keep="last")
    from_events = (
        events.sort_values(["timestamp", "_row"], kind="stable")
        .drop_duplicates("item_id", keep="last")
        .reindex(columns=["item_id", "category", "price"])
    )
    from_events["brand"] = UNKNOWN_BRAND
    if items is not None:
        extra = from_events[~from_events["item_id"].isin(items["item_id"])]
        catalog = pd.concat(
            [items.reindex(columns=list(CATALOG_COLUMNS)), extra], ignore_index=True
        )
    else:
        catalog = from_events.reindex(columns=list(CATALOG_COLUMNS))
    catalog["category"] = catalog["category"].fillna(cfg.default_category).astype(str)
    catalog["brand"] = catalog["brand"].fillna(UNKNOWN_BRAND).astype(str)
    catalog["price"] = pd.to_numeric(catalog["price"], errors="coerce").fillna(cfg.default_price)
    catalog.loc[catalog["category"].str.strip() == "", "category"] = cfg.default_category
    return catalog.sort_values("item_id", kind="stable").reset_index(drop=True)


def to_canonical(
    events: pd.DataFrame, items: pd.DataFrame | None, cfg: IngestConfig, path: Path
) -> tuple[pa.Table, pa.Table]:
    """Fill in what a source lacks and convert to the canonical Arrow tables.

    ``events`` has ``user_id``, ``item_id``, ``timestamp`` (UTC) and any of ``event_id``,
    ``session_id``, ``event_type``, ``price``, ``category``; ``items`` has ``item_id`` and any
    of ``category``, ``brand``, ``price``.
    """
    events = events.reset_index(drop=True)
    for column in REQUIRED:
        missing = events[column].isna()
        if missing.any():
            raise InputError(f"{path}: {int(missing.sum())} events have no {column}")
    events["_row"] = np.arange(len(events))
    for column in ("user_id", "item_id"):
        events[column] = events[column].astype(str).str.strip()
    if items is not None:
        items = items.assign(item_id=items["item_id"].astype(str).str.strip())

    if "event_type" in events:
        events["event_type"] = _normalise_event_types(events["event_type"], path)
    else:
        events["event_type"] = "view"
    catalog = _catalog(events, items, cfg)
    by_item = catalog.set_index("item_id")
    for column in ("category", "price"):
        own = events[column] if column in events else pd.Series(np.nan, index=events.index)
        if column == "price":
            own = pd.to_numeric(own, errors="coerce")
        events[column] = own.where(own.notna(), events["item_id"].map(by_item[column]))
    events["category"] = events["category"].astype(str)
    if "session_id" in events and events["session_id"].notna().all():
        events["session_id"] = events["session_id"].astype(str)
    else:
        events["session_id"] = _derive_sessions(events)
    if "event_id" in events and events["event_id"].notna().all():
        events["event_id"] = events["event_id"].astype(str)
    else:
        width = max(9, len(str(len(events))))
        events["event_id"] = "e" + events["_row"].astype(str).str.zfill(width)
    events["timestamp"] = events["timestamp"].astype("datetime64[us, UTC]")
    events["price"] = events["price"].astype("float64")
    try:
        event_table = pa.Table.from_pandas(
            events[list(EVENT_COLUMNS)], schema=EVENT_SCHEMA, preserve_index=False
        )
        catalog_table = pa.Table.from_pandas(
            catalog[list(CATALOG_COLUMNS)], schema=CATALOG_SCHEMA, preserve_index=False
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise InputError(f"{path}: cannot convert to the event schema: {exc}") from exc
    return event_table, catalog_table
