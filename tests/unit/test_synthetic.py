"""The synthetic clickstream generator and the ``generate`` stage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import pipelines.core.io
from pipelines.core.io import sha256_file, write_parquet
from pipelines.core.params import DriftConfig, GenerateConfig, RunConfig
from pipelines.core.schema import CATALOG_SCHEMA, EVENT_SCHEMA, EVENT_TYPES
from pipelines.data.synthetic.alias import alias_tables
from pipelines.data.synthetic.generator import generate
from pipelines.data.synthetic.presets import PRESETS, SyntheticPreset
from pipelines.data.synthetic.simulation import EPOCH, US_PER_DAY, simulate_day
from pipelines.data.synthetic.tables import simulate, synthesize
from pipelines.stages.generate import main

END = dt.date(2026, 11, 22)
DAYS = 35
TINY = PRESETS["tiny"]


def _make(seed: int = 7, drift: DriftConfig | None = None, **kwargs: object) -> pd.DataFrame:
    events, _ = synthesize(
        TINY,
        seed=seed,
        end_date=kwargs.get("end_date", END),  # type: ignore[arg-type]
        days=kwargs.get("days", DAYS),  # type: ignore[arg-type]
        drift=drift or DriftConfig(),
    )
    return events.to_pandas()


@pytest.fixture(scope="module")
def tiny() -> tuple[pa.Table, pa.Table]:
    return synthesize(TINY, seed=7, end_date=END, days=DAYS, drift=DriftConfig())


@pytest.fixture(scope="module")
def events(tiny: tuple[pa.Table, pa.Table]) -> pd.DataFrame:
    return tiny[0].to_pandas()


@pytest.fixture(scope="module")
def views(events: pd.DataFrame) -> pd.DataFrame:
    return events[events["event_type"] == "view"]


def test_schemas_match_exactly(tiny: tuple[pa.Table, pa.Table]) -> None:
    events, catalog = tiny
    assert events.schema.equals(EVENT_SCHEMA)
    assert catalog.schema.equals(CATALOG_SCHEMA)
    assert events.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")


def test_tiny_preset_is_small() -> None:
    # its speed is measured in benchmarks/bench_generator.py, not here
    events, catalog = synthesize(TINY, seed=3, end_date=END, days=DAYS, drift=DriftConfig())
    assert 10_000 <= events.num_rows <= 20_000
    assert catalog.num_rows == TINY.n_items


def test_default_preset_size() -> None:
    events, catalog = synthesize(
        PRESETS["default"], seed=42, end_date=END, days=DAYS, drift=DriftConfig()
    )
    assert 400_000 <= events.num_rows <= 600_000
    assert catalog.num_rows == PRESETS["default"].n_items


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    digests = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        events, catalog = synthesize(TINY, seed=seed, end_date=END, days=10, drift=DriftConfig())
        write_parquet(tmp_path / f"{name}-events.parquet", events)
        write_parquet(tmp_path / f"{name}-catalog.parquet", catalog)
        digests.append(
            (
                sha256_file(tmp_path / f"{name}-events.parquet"),
                sha256_file(tmp_path / f"{name}-catalog.parquet"),
            )
        )
    assert digests[0] == digests[1]
    assert digests[0][0] != digests[2][0]
    assert digests[0][1] != digests[2][1]


def _content_sha256(table: pa.Table) -> str:
    """sha256 of a table's column names, types and values, not of how Parquet lays them out."""
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns, strict=True):
        digest.update(f"{name}:{column.type}\n".encode())
        if pa.types.is_string(column.type):
            digest.update("\n".join(column.to_pylist()).encode())
        else:
            values = column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column
            digest.update(values.to_numpy().tobytes())
    return digest.hexdigest()


def test_tiny_preset_content_is_pinned(tiny: tuple[pa.Table, pa.Table]) -> None:
    # A change here changes every synthetic data set drawn from a seed (and the recorded DVC
    # outputs): if it is meant, say so in the commit and update the digests.
    events, catalog = tiny
    assert events.num_rows == 14_945
    assert _content_sha256(events) == (
        "ce44cacb0c3a13aa6e26144bd7d7174a19bf16896ba65a09308785664af060b0"
    )
    assert _content_sha256(catalog) == (
        "40e6ec47065fc48ea645dc399150c566a616fc5b15e0cdb1dcc7e0e3d7a58744"
    )


