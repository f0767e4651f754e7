"""The reference of a model version: its held-out requests, featurized once, kept with it.

The ``reference`` stage builds it from the prepare stage's held-out split, the same sessions a
replay sends, answered by the version's shipped artifact as the server answers them
(:func:`build_reference`). The folder (``models/candidate/monitoring/``) holds:

- ``reference.parquet``: the ``FEATURE_NAMES`` columns of at most ``monitor.reference_rows``
  requests (a seeded sample of the sessions);
- ``popularity.parquet``: per item id of the version, its occurrences in those histories
  (``count``) and its popularity bucket (``bucket``, from the item table the version was
  trained with): the :class:`~pipelines.monitoring.features.Profile`;
- ``reference.json`` (:class:`ReferenceManifest`, with its schema beside it): rows, features,
  bucket edges, the sha256 of both Parquet files, of the item table and of the prepared data.

It holds aggregate features of requests and item ids only, no user id and no raw event, and
travels with the version in the registry. :func:`load_reference` reads it back and refuses a
file whose bytes differ from the recorded sha256. Without a model, a prepare stage's folder is
a reference too (:func:`reference_from_prepared`), with the answer features absent.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa

from pipelines.core.contracts import Contract, read_contract, write_contract
from pipelines.core.errors import InputError
from pipelines.core.io import atomic_dir, read_parquet, sha256_file, write_parquet
from pipelines.core.params import FEATURE_NAMES
from pipelines.core.params.monitor import MonitorConfig
from pipelines.data.prepared import prepared_fingerprint
from pipelines.monitoring.features import (
    FEATURE_SCHEMA,
    ItemCounts,
    Profile,
    bucket_names,
    features_table,
    featurize,
    item_counts,
)
from pipelines.monitoring.requests import Predict, sessions_as_requests
from pipelines.serving.items import ITEMS_FILE, ItemTable, write_item_table

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("recflow.monitor")

REFERENCE_FILE = "reference.parquet"
POPULARITY_FILE = "popularity.parquet"
MANIFEST_FILE = "reference.json"
POPULARITY_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("count", pa.int64()),
        pa.field("bucket", pa.string()),
    ]
)
# the held-out split a replay sends and the reference is built from
SPLIT = "test"
_STAGE = "reference"


class ReferenceManifest(Contract):
    """``reference.json``: what a version's monitoring reference holds and how it was made."""

    schema_version: Literal[1]
    """Version of this layout."""
    rows: int
    """Featurized requests in ``reference.parquet``."""
    sessions: int
    """Held-out sessions of the split the rows were sampled from."""
    split: str
    """The prepare stage's split the sessions come from (``test``)."""
    seed: int
    """Seed of the sample of sessions."""
    predictions: bool
    """Whether the rows hold the model's answers (``top_*`` features); false for a reference
    made from a prepare stage's folder alone."""
    k: int | None
    """Items answered per request (None without predictions)."""
    artifact: str | None
    """The artifact that answered (None without predictions)."""
    features: tuple[str, ...]
    """The columns of ``reference.parquet``."""
    popularity_buckets: tuple[float, ...]
    """Cumulative interaction shares that end the popularity buckets b0, b1, ..."""
    categories: tuple[str, ...]
    """Categories of the version's items."""
    unknown_items: int
    """History items of the rows the version does not know (not in ``popularity.parquet``)."""
    files: dict[str, str]
    """sha256 of each Parquet file of the folder (empty for a reference kept in memory)."""
    items_sha256: str | None
    """sha256 of the version's ``items.parquet`` (None when built from a prepared folder)."""
    prepared_fingerprint: str
    """Which prepared data the sessions come from (``prepared_fingerprint``)."""


@dataclass(frozen=True, eq=False)
class Reference:
    """A reference in memory: its features, item counts and the popularity profile.

    Attributes:
        frame: The ``FEATURE_NAMES`` columns, one row per reference request.
        popularity: Occurrences of each item id in the reference histories.
        profile: The popularity bucket of each item of the version.
        manifest: What it holds and where it came from.
        source: The folder it was read from (a reference folder or a prepared folder).
    """

    frame: pd.DataFrame
    popularity: ItemCounts
    profile: Profile
    manifest: ReferenceManifest
    source: Path

    @property
    def has_predictions(self) -> bool:
        """Whether the reference holds the model's answers (the ``top_*`` features)."""
        return self.manifest.predictions


