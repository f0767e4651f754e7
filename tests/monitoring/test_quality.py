"""Online quality: each request's next event found by hand-built cases (a hit, a miss, too late,
too early, none, a session's next item with no time), the figures per version and arm with their
Wilson intervals, the feedback read from events and from held-out sessions, and a model made
worse on purpose scoring lower than the real one on the same replayed traffic."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.core.errors import InputError
from pipelines.data.prepared import load_prepared
from pipelines.monitoring.quality import (
    FEEDBACK_SCHEMA,
    QualityFigure,
    feedback_from_events,
    feedback_from_sessions,
    online_quality,
    wilson_interval,
)
from pipelines.monitoring.traffic import read_request_log
from pipelines.serving.artifacts import optimize
from pipelines.serving.items import ItemTable, write_item_table
from pipelines.serving.runtime import Recommender
from pipelines.serving.server.pseudonyms import KeyedHash
from pipelines.serving.server.requestlog import RequestLog, Row
from tests.model.conftest import FAST_OPTIMIZE
from tests.monitoring.conftest import make_items, make_requests

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
HOUR = 3600.0


@pytest.fixture
def shop() -> ItemTable:
    return make_items(list("abcdefghijkl"), ["x"] * 12, [1.0] * 12, [1] * 12)


def _feedback(rows: Sequence[tuple[str, str, dt.datetime | None]]) -> pa.Table:
    users, items, times = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {"user": list(users), "item_id": list(items), "time": list(times)}, schema=FEEDBACK_SCHEMA
    )


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _one(figures: tuple[QualityFigure, ...]) -> QualityFigure:
    assert len(figures) == 1
    return figures[0]


def test_a_hit_a_miss_and_unknowns(shop: ItemTable) -> None:
    requests = make_requests(
        shop,
        [
            {"user": "hit", "time": _at(0), "answer": ["a", "b", "c"]},
            {"user": "miss", "time": _at(0), "answer": ["a", "b", "c"]},
            {"user": "beyond-k", "time": _at(0), "answer": ["a", "b", "c"]},
            {"user": "late", "time": _at(0), "answer": ["a", "b", "c"]},
            {"user": "silent", "time": _at(0), "answer": ["a", "b", "c"]},
        ],
    )
    feedback = _feedback(
        [
            ("hit", "b", _at(30)),
            ("miss", "d", _at(30)),
            ("beyond-k", "c", _at(30)),  # third served, k is 2
            ("late", "a", _at(HOUR + 1)),  # after the attribution window
            ("someone-else", "a", _at(30)),
        ]
    )
    figure = _one(online_quality(requests, feedback, window_s=HOUR, k=2, confidence=0.95))
    assert (figure.requests, figure.with_feedback, figure.hits) == (5, 3, 1)
    assert figure.hit_rate == pytest.approx(1 / 3)
    assert figure.no_feedback_share == pytest.approx(2 / 5)
    assert (figure.low, figure.high) == pytest.approx(wilson_interval(1, 3, 0.95))
    assert (figure.version, figure.arm, figure.k) == ("v1", "stable", 2)


def test_the_next_event_is_the_first_after_the_request(shop: ItemTable) -> None:
    requests = make_requests(
        shop,
        [
            {"user": "u", "time": _at(100), "answer": ["a"]},
            {"user": "u", "time": _at(200), "answer": ["b"]},
            {"user": "u", "time": _at(300), "answer": ["c"]},
            {"user": "same-time", "time": _at(100), "answer": ["a"]},
            {"user": "at-window-end", "time": _at(100), "answer": ["a"]},
        ],
    )
    feedback = _feedback(
        [
            ("u", "c", _at(350)),
            ("u", "a", _at(150)),  # feedback comes in any order
            ("u", "a", _at(50)),  # before every request: nobody's next event
            ("u", "c", _at(250)),
            ("same-time", "a", _at(100)),  # not after the request
            ("at-window-end", "a", _at(100 + HOUR)),  # the window's end is inside it
        ]
    )
    figures = online_quality(requests, feedback, window_s=HOUR, k=1, confidence=0.95)
    figure = _one(figures)
    # u@100 -> a@150 hit; u@200 -> c@250 miss; u@300 -> c@350 hit; same-time unknown
    assert (figure.requests, figure.with_feedback, figure.hits) == (5, 4, 3)


def test_a_session_next_item_without_a_time_follows_any_request(shop: ItemTable) -> None:
    requests = make_requests(
        shop,
        [
            {"user": "replayed", "time": _at(0), "answer": ["a", "b"]},
            {"user": "replayed", "time": _at(10 * HOUR), "answer": ["c"]},
            {"user": "both", "time": _at(0), "answer": ["a"]},
            {"user": "nothing", "time": _at(0), "answer": ["a"]},
        ],
    )
    feedback = _feedback(
        [
            ("replayed", "b", None),
            ("replayed", "c", None),  # only the first null-time row counts
            ("both", "d", None),
            ("both", "a", _at(60)),  # a timed next event in the window comes first
        ]
    )
    figure = _one(online_quality(requests, feedback, window_s=HOUR, k=2, confidence=0.9))
    # replayed@0 hit (b), replayed@10h miss (b not in [c]), both hit (a@60), nothing unknown
    assert (figure.requests, figure.with_feedback, figure.hits) == (4, 3, 2)
    assert figure.no_feedback_share == pytest.approx(0.25)
    assert figure.confidence == 0.9


def test_figures_per_version_and_arm(shop: ItemTable) -> None:
    rows = []
    for i in range(12):
        version, arm = ("v2", "canary") if i % 3 == 0 else ("v1", "stable")
        rows.append({"user": f"u{i}", "time": _at(i), "answer": ["a"], "version": version})
        rows[-1]["arm"] = arm
    rows.append({"user": "u-none", "time": _at(1), "answer": ["a"], "version": "v1"})
    rows[-1]["arm"] = "shadow"
    requests = make_requests(shop, rows)
    # every even user's next item is a (a hit), every odd one's b (a miss)
    feedback = _feedback([(f"u{i}", "a" if i % 2 == 0 else "b", _at(i + 5)) for i in range(12)])
    figures = online_quality(requests, feedback, window_s=HOUR, k=10, confidence=0.95)
    summary = [(f.version, f.arm, f.requests, f.with_feedback, f.hits) for f in figures]
    # canary: u0 u3 u6 u9 (hits u0 u6); stable: the other 8 (hits u2 u4 u8 u10)
    assert summary == [
        ("v1", "shadow", 1, 0, 0),
        ("v1", "stable", 8, 8, 4),
        ("v2", "canary", 4, 4, 2),
    ]
    shadow = figures[0]
    assert (shadow.hit_rate, shadow.low, shadow.high, shadow.no_feedback_share) == (0, 0, 1, 1)
    assert figures[1].to_json()["hit_rate"] == 0.5


def test_no_requests_no_figures_and_bad_tables(shop: ItemTable) -> None:
    empty = make_requests(shop, [])
    assert online_quality(empty, _feedback([]), window_s=HOUR, k=1, confidence=0.95) == ()
    requests = make_requests(shop, [{"user": "u", "answer": ["a"]}])
    with pytest.raises(InputError, match=r"the feedback lack the columns \['item_id'\]"):
        online_quality(
            requests, pa.table({"user": ["u"], "time": [T0]}), window_s=1, k=1, confidence=0.9
        )
    nothing = online_quality(requests, _feedback([]), window_s=HOUR, k=1, confidence=0.95)
    assert (nothing[0].requests, nothing[0].with_feedback, nothing[0].no_feedback_share) == (
        1,
        0,
        1.0,
    )


def test_wilson_interval_matches_known_values() -> None:
    assert wilson_interval(5, 10, 0.95) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10, 0.95) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10, 0.95) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(81, 263, 0.95) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)
    narrow, wide = wilson_interval(50, 100, 0.8), wilson_interval(50, 100, 0.99)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(3, 2, 0.95)


def test_feedback_from_events_pseudonymizes_each_user() -> None:
    hash_ = KeyedHash(b"a-key-of-sixteen-bytes")
    events = pa.table(
        {
            "user_id": ["u2", "u1", "u2"],
            "item_id": ["a", "b", "c"],
            "timestamp": pa.array([T0, _at(1.0015), _at(2)], pa.timestamp("us", tz="UTC")),
            "event_type": ["view", "view", "purchase"],
        }
    )
    feedback = feedback_from_events(events, hash_)
    assert feedback.schema == FEEDBACK_SCHEMA
    assert feedback.column("user").to_pylist() == [hash_("u2"), hash_("u1"), hash_("u2")]
    assert feedback.column("item_id").to_pylist() == ["a", "b", "c"]
    assert feedback.column("time").to_pylist()[1] == _at(1.001)  # to the millisecond
    with pytest.raises(InputError, match="timestamp"):
        feedback_from_events(events.drop_columns(["timestamp"]), hash_)


def test_feedback_from_sessions_is_each_users_true_next_item(tiny_prepared: Path) -> None:
    hash_ = KeyedHash(b"a-key-of-sixteen-bytes")
    feedback = feedback_from_sessions(tiny_prepared, "test", hash_)
    prepared = load_prepared(tiny_prepared)
    users = pq.read_table(tiny_prepared / "user_map.parquet").to_pydict()
    items = pq.read_table(tiny_prepared / "item_map.parquet").to_pydict()
    user_id = dict(zip(users["user_idx"], users["user_id"], strict=True))
    item_id = dict(zip(items["item_idx"], items["item_id"], strict=True))
    split = pq.read_table(tiny_prepared / "test.parquet").to_pydict()
    assert feedback.num_rows == len(prepared.test_target) > 0
    assert feedback.column("user").to_pylist() == [hash_(user_id[u]) for u in split["user_idx"]]
    assert feedback.column("item_id").to_pylist() == [item_id[t] for t in split["target"]]
    assert feedback.column("time").null_count == feedback.num_rows
    with pytest.raises(InputError, match="held-out split"):
        feedback_from_sessions(tiny_prepared, "train", hash_)
    with pytest.raises(InputError, match="not found"):
        feedback_from_sessions(tiny_prepared / "missing", "test", hash_)


def _worsened(model: Path, prepared: Path, out: Path) -> Path:
    """``model`` with its item embeddings shuffled among items, optimized like the real one."""
    checkpoint = torch.load(model, weights_only=False)
    weights = checkpoint["model"]["item_emb.weight"]
    order = torch.from_numpy(np.random.default_rng(7).permutation(weights.shape[0] - 1) + 1)
    weights[1:] = weights[order].clone()
    out.mkdir(parents=True)
    torch.save(checkpoint, out / "model.pt")
    optimize(FAST_OPTIMIZE, out / "model.pt", prepared, out / "optimized")
    write_item_table(prepared, out / "optimized")
    return out / "optimized"


def test_a_worsened_model_shows_a_lower_hit_rate_on_the_same_traffic(
    tiny_prepared: Path, tiny_model: Path, served_folder: Path, tmp_path: Path
) -> None:
    """The held-out sessions replayed to the real model (stable) and to a copy with shuffled
    item embeddings (canary), logged as a server logs them, read back and joined with the
    sessions' true next items: the worsened copy's interval lies wholly below the real one's."""
    worse = _worsened(tiny_model, tiny_prepared, tmp_path / "worse")
    prepared = load_prepared(tiny_prepared)
    users = pq.read_table(tiny_prepared / "user_map.parquet").to_pydict()
    user_id = dict(zip(users["user_idx"], users["user_id"], strict=True))
    split = pq.read_table(tiny_prepared / "test.parquet").column("user_idx").to_pylist()
    hash_ = KeyedHash(b"the-registry-pseudonym-key")
    log = RequestLog(tmp_path / "requests", window_s=3600.0, max_rows=10**6, worker="w0")
    rows: list[Row] = []
    served: dict[str, np.ndarray] = {}
    for arm, version, folder in (("stable", "v-real", served_folder), ("canary", "v-worse", worse)):
        recommender = Recommender.load(folder)
        table = ItemTable.read(folder, recommender.n_items)
        answers, _ = recommender.recommend(recommender.pad(prepared.test_history))
        served[arm] = np.asarray(answers)
        for i, (history, answer) in enumerate(zip(prepared.test_history, answers, strict=True)):
            rows.append(
                Row(
                    time=(T0 + dt.timedelta(seconds=i)).timestamp(),
                    user=hash_(user_id[split[i]]),
                    version=version,
                    arm=arm,
                    history=history[-100:],
                    items=answer,
                    table=table,
                    latency_ms=1.0,
                    fallback=False,
                    cache_hit=False,
                    unknown_items=0,
                )
            )
    log.write(rows[0].time, rows)
    traffic = read_request_log(tmp_path / "requests", T0, T0 + dt.timedelta(hours=1))
    assert traffic.table.num_rows == 2 * len(prepared.test_history)
    feedback = feedback_from_sessions(tiny_prepared, "test", hash_)
    stable, canary = online_quality(
        traffic.table, feedback, window_s=24 * HOUR, k=10, confidence=0.95
    )
    assert (stable.version, canary.version) == ("v-real", "v-worse")
    assert stable.with_feedback == canary.with_feedback == len(prepared.test_history)
    # the figures are the replay's own hit rates, counted here from the answers directly
    truth = prepared.test_target[:, None]
    assert stable.hits == int((served["stable"][:, :10] == truth).any(axis=1).sum())
    assert canary.hits == int((served["canary"][:, :10] == truth).any(axis=1).sum())
    assert canary.high < stable.low
    assert stable.hit_rate > 2 * canary.hit_rate
