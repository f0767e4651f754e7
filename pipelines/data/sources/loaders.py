"""Map event data sets to the canonical event and catalog schema (``pipelines.core.schema``).

One loader per source kind; ``load_source(kind, path, cfg)`` picks it:

``synthetic``
    A folder with ``events.parquet`` and ``catalog.parquet`` as written by ``generate``.
``recbole``
    RecBole atomic files: a ``.inter`` file (or a folder holding exactly one), tab-separated,
    with a ``name:type`` header such as ``user_id:token  item_id:token  rating:float
    timestamp:float`` (Unix seconds). An ``.item`` file with the same stem beside it gives
    the catalog: the first token of ``category``/``categories``/``class``/``genre`` is the
    category; ``brand`` and ``price`` are used when present.
``movielens``
    ``u.data`` (ML-100K: tab-separated user, item, rating, Unix seconds), ``ratings.dat``
    (ML-1M/10M: ``::``-separated) or ``ratings.csv`` (ml-latest), as a file or in a folder;
    ``u.item``, ``movies.dat`` or ``movies.csv`` beside it give each movie's first genre as
    its category.
``retailrocket``
    ``events.csv`` (``timestamp`` in ms, ``visitorid``, ``event``, ``itemid``,
    ``transactionid``); ``view``/``addtocart``/``transaction`` become ``view``/
    ``add_to_cart``/``purchase``. The last ``categoryid`` in ``item_properties*.csv`` beside
    it, if any, is an item's category.
``table``
    Any CSV, TSV or Parquet file; ``cfg.column_map`` maps canonical column names (and
    ``brand``) to the file's names. Only ``user_id``, ``item_id`` and ``timestamp`` are
    required.

Ratings data sets have no funnel: every rating becomes a ``view`` at its timestamp. What a
source lacks is filled in the same way everywhere: price ``cfg.default_price``, category
``cfg.default_category``, brand ``unknown``, event type ``view``; sessions are cut where a
user is inactive for 30 minutes; event ids are ``e`` + the row's position in the source
file, so they stay put when a file grows at the end. The catalog has every item of the
events, taken from the item file where there is one, else from the events themselves.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import InputError
from pipelines.core.params import IngestConfig
from pipelines.core.schema import (
    CATALOG_COLUMNS,
    CATALOG_FILE,
    CATALOG_SCHEMA,
    EVENT_COLUMNS,
    EVENT_SCHEMA,
    EVENTS_FILE,
)

log = logging.getLogger("recflow.loaders")

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

MOVIELENS_RATINGS = ("u.data", "ratings.dat", "ratings.csv")
MOVIELENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
RECBOLE_CATEGORY_FIELDS = ("category", "categories", "class", "genre", "genres")

Loader = Callable[[Path, IngestConfig], tuple[pa.Table, pa.Table]]


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


# ---------------------------------------------------------------- reading files


def _read_csv(path: Path, what: str, **kwargs: object) -> pd.DataFrame:
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


def _require(frame: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path} has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )


def _epoch(values: pd.Series, unit: str, path: Path) -> pd.Series:
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


def _parse_timestamps(values: pd.Series, path: Path) -> pd.Series:
    """Timestamps from datetimes, epoch numbers (unit guessed) or date-time strings, in UTC."""
    if pd.api.types.is_datetime64_any_dtype(values):
        series = pd.Series(values)
        return series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() == values.notna().sum():
        return _epoch(values, _guess_epoch_unit(numbers), path)
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


def _canonical(
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


# ---------------------------------------------------------------- one loader per kind


def load_synthetic(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """A folder with ``events.parquet`` and ``catalog.parquet`` in the canonical schema."""
    parts = ((EVENTS_FILE, EVENT_SCHEMA), (CATALOG_FILE, CATALOG_SCHEMA))
    for name, _ in parts:
        if not (path / name).is_file():
            raise InputError(f"synthetic source {path} has no {name}")
    tables = []
    for name, schema in parts:
        file = path / name
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {file}: {exc}") from exc
        missing = [c for c in schema.names if c not in table.column_names]
        if missing:
            raise InputError(f"{file} has no column {', '.join(map(repr, missing))}")
        table = table.select(schema.names)
        if not table.schema.equals(schema):
            try:
                table = table.cast(schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise InputError(f"{file} does not match the canonical schema: {exc}") from exc
        tables.append(table)
    return tables[0], tables[1]


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
    return _read_csv(
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
    _require(inter, REQUIRED, path)
    events = inter[list(REQUIRED)].copy()
    events["timestamp"] = _epoch(inter["timestamp"], "s", path)

    items = None
    item_file = path.with_suffix(".item")
    if item_file.is_file():
        raw = _read_recbole(item_file).rename(columns={v: k for k, v in cfg.column_map.items()})
        _require(raw, ("item_id",), item_file)
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
    return _canonical(events, items, cfg, path)


def _movielens_items(folder: Path) -> pd.DataFrame | None:
    if (folder / "u.item").is_file():
        genres = list(MOVIELENS_GENRES)
        if (folder / "u.genre").is_file():
            listed = _read_csv(
                folder / "u.genre",
                "genre list",
                sep="|",
                header=None,
                dtype=str,
                encoding="latin-1",
            )
            genres = listed[0].tolist()
        raw = _read_csv(
            folder / "u.item", "movie list", sep="|", header=None, dtype=str, encoding="latin-1"
        )
        flags = raw.iloc[:, 5 : 5 + len(genres)]
        if flags.shape[1] != len(genres):
            raise InputError(
                f"{folder / 'u.item'}: expected {len(genres)} genre columns, got {flags.shape[1]}"
            )
        marked = flags.to_numpy() == "1"
        first = np.where(marked.any(axis=1), marked.argmax(axis=1), -1)
        category = [genres[i] if i >= 0 else None for i in first]
        return pd.DataFrame({"item_id": raw[0], "category": category})
    if (folder / "movies.dat").is_file():
        raw = _read_double_colon(
            folder / "movies.dat", "movie list", ["item_id", "title", "genres"]
        )
    elif (folder / "movies.csv").is_file():
        raw = _read_csv(folder / "movies.csv", "movie list", dtype=str).rename(
            columns={"movieId": "item_id"}
        )
        _require(raw, ("item_id", "genres"), folder / "movies.csv")
    else:
        return None
    first = raw["genres"].str.split("|", n=1).str[0]
    first = first.where(first != "(no genres listed)")
    return pd.DataFrame({"item_id": raw["item_id"], "category": first})


def _read_double_colon(path: Path, what: str, names: list[str]) -> pd.DataFrame:
    """MovieLens ``::``-separated files, read by the fast C parser after a separator swap."""
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from exc
    if not text.strip():
        raise InputError(f"{what} {path} is empty")
    try:
        frame = pd.read_csv(
            io.StringIO(text.replace("::", "\t")),
            sep="\t",
            header=None,
            names=names,
            dtype=str,
            quoting=csv.QUOTE_NONE,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"cannot parse {what} {path}: {exc}") from exc
    if frame.iloc[:, -1].isna().any():
        raise InputError(f"cannot parse {what} {path}: expected {len(names)} '::'-separated fields")
    return frame


def load_movielens(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """MovieLens ratings (``u.data``, ``ratings.dat`` or ``ratings.csv``); ratings become views."""
    if path.is_dir():
        found = next((path / n for n in MOVIELENS_RATINGS if (path / n).is_file()), None)
        if found is None:
            raise InputError(f"MovieLens folder {path} has none of {', '.join(MOVIELENS_RATINGS)}")
        path = found
    names = ["user_id", "item_id", "rating", "timestamp"]
    if path.name == "ratings.dat":
        ratings = _read_double_colon(path, "MovieLens ratings", names)
    elif path.suffix == ".csv":
        ratings = _read_csv(path, "MovieLens ratings", dtype=str).rename(
            columns={"userId": "user_id", "movieId": "item_id"}
        )
        _require(ratings, REQUIRED, path)
    else:
        ratings = _read_csv(
            path, "MovieLens ratings", sep="\t", header=None, names=names, dtype=str
        )
        if ratings["timestamp"].isna().any():
            raise InputError(
                f"cannot parse MovieLens ratings {path}: expected 4 tab-separated fields"
            )
    events = ratings[["user_id", "item_id"]].copy()
    events["timestamp"] = _epoch(ratings["timestamp"], "s", path)
    return _canonical(events, _movielens_items(path.parent), cfg, path)


def _retailrocket_categories(folder: Path) -> pd.DataFrame | None:
    """Each item's latest ``categoryid`` from the ``item_properties*.csv`` files, if any."""
    files = sorted(folder.glob("item_properties*.csv"))
    if not files:
        return None
    parts = []
    for file in files:
        if file.stat().st_size == 0:
            raise InputError(f"item properties {file} is empty")
        # the real files hold ~20M rows of which few are categories: filter chunk by chunk
        try:
            with pd.read_csv(file, dtype=str, chunksize=1_000_000) as reader:
                for chunk in reader:
                    _require(chunk, ("timestamp", "itemid", "property", "value"), file)
                    parts.append(chunk[chunk["property"] == "categoryid"])
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
            raise InputError(f"cannot parse item properties {file}: {exc}") from exc
    found = pd.concat(parts, ignore_index=True)
    found["timestamp"] = pd.to_numeric(found["timestamp"], errors="coerce")
    latest = found.sort_values(["timestamp"], kind="stable").drop_duplicates("itemid", keep="last")
    return pd.DataFrame({"item_id": latest["itemid"], "category": latest["value"]})