def test_ids_formats_and_uniqueness(events: pd.DataFrame) -> None:
    assert events["event_id"].is_unique
    assert events["event_id"].str.fullmatch(r"e\d{8}-\d{8}").all()
    assert events["user_id"].str.fullmatch(r"u\d{6}").all()
    assert events["item_id"].str.fullmatch(r"i\d{5}").all()
    assert events["session_id"].str.fullmatch(r"s\d{8}-\d{7}").all()
    # a session belongs to one user
    assert (events.groupby("session_id")["user_id"].nunique() == 1).all()


def test_only_the_three_event_types(events: pd.DataFrame) -> None:
    assert set(events["event_type"]) == set(EVENT_TYPES)
    shares = events["event_type"].value_counts(normalize=True)
    assert shares["view"] > shares["add_to_cart"] > shares["purchase"] > 0


def test_funnel_follows_a_view_of_the_same_item_in_the_session(events: pd.DataFrame) -> None:
    first_view = (
        events[events["event_type"] == "view"]
        .groupby(["session_id", "item_id"])["timestamp"]
        .min()
        .rename("first_view")
    )
    first_cart = (
        events[events["event_type"] == "add_to_cart"]
        .groupby(["session_id", "item_id"])["timestamp"]
        .min()
        .rename("first_cart")
    )
    later = events[events["event_type"] != "view"].join(first_view, on=["session_id", "item_id"])
    assert later["first_view"].notna().all()
    assert (later["timestamp"] > later["first_view"]).all()
    bought = events[events["event_type"] == "purchase"].join(
        first_cart, on=["session_id", "item_id"]
    )
    assert len(bought) > 0
    assert (bought["timestamp"] > bought["first_cart"]).all()


def test_timestamps_inside_the_window_and_sorted(events: pd.DataFrame) -> None:
    first = pd.Timestamp(END - dt.timedelta(days=DAYS - 1), tz="UTC")
    after_end = pd.Timestamp(END + dt.timedelta(days=1), tz="UTC")
    assert events["timestamp"].min() >= first
    assert events["timestamp"].max() < after_end
    assert events["timestamp"].dt.date.nunique() == DAYS
    key = list(zip(events["timestamp"], events["event_id"], strict=True))
    assert key == sorted(key)


def test_daily_and_weekly_seasonality() -> None:
    events = synthesize(PRESETS["default"], seed=5, end_date=END, days=28, drift=DriftConfig())[
        0
    ].to_pandas()
    hours = np.bincount(events["timestamp"].dt.hour, minlength=24)
    assert hours[18:22].mean() > 3 * hours[2:5].mean()
    weekdays = np.bincount(events["timestamp"].dt.weekday, minlength=7)
    assert weekdays[5] > 1.1 * weekdays[1]


