"""The reference of a version: the held-out requests a replay sends, answered as serving answers
them, written with checksums, read back whole or refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InputError
from pipelines.core.params import FEATURE_NAMES, MonitorConfig
from pipelines.monitoring.features import PREDICTION_FEATURES, Profile, featurize, item_counts
from pipelines.monitoring.reference import (
    MANIFEST_FILE,
    POPULARITY_FILE,
    REFERENCE_FILE,
    build_reference,
    load_reference,
    reference_from_prepared,
)
from pipelines.monitoring.requests import REFERENCE_ARM, REQUEST_SCHEMA, sessions_as_requests
from pipelines.rollout.sessions import load_sessions
from pipelines.serving.items import ItemTable
from pipelines.serving.runtime import Recommender
from tests.monitoring.conftest import make_items

ROWS = 150  # fewer than the tiny preset's held-out sessions: the reference is a sample
CFG = MonitorConfig(reference_rows=ROWS)


def _prepared_items(prepared: Path, keep: slice = slice(None)) -> ItemTable:
    table = pq.read_table(prepared / "item_map.parquet").to_pandas().iloc[keep]
    return make_items(
        table["item_id"].astype(str).tolist(),
        table["category"].astype(str).tolist(),
        table["price"].astype(float).tolist(),
        table["count"].astype(int).tolist(),
    )


@pytest.fixture(scope="module")
def built(
    served_folder: Path, tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model's reference folder, built once for the module."""
    out = tmp_path_factory.mktemp("reference") / "monitoring"
    build_reference(tiny_prepared, served_folder, out, CFG, seed=7, k=5)
    return out


def test_session_requests_are_what_a_replay_sends(tiny_prepared: Path) -> None:
    items = _prepared_items(tiny_prepared)
    requests = sessions_as_requests(tiny_prepared, "test", items, None, max_history=12)
    assert requests.schema == REQUEST_SCHEMA
    held_out = load_sessions(tiny_prepared, "test", max_history=12)
    sent = {s.user_id: list(s.history) for s in held_out.sessions}
    rows = requests.to_pylist()
    assert len(rows) == len(sent) > ROWS
    assert {r["user"]: r["history_items"] for r in rows} == sent
    first = rows[0]
    assert first["history_categories"] == [
        items.categories[items.index[i]] for i in first["history_items"]
    ]
    assert all(r["items"] == [] and r["unknown_items"] == 0 for r in rows)
    assert {r["arm"] for r in rows} == {REFERENCE_ARM}