def load_retailrocket(path: Path, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """RetailRocket ``events.csv``: views, add-to-carts and transactions of visitors."""
    if path.is_dir():
        path = path / "events.csv"
    raw = _read_csv(path, "RetailRocket events", dtype=str)
    _require(raw, ("timestamp", "visitorid", "event", "itemid"), path)
    events = pd.DataFrame(
        {
            "user_id": raw["visitorid"],
            "item_id": raw["itemid"],
            "timestamp": _epoch(raw["timestamp"], "ms", path),
            "event_type": raw["event"],
        }
    )
    return _canonical(events, _retailrocket_categories(path.parent), cfg, path)


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
        try:
            raw = pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read Parquet file {path}: {exc}") from exc
    elif suffix in {".csv", ".tsv", ".txt"}:
        raw = _read_csv(path, "table", sep="\t" if suffix == ".tsv" else ",", dtype=str)
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
    events["timestamp"] = _parse_timestamps(raw[columns["timestamp"]], path)
    items = None
    if "brand" in columns:
        items = pd.DataFrame({"item_id": raw[columns["item_id"]], "brand": raw[columns["brand"]]})
        for column in ("category", "price"):
            if column in columns:
                items[column] = raw[columns[column]]
        items = (
            items.assign(_t=events["timestamp"]).sort_values("_t", kind="stable").drop(columns="_t")
        )
    return _canonical(events, items, cfg, path)


LOADERS: dict[str, Loader] = {
    "synthetic": load_synthetic,
    "recbole": load_recbole,
    "movielens": load_movielens,
    "retailrocket": load_retailrocket,
    "table": load_table,
}