def test_item_popularity_is_zipf_like(views: pd.DataFrame) -> None:
    counts = views["item_id"].value_counts()
    top = counts.iloc[: TINY.n_items // 10].sum() / len(views)
    assert top > 0.35  # uniform popularity would give 0.10


def test_users_concentrate_on_few_categories(views: pd.DataFrame) -> None:
    per_user = views.groupby(["user_id", "category"]).size()
    top_share = per_user.groupby(level=0).max() / per_user.groupby(level=0).sum()
    assert top_share.mean() > 0.6  # spread over 8 categories by popularity would be ~0.3


def test_prices_positive_and_consistent_with_catalog(tiny: tuple[pa.Table, pa.Table]) -> None:
    events, catalog = (t.to_pandas() for t in tiny)
    assert (catalog["price"] > 0).all()
    assert catalog["item_id"].is_unique
    joined = events.merge(catalog, on="item_id", suffixes=("", "_catalog"))
    assert len(joined) == len(events)
    assert (joined["price"] == joined["price_catalog"]).all()
    assert (joined["category"] == joined["category_catalog"]).all()
    # log-normal per category: prices spread within a category, and categories differ
    spread = catalog.groupby("category")["price"].agg(["min", "max", "median"])
    assert (spread["max"] > spread["min"]).all()
    assert spread["median"].nunique() > 1


def _consecutive_views(views: pd.DataFrame) -> pd.DataFrame:
    ordered = views.sort_values(["session_id", "timestamp", "event_id"])
    following = ordered.groupby("session_id")["item_id"].shift(-1)
    pairs = pd.DataFrame(
        {"prev": ordered["item_id"], "next": following, "timestamp": ordered["timestamp"]}
    )
    return pairs.dropna()


def test_order_of_views_carries_signal_beyond_popularity(views: pd.DataFrame) -> None:
    pairs = _consecutive_views(views)
    cut = pairs["timestamp"].quantile(0.5)
    train, test = pairs[pairs["timestamp"] < cut], pairs[pairs["timestamp"] >= cut]
    transitions = (
        train.groupby(["prev", "next"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["prev", "n", "next"], ascending=[True, False, True])
        .groupby("prev")
        .head(3)
    )
    learned = test.merge(transitions[["prev", "next"]], on=["prev", "next"], how="inner")
    hit_learned = len(learned) / len(test)
    top3 = set(train["next"].value_counts().index[:3])
    hit_popular = test["next"].isin(top3).mean()
    assert hit_learned > 0.4
    assert hit_learned > 2.5 * hit_popular


def _top_item_share(views: pd.DataFrame) -> float:
    """Mean share of an active user's views that go to their three most viewed items."""
    counts = views.groupby(["user_id", "item_id"]).size()
    per_user = counts.groupby(level=0)
    top = per_user.apply(lambda c: c.nlargest(3).sum()) / per_user.sum()
    return float(top[per_user.sum() >= 20].mean())


def test_staples_bring_users_back_to_their_own_items() -> None:
    stapled = dataclasses.replace(TINY, staples_per_user=3, staple_prob=0.25)
    events, _ = synthesize(stapled, seed=7, end_date=END, days=DAYS, drift=DriftConfig())
    frame = events.to_pandas()
    with_staples = _top_item_share(frame[frame["event_type"] == "view"])
    plain = _top_item_share(_make()[lambda f: f["event_type"] == "view"])
    # about 0.48 against 0.38: a quarter of the views go to three items of the user's own
    assert with_staples > plain + 0.06
    # the default preset has them; the other presets keep their traffic as it was
    assert PRESETS["default"].staple_prob > 0 and PRESETS["default"].staples_per_user > 0
    assert PRESETS["tiny"].staple_prob == 0 and PRESETS["large"].staple_prob == 0
    assert PRESETS["default"].mission_session_prob > 0 and PRESETS["default"].missions > 0
    assert PRESETS["tiny"].missions == 0 and PRESETS["large"].missions == 0


def test_history_does_not_change_when_the_window_moves_on() -> None:
    earlier = _make(end_date=END, days=12)
    later = _make(end_date=END + dt.timedelta(days=3), days=15)
    cut = pd.Timestamp(END + dt.timedelta(days=1), tz="UTC")
    overlap = later[later["timestamp"] < cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(earlier, overlap)


def test_price_inflation_changes_prices_only() -> None:
    reference = _make(days=10)
    inflated = _make(days=10, drift=DriftConfig(price_inflation=0.25))
    pd.testing.assert_frame_equal(reference.drop(columns="price"), inflated.drop(columns="price"))
    ratio = inflated["price"] / reference["price"]
    assert ratio.between(1.25 - 0.01 / reference["price"].min(), 1.26).all()
    assert abs(ratio.median() - 1.25) < 0.01


def test_category_shift_moves_traffic_to_rare_categories() -> None:
    reference = _make(days=14)
    shifted = _make(days=14, drift=DriftConfig(category_shift=0.8))
    by_traffic = reference["category"].value_counts()
    rare = set(by_traffic.index[len(by_traffic) // 2 :])
    before = reference["category"].isin(rare).mean()
    after = shifted["category"].isin(rare).mean()
    assert after > 2 * before


def test_new_items_appear_and_take_traffic() -> None:
    _, reference_catalog = synthesize(TINY, seed=7, end_date=END, days=14, drift=DriftConfig())
    events, catalog = synthesize(
        TINY, seed=7, end_date=END, days=14, drift=DriftConfig(new_item_share=0.2)
    )
    known = set(reference_catalog.column("item_id").to_pylist())
    new = set(catalog.column("item_id").to_pylist()) - known
    assert len(new) == round(0.2 * TINY.n_items)
    share = pd.Series(events.column("item_id").to_pylist()).isin(new).mean()
    assert share > 0.05
    # the reference items keep their attributes
    kept = catalog.to_pandas().set_index("item_id").loc[sorted(known)]
    pd.testing.assert_frame_equal(kept, reference_catalog.to_pandas().set_index("item_id"))


def test_popularity_shift_reshuffles_the_popular_items() -> None:
    reference = _make(days=14)["item_id"].value_counts()
    other_days = _make(end_date=END - dt.timedelta(days=14), days=14)["item_id"].value_counts()
    shifted = _make(days=14, drift=DriftConfig(popularity_shift=1.0))["item_id"].value_counts()
    counts = pd.concat([reference, other_days, shifted], axis=1).fillna(0)
    rank_correlation = counts.corr(method="spearman").to_numpy()
    # the same shop on other days ranks its items alike; a reshuffled shop does not
    assert rank_correlation[0, 1] > 0.8
    assert rank_correlation[0, 2] < 0.65


def test_alias_tables_give_the_exact_distribution() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), [1, 2, 7, 30, 200])
    weights = rng.random(len(groups)) ** 3 + 1e-6
    outcomes = np.arange(len(groups)) + 100
    tables = alias_tables(weights, groups, outcomes)
    for group in range(5):
        slots = slice(tables.first[group], tables.first[group] + tables.count[group])
        probability = np.zeros(outcomes.max() + 1)
        np.add.at(probability, tables.own[slots], tables.prob[slots])
        np.add.at(probability, tables.alias[slots], 1 - tables.prob[slots])
        members = groups == group
        expected = np.zeros_like(probability)
        expected[outcomes[members]] = weights[members] / weights[members].sum()
        np.testing.assert_allclose(probability / tables.count[group], expected, atol=1e-12)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="days must be at least 1"):
        synthesize(TINY, seed=1, end_date=END, days=0, drift=DriftConfig())
    with pytest.raises(ValueError, match=r"staple_prob must be in \[0, 1\)"):
        dataclasses.replace(TINY, staples_per_user=2, staple_prob=1.0)
    with pytest.raises(ValueError, match="needs staples_per_user of at least 1"):
        dataclasses.replace(TINY, staple_prob=0.2)
    with pytest.raises(ValueError, match=r"mission_size in \[2, n_items\]"):
        dataclasses.replace(TINY, missions=3, mission_size=1)
    with pytest.raises(ValueError, match=r"mission_view_prob must be in \[0, 1\]"):
        dataclasses.replace(TINY, missions=3, mission_session_prob=0.5, mission_view_prob=1.5)
    with pytest.raises(ValueError, match="needs missions and mission_view_prob > 0"):
        dataclasses.replace(TINY, mission_session_prob=0.5, mission_view_prob=0.5)
    with pytest.raises(ValueError, match="at least 3 items per category"):
        SyntheticPreset(
            n_users=10,
            n_items=5,
            n_categories=2,
            n_brands=2,
            sessions_per_user_mean=1,
            session_length_mean=2,
        )


# ---------------------------------------------------------------- a day at a time


def _stable_sort_of_all_days(preset: SyntheticPreset, seed: int, days: int) -> pd.DataFrame:
    """The window's event ids and times as one stable sort of every simulated day at once."""
    first = END - dt.timedelta(days=days - 1)
    simulated = [first + dt.timedelta(days=i) for i in range(-1, days)]
    shop = simulate(preset, seed=seed, end_date=END, days=days, drift=DriftConfig()).shop
    frames = []
    for day in simulated:
        stamps = simulate_day(shop, preset, seed, day, DriftConfig()).timestamp
        ids = [f"e{day:%Y%m%d}-{n:08d}" for n in range(len(stamps))]
        frames.append(pd.DataFrame({"event_id": ids, "timestamp": stamps}))
    everything = pd.concat(frames, ignore_index=True)
    everything = everything.iloc[np.argsort(everything["timestamp"].to_numpy(), kind="stable")]
    lo = (first - EPOCH).days * US_PER_DAY
    hi = (END - EPOCH).days * US_PER_DAY + US_PER_DAY
    inside = (everything["timestamp"] >= lo) & (everything["timestamp"] < hi)
    return everything[inside].reset_index(drop=True)


def test_day_chunks_come_in_the_order_of_one_sort_of_all_days() -> None:
    expected = _stable_sort_of_all_days(TINY, seed=11, days=12)
    chunks = list(simulate(TINY, seed=11, end_date=END, days=12, drift=DriftConfig()).chunks())
    assert len(chunks) == 13  # the day before the window, then each day of it
    table = pa.concat_tables([c.events for c in chunks])
    stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.array_equal(stamps, expected["timestamp"].to_numpy())
    events = table.to_pandas()
    assert events["event_id"].tolist() == expected["event_id"].tolist()
    # sessions run past midnight: some events wait for the next day's chunk
    late = events["event_id"].str[1:9] != events["timestamp"].dt.strftime("%Y%m%d")
    assert late.sum() > 0
    users = np.concatenate([c.users for c in chunks])
    assert len(np.unique(users)) == events["user_id"].nunique()


def test_generate_writes_the_bytes_of_the_whole_table_in_small_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # row groups far smaller than a day: every day's chunk spans several, and groups straddle
    # the chunks
    monkeypatch.setattr(pipelines.core.io, "ROW_GROUP_ROWS", 150)
    run = RunConfig(logical_date=END, seed=4)
    result = generate(GenerateConfig(preset="tiny", days=9), run, tmp_path / "streamed")
    events, catalog = synthesize(TINY, seed=4, end_date=END, days=9, drift=DriftConfig())
    write_parquet(tmp_path / "events.parquet", events)
    write_parquet(tmp_path / "catalog.parquet", catalog)
    for name in ("events.parquet", "catalog.parquet"):
        assert sha256_file(tmp_path / "streamed" / name) == sha256_file(tmp_path / name)
    groups = pq.ParquetFile(tmp_path / "streamed" / "events.parquet").num_row_groups
    assert groups == -(-events.num_rows // 150) > 2 * 10
    assert (result.events, result.users) == (
        events.num_rows,
        len(events.column("user_id").unique()),
    )


def test_huge_preset_is_ten_times_large() -> None:
    huge, large = PRESETS["huge"], PRESETS["large"]
    assert huge.n_users == 10 * large.n_users
    assert huge.sessions_per_user_mean == large.sessions_per_user_mean
    assert huge.session_length_mean == large.session_length_mean


# ---------------------------------------------------------------- the generate stage


def test_generate_writes_the_same_bytes_on_rerun(tmp_path: Path) -> None:
    cfg = GenerateConfig(preset="tiny", days=7)
    run = RunConfig(logical_date=END, seed=3)
    first = generate(cfg, run, tmp_path / "a")
    generate(cfg, run, tmp_path / "b")
    for name in ("events.parquet", "catalog.parquet"):
        assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name)
    events = pq.read_table(tmp_path / "a" / "events.parquet")
    assert events.schema.equals(EVENT_SCHEMA)
    assert first.events == events.num_rows
    assert first.first_day == END - dt.timedelta(days=6)
    assert first.items == TINY.n_items
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def _params(tmp_path: Path, **generate_section: object) -> Path:
    path = tmp_path / "params.yaml"
    section = {"preset": "tiny", "days": 5, **generate_section}
    path.write_text(
        yaml.safe_dump({"run": {"logical_date": "2026-11-22", "seed": 1}, "generate": section})
    )
    return path


def test_generate_cli(tmp_path: Path) -> None:
    out = tmp_path / "source"
    assert main(["--params", str(_params(tmp_path)), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["catalog.parquet", "events.parquet"]


def test_generate_cli_rejects_bad_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path, preset="enormous")
    assert main(["--params", str(params), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "generate.preset" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