def test_session_requests_count_items_the_version_lacks_and_carry_answers(
    tiny_prepared: Path,
) -> None:
    whole = _prepared_items(tiny_prepared)
    half = _prepared_items(tiny_prepared, slice(0, whole.n_items // 2))
    asked: list[list[int]] = []

    def predict(histories: list[np.ndarray]) -> np.ndarray:
        asked.extend(h.tolist() for h in histories)
        return np.tile(np.array([3, 1, 2]), (len(histories), 1))

    rows = np.array([4, 0, 9])
    requests = sessions_as_requests(tiny_prepared, "test", half, predict, rows=rows, k=3)
    full = sessions_as_requests(tiny_prepared, "test", whole, None, rows=rows).to_pylist()
    for got, every in zip(requests.to_pylist(), full, strict=True):
        kept = [i for i in every["history_items"] if i in half.index]
        assert got["history_items"] == kept
        assert got["unknown_items"] == len(every["history_items"]) - len(kept)
        assert got["items"] == [half.ids[3], half.ids[1], half.ids[2]]
        assert got["item_categories"] == [half.categories[i] for i in (3, 1, 2)]
    assert asked == [[half.index[i] for i in r["history_items"]] for r in requests.to_pylist()]

    def wrong(histories: list[np.ndarray]) -> np.ndarray:
        return np.zeros((len(histories), 3), dtype=np.int64)

    with pytest.raises(InputError, match="outside"):
        sessions_as_requests(tiny_prepared, "test", half, wrong, rows=rows, k=3)


def test_reference_round_trip(built: Path, served_folder: Path, tiny_prepared: Path) -> None:
    reference = load_reference(built)
    manifest = reference.manifest
    assert manifest.rows == ROWS == len(reference.frame) < manifest.sessions
    assert manifest.predictions and reference.has_predictions and manifest.k == 5
    assert list(reference.frame.columns) == list(FEATURE_NAMES)
    assert (reference.frame["top_category"] != "none").all()

    # the same sample, featurized again with an independently opened runtime
    recommender = Recommender.load(served_folder)
    items = ItemTable.read(served_folder, recommender.n_items)
    profile = Profile.from_items(items, CFG.popularity_buckets)
    sample = np.sort(np.random.default_rng(7).choice(manifest.sessions, ROWS, replace=False))
    requests = sessions_as_requests(tiny_prepared, "test", items, None, rows=sample)
    histories = [
        [items.index[i] for i in row] for row in requests.column("history_items").to_pylist()
    ]
    top, _ = recommender.recommend(recommender.pad(histories))
    first = top[:, 0]
    expected = featurize(requests, profile)
    expected["top_category"] = items.categories[first].astype(object)
    expected["top_popularity"] = profile.bucket_of(items.ids[first].astype(str).tolist()).to_numpy(
        zero_copy_only=False
    )
    pd.testing.assert_frame_equal(reference.frame, expected)

    assert reference.popularity.as_dict() == {
        k: v for k, v in item_counts(requests).as_dict().items() if v
    }
    assert (
        reference.profile.buckets.to_pylist()
        == profile.bucket_of(reference.profile.item_ids).to_pylist()
    )
    assert set(reference.profile.item_ids.to_pylist()) == set(items.index)


def test_two_builds_give_the_same_bytes(
    built: Path, served_folder: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    again = tmp_path / "monitoring"
    build_reference(tiny_prepared, served_folder, again, CFG, seed=7, k=5)
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert {MANIFEST_FILE, REFERENCE_FILE, POPULARITY_FILE, "reference.schema.json"} == set(names)
    for name in names:
        assert (built / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other-seed"
    build_reference(tiny_prepared, served_folder, other, CFG, seed=8, k=5)
    assert (other / REFERENCE_FILE).read_bytes() != (built / REFERENCE_FILE).read_bytes()


@pytest.mark.parametrize("name", [REFERENCE_FILE, POPULARITY_FILE])
def test_a_tampered_file_is_refused_by_name(built: Path, tmp_path: Path, name: str) -> None:
    copy = tmp_path / "monitoring"
    copy.mkdir()
    for path in built.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    table = pq.read_table(copy / name)
    pq.write_table(table.slice(1), copy / name)  # a well-formed file, one row short
    with pytest.raises(InputError, match=f"{name} does not match the sha256"):
        load_reference(copy)
    (copy / name).unlink()
    with pytest.raises(InputError, match=f"{name} not found"):
        load_reference(copy)


def test_a_folder_without_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"reference\.json not found"):
        load_reference(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text('{"schema_version": 2}')
    with pytest.raises(InputError, match="schema version 2"):
        load_reference(tmp_path)


def test_reference_from_prepared_has_no_answers(built: Path, tiny_prepared: Path) -> None:
    reference = reference_from_prepared(tiny_prepared, None, CFG, seed=7)
    assert not reference.has_predictions and reference.manifest.files == {}
    frame = reference.frame
    assert len(frame) == ROWS
    for name in PREDICTION_FEATURES:
        assert (frame[name] == "none").all()
    # the same sessions and items as the model's reference: the same history features
    stored = load_reference(built)
    history = [n for n in FEATURE_NAMES if n not in PREDICTION_FEATURES]
    pd.testing.assert_frame_equal(frame[history], stored.frame[history])
    assert reference.popularity.as_dict() == stored.popularity.as_dict()
    assert reference.manifest.prepared_fingerprint == stored.manifest.prepared_fingerprint


def test_reference_from_an_empty_split_is_refused(tiny_prepared: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for path in tiny_prepared.iterdir():
        (prepared / path.name).write_bytes(path.read_bytes())
    test = pq.read_table(prepared / "test.parquet")
    pq.write_table(test.slice(0, 0), prepared / "test.parquet")
    with pytest.raises(InputError, match="no held-out sessions"):
        reference_from_prepared(prepared, None, CFG)