def _sessions(prepared: Path, split: str) -> int:
    path = prepared / f"{split}.parquet"
    rows = read_parquet(
        path, f"the prepared {split} split", ["target"], hint="(run the prepare stage first)"
    ).num_rows
    if rows == 0:
        raise InputError(f"{path} holds no held-out sessions to build a reference from")
    return rows


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    """Positions of at most ``limit`` of ``n`` sessions, a seeded sample in split order."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _popularity_table(profile: Profile, counts: ItemCounts) -> pa.Table:
    """Each item of ``profile`` with its reference occurrences and bucket, sorted by id."""
    ids = np.asarray(profile.item_ids.to_pylist(), dtype=object)
    order = np.argsort(ids.astype(str), kind="stable")
    ids = ids[order]
    counted = counts.as_dict()
    stray = sorted(set(counted) - set(ids.tolist()))
    if stray:  # a history item outside the version's table was counted as known
        raise InputError(f"reference histories hold items the item table lacks: {stray[:5]}")
    count = np.array([counted.get(i, 0) for i in ids.tolist()], dtype=np.int64)
    buckets = profile.buckets.take(pa.array(order))
    return pa.table(
        {"item_id": pa.array(ids.tolist(), pa.string()), "count": count, "bucket": buckets},
        schema=POPULARITY_SCHEMA,
    )


def _featurized(
    prepared: Path,
    items: ItemTable,
    cfg: MonitorConfig,
    seed: int,
    predict: Predict | None,
    k: int,
) -> tuple[pd.DataFrame, ItemCounts, Profile, int]:
    sessions = _sessions(prepared, SPLIT)
    rows = _sample(sessions, cfg.reference_rows, seed)
    requests = sessions_as_requests(
        prepared,
        SPLIT,
        items,
        predict,
        rows=rows,
        k=k,
    )
    profile = Profile.from_items(items, cfg.popularity_buckets)
    return featurize(requests, profile), item_counts(requests), profile, sessions


def _manifest(
    prepared: Path,
    frame: pd.DataFrame,
    counts: ItemCounts,
    profile: Profile,
    sessions: int,
    seed: int,
    *,
    k: int | None,
    artifact: str | None,
    files: dict[str, str],
    items_sha256: str | None,
) -> ReferenceManifest:
    """The manifest of a featurized reference; ``k`` and ``artifact`` None: no model answered."""
    return ReferenceManifest(
        schema_version=1,
        rows=len(frame),
        sessions=sessions,
        split=SPLIT,
        seed=seed,
        predictions=k is not None,
        k=k,
        artifact=artifact,
        features=FEATURE_NAMES,
        popularity_buckets=profile.edges,
        categories=profile.categories,
        unknown_items=counts.unknown,
        files=files,
        items_sha256=items_sha256,
        prepared_fingerprint=prepared_fingerprint(prepared),
    )


def build_reference(
    prepared: Path,
    optimized: Path,
    out: Path,
    cfg: MonitorConfig,
    seed: int,
    k: int,
    *,
    threads: int = 1,
) -> ReferenceManifest:
    """Build the reference of the version in ``optimized`` into the folder ``out``.

    The held-out ``test`` sessions (a seeded sample of at most ``cfg.reference_rows``) are
    sent as a replay sends them and answered with the top ``k`` items by the artifact the
    server would load from ``optimized`` (its shipped one where this machine runs it), with
    the item table beside it. The folder is replaced whole, or left as it was on failure.

    Args:
        prepared: The prepare stage's folder.
        optimized: The optimize stage's folder with ``items.parquet``.
        out: The reference folder (``models/candidate/monitoring``).
        cfg: The ``monitor`` section (rows, popularity buckets).
        seed: Seed of the sample of sessions.
        k: Items answered per request.
        threads: Intra-op threads of a CPU runtime.

    Returns:
        The manifest written as ``reference.json``.

    Raises:
        InputError: A prepared file or the item table is missing or inconsistent.
        ArtifactError: The artifact is missing, tampered with or fails.
    """
    from pipelines.serving.server.bundle import load_bundle

    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    bundle = load_bundle(_STAGE, optimized, threads=threads)
    width = min(k, bundle.items.n_items)

    def predict(histories: list[np.ndarray]) -> np.ndarray:
        return bundle.answer(bundle.recommender.pad(histories), width)[0]

    frame, counts, profile, sessions = _featurized(prepared, bundle.items, cfg, seed, predict, k)
    with atomic_dir(out) as tmp:
        write_parquet(tmp / REFERENCE_FILE, features_table(frame))
        write_parquet(tmp / POPULARITY_FILE, _popularity_table(profile, counts))
        manifest = _manifest(
            prepared,
            frame,
            counts,
            profile,
            sessions,
            seed,
            k=width,
            artifact=bundle.artifact,
            files={name: sha256_file(tmp / name) for name in (REFERENCE_FILE, POPULARITY_FILE)},
            items_sha256=sha256_file(optimized / ITEMS_FILE),
        )
        write_contract(tmp / MANIFEST_FILE, manifest)
    log.info(
        "reference of %s: %d of %d sessions answered by %s (k=%d)",
        optimized,
        len(frame),
        sessions,
        bundle.artifact,
        width,
    )
    return manifest


def _checked(folder: Path, manifest: ReferenceManifest, name: str) -> Path:
    path = folder / name
    recorded = manifest.files.get(name)
    if recorded is None:
        raise InputError(f"{folder / MANIFEST_FILE} records no sha256 of {name}")
    if not path.is_file():
        raise InputError(f"{path} not found (run the {_STAGE} stage again)")
    if sha256_file(path) != recorded:
        raise InputError(
            f"{path} does not match the sha256 recorded in {folder / MANIFEST_FILE}: "
            f"it changed after the reference was built (run the {_STAGE} stage again)"
        )
    return path


def load_reference(folder: Path) -> Reference:
    """Read a reference folder written by :func:`build_reference`, checking every file.

    Raises:
        InputError: ``reference.json`` is missing or invalid; a Parquet file is missing, does
            not match its recorded sha256 (naming the file), or has other columns or rows
            than the manifest says.
    """
    manifest = read_contract(
        folder / MANIFEST_FILE, ReferenceManifest, "monitoring reference", stage=_STAGE
    )
    features_path = _checked(folder, manifest, REFERENCE_FILE)
    popularity_path = _checked(folder, manifest, POPULARITY_FILE)
    features = read_parquet(features_path, "the reference features", require=FEATURE_NAMES)
    if features.num_rows != manifest.rows or features.schema != FEATURE_SCHEMA:
        raise InputError(
            f"{features_path} holds {features.num_rows} rows of {features.schema.names}, "
            f"its manifest says {manifest.rows} rows of {list(FEATURE_NAMES)}"
        )
    popularity = read_parquet(
        popularity_path, "the reference popularity", require=POPULARITY_SCHEMA.names
    )
    if popularity.schema != POPULARITY_SCHEMA:
        raise InputError(f"{popularity_path} is not of the schema {POPULARITY_SCHEMA}")
    known = set(bucket_names(manifest.popularity_buckets))
    found = set(popularity.column("bucket").unique().to_pylist())
    if not found <= known:
        raise InputError(f"{popularity_path} names buckets {sorted(found - known)}")
    profile = Profile(
        edges=tuple(manifest.popularity_buckets),
        item_ids=popularity.column("item_id").combine_chunks(),
        buckets=popularity.column("bucket").combine_chunks(),
        categories=tuple(manifest.categories),
    )
    count = popularity.column("count").to_numpy()
    seen = count > 0
    counts = ItemCounts(
        np.asarray(popularity.column("item_id").to_pylist(), dtype=object)[seen],
        count[seen].astype(np.int64),
        manifest.unknown_items,
    )
    return Reference(features.to_pandas(), counts, profile, manifest, folder)


def _prepared_items(prepared: Path) -> ItemTable:
    """The item table the optimize stage would write for ``prepared``."""
    n_items = read_parquet(
        prepared / "item_map.parquet",
        "the prepared item map",
        ["item_idx"],
        hint="(run the prepare stage first)",
    ).num_rows
    with tempfile.TemporaryDirectory(prefix="recflow-items-") as tmp:
        write_item_table(prepared, Path(tmp))
        return ItemTable.read(Path(tmp), n_items)


def reference_from_prepared(
    prepared: Path, items: ItemTable | None, cfg: MonitorConfig, *, seed: int = 0
) -> Reference:
    """A reference from a prepare stage's folder alone: its held-out requests, unanswered.

    The answer features (``top_*``) are absent ("none"); the drift of a window compares the
    history features only.

    Args:
        prepared: The prepare stage's folder.
        items: The item table whose items count as known (None: the one the prepared data
            gives, as the optimize stage would write it).
        cfg: The ``monitor`` section (rows, popularity buckets).
        seed: Seed of the sample of sessions.

    Raises:
        InputError: A prepared file is missing or inconsistent.
    """
    table = items if items is not None else _prepared_items(prepared)
    frame, counts, profile, sessions = _featurized(prepared, table, cfg, seed, None, 0)
    manifest = _manifest(
        prepared, frame, counts, profile, sessions, seed, k=None, artifact=None, files={},
        items_sha256=None,
    )  # fmt: skip
    return Reference(frame, counts, profile, manifest, prepared)
