"""The ``movielens`` source: MovieLens ratings, each rating a ``view``.

``u.data`` (ML-100K: tab-separated user, item, rating, Unix seconds), ``ratings.dat``
(ML-1M/10M: ``::``-separated) or ``ratings.csv`` (ml-latest), as a file or in a folder;
``u.item``, ``movies.dat`` or ``movies.csv`` beside it give each movie's first genre as its
category.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
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


def _movielens_items(folder: Path) -> pd.DataFrame | None:
    if (folder / "u.item").is_file():
        genres = list(MOVIELENS_GENRES)
        if (folder / "u.genre").is_file():
            listed = read_csv(
                folder / "u.genre",
                "genre list",
                sep="|",
                header=None,
                dtype=str,
                encoding="latin-1",
            )
            genres = listed[0].tolist()
        raw = read_csv(
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
        raw = read_csv(folder / "movies.csv", "movie list", dtype=str).rename(
            columns={"movieId": "item_id"}
        )
        require_columns(raw, ("item_id", "genres"), folder / "movies.csv")
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
        ratings = read_csv(path, "MovieLens ratings", dtype=str).rename(
            columns={"userId": "user_id", "movieId": "item_id"}
        )
        require_columns(ratings, REQUIRED, path)
    else:
        ratings = read_csv(path, "MovieLens ratings", sep="\t", header=None, names=names, dtype=str)
        if ratings["timestamp"].isna().any():
            raise InputError(
                f"cannot parse MovieLens ratings {path}: expected 4 tab-separated fields"
            )
    events = ratings[["user_id", "item_id"]].copy()
    events["timestamp"] = epoch_timestamps(ratings["timestamp"], "s", path)
    return to_canonical(events, _movielens_items(path.parent), cfg, path)
