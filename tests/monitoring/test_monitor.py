"""One monitor run end to end on the tiny model: what it writes, and what it does with bad input.

The reference is built from the tiny prepared data and served model; the "traffic" is the same
held-out sessions answered by that model, written as the servers write the request log. The run
then meets the inputs the monitor must survive: request-log files that are empty, truncated or
of another layout version beside good ones, a window with no traffic, a batch that fails
validation, and (through ``recflow monitor``) a version that has no reference. Each gives a
message naming the file or version; nothing already written changes.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import InputError
from pipelines.core.io import write_parquet
from pipelines.core.params import Params, load_params
from pipelines.monitoring.monitor import Feedback, Source, run_monitor
from pipelines.monitoring.reference import Reference, build_reference, load_reference
from pipelines.monitoring.requests import sessions_as_requests
from pipelines.monitoring.summary import read_latest
from pipelines.registry.clouds import open_registry
from pipelines.registry.promotion import promote
from pipelines.registry.pseudonyms import pseudonym_key
from pipelines.registry.registration import register
from pipelines.serving.server.bundle import load_bundle
from pipelines.serving.server.pseudonyms import KeyedHash
from pipelines.serving.server.requestlog import SCHEMA_VERSION, SCHEMA_VERSION_KEY
from pipelines.stages.monitor import main as monitor_main

PROJECT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
KEY = KeyedHash(b"0123456789abcdef0123456789abcdef")
VERSION = "0123456789abcdef"


@pytest.fixture(scope="module")
def params() -> Params:
    base = load_params(PROJECT / "params.yaml")
    # the tiny split has a few hundred sessions: judge them (the statistics are tested apart)
    monitor = base.monitor.model_copy(update={"min_requests": 100})
    return base.model_copy(update={"monitor": monitor})


@pytest.fixture(scope="module")
def reference(
    params: Params,
    tiny_prepared: Path,
    served_folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Reference:
    out = tmp_path_factory.mktemp("reference") / "monitoring"
    build_reference(tiny_prepared, served_folder, out, params.monitor, seed=1, k=10)
    return load_reference(out)


@pytest.fixture(scope="module")
def traffic(tiny_prepared: Path, served_folder: Path) -> pa.Table:
    """The held-out sessions answered by the served model, as the request log holds them."""
    bundle = load_bundle("test", served_folder, threads=1)

    def predict(histories: list) -> object:
        return bundle.answer(bundle.recommender.pad(histories), 10)[0]

    table = sessions_as_requests(
        tiny_prepared, "test", bundle.items, predict, k=10, version=VERSION, time=T0
    )
    users = [KEY(u) for u in table.column("user").to_pylist()]
    table = table.set_column(table.schema.get_field_index("user"), "user", pa.array(users))
    arm = pa.array(["stable"] * table.num_rows)
    return table.set_column(table.schema.get_field_index("arm"), "arm", arm)


def _log(root: Path, params: Params, name: str, table: pa.Table) -> Path:
    path = root / params.serve.request_log.dir / "private" / "date=2026-11-22" / name
    write_parquet(path, table.replace_schema_metadata({SCHEMA_VERSION_KEY: SCHEMA_VERSION}))
    return path


def _run(root: Path, params: Params, reference: Reference, **source: object) -> object:
    window = {
        "cloud": "private",
        "since": T0 - dt.timedelta(hours=1),
        "until": T0 + dt.timedelta(hours=1),
        **source,
    }
    return run_monitor(
        params,
        root,
        Source(**window),  # type: ignore[arg-type]
        reference=reference,
        reference_version=VERSION,
        reference_kind="version",
        feedback=Feedback(),
        pseudonymize=KEY,
        now=T0 + dt.timedelta(hours=2),
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_traffic_like_the_reference_is_no_drift_and_bad_files_are_skipped_by_name(
    tmp_path: Path, params: Params, reference: Reference, traffic: pa.Table
) -> None:
    _log(tmp_path, params, "requests-a-w1.parquet", traffic)
    empty = _log(tmp_path, params, "requests-b-w1.parquet", traffic.slice(0, 0))
    empty.write_bytes(b"")
    truncated = _log(tmp_path, params, "requests-c-w1.parquet", traffic)
    truncated.write_bytes(truncated.read_bytes()[:200])
    other = _log(tmp_path, params, "requests-d-w1.parquet", traffic)
    pq.write_table(traffic.replace_schema_metadata({SCHEMA_VERSION_KEY: b"99"}), other)

    outcome = _run(tmp_path, params, reference)

    summary = outcome.document  # type: ignore[attr-defined]
    assert summary.verdict == "no_drift", [c for c in summary.checks if c.outcome != "pass"]
    assert summary.rows == traffic.num_rows
    assert summary.versions == (VERSION,)
    skipped = {Path(s.path).name: s.reason for s in summary.skipped}
    assert set(skipped) == {empty.name, truncated.name, other.name}
    assert all(name in reason for name, reason in skipped.items())
    cloud_dir = tmp_path / params.monitor.out / "private"
    latest = read_latest(cloud_dir)
    assert latest.summary == summary
    folder = outcome.folder  # type: ignore[attr-defined]
    assert {p.name for p in folder.iterdir()} >= {"report.html", "summary.json", "metrics.prom"}
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert '<script src="http' not in html and '<link href="http' not in html
    assert 'recflow_monitor_drift{cloud="private"} 0' in (cloud_dir / "metrics.prom").read_text()
    assert (cloud_dir / "trend.html").is_file()


def test_a_shifted_window_is_drift_naming_the_feature(
    tmp_path: Path, params: Params, reference: Reference, traffic: pa.Table
) -> None:
    # every history's prices tripled: the traffic of an inflated shop
    prices = traffic.column("history_prices").combine_chunks()
    tripled = pa.ListArray.from_arrays(
        prices.offsets, pa.compute.multiply(prices.values, pa.scalar(3.0))
    )
    shifted = traffic.set_column(
        traffic.schema.get_field_index("history_prices"), "history_prices", tripled
    )
    _log(tmp_path, params, "requests-a-w1.parquet", shifted)
    summary = _run(tmp_path, params, reference).document  # type: ignore[attr-defined]
    assert summary.verdict == "drift"
    assert [d.feature for d in summary.drifted] == ["history_price"]
    assert [a.kind for a in summary.alerts] == ["drift"]


def test_a_window_without_traffic_is_insufficient_data(
    tmp_path: Path, params: Params, reference: Reference
) -> None:
    summary = _run(tmp_path, params, reference).document  # type: ignore[attr-defined]
    assert summary.verdict == "insufficient_data"
    assert summary.rows == 0 and summary.files == 0


def test_a_batch_that_fails_validation_is_named_and_nothing_written_changes(
    tmp_path: Path, params: Params, reference: Reference, traffic: pa.Table, tiny_prepared: Path
) -> None:
    _log(tmp_path, params, "requests-a-w1.parquet", traffic)
    _run(tmp_path, params, reference)
    before = _files(tmp_path / params.monitor.out)
    # the tiny source's batch with one negative price: the validation suite rejects it
    source = tiny_prepared.parent / "source"
    events = pq.read_table(source / "events.parquet")
    prices = events.column("price").to_pylist()
    prices[0] = -5.0
    events = events.set_column(
        events.schema.get_field_index("price"),
        "price",
        pa.array(prices, events.schema.field("price").type),
    )
    batch = tmp_path / "batch" / "2026-11-22"
    batch.mkdir(parents=True)
    pq.write_table(events, batch / "events.parquet")
    shutil.copy(source / "catalog.parquet", batch / "catalog.parquet")
    with pytest.raises(InputError, match=r"events\.parquet fails validation") as caught:
        _run(tmp_path, params, reference, events=batch)
    assert "price" in str(caught.value)
    assert _files(tmp_path / params.monitor.out) == before
    # an unreadable batch is named as well
    (batch / "events.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputError, match=r"events\.parquet"):
        _run(tmp_path, params, reference, events=batch)
    assert _files(tmp_path / params.monitor.out) == before


def test_online_quality_of_the_replayed_sessions_is_reported(
    tmp_path: Path, params: Params, reference: Reference, traffic: pa.Table, tiny_prepared: Path
) -> None:
    _log(tmp_path, params, "requests-a-w1.parquet", traffic)
    outcome = run_monitor(
        params,
        tmp_path,
        Source("private", T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=1)),
        reference=reference,
        reference_version=VERSION,
        reference_kind="version",
        feedback=Feedback(prepared=tiny_prepared, split="test"),
        pseudonymize=KEY,
        now=T0 + dt.timedelta(hours=2),
    )
    (figure,) = outcome.document.quality
    assert (figure.version, figure.arm) == (VERSION, "stable")
    assert figure.with_feedback == figure.requests == traffic.num_rows
    assert figure.hit_rate is not None and figure.low is not None and figure.high is not None
    assert 0.0 < figure.low <= figure.hit_rate <= figure.high < 1.0
    summary = json.loads((outcome.folder / "summary.json").read_text())
    assert summary["quality"][0]["hits"] == figure.hits


def test_recflow_monitor_names_a_version_without_a_reference(
    tmp_path: Path, served_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version registered before versions kept a reference: named, exit 1, nothing written."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text((PROJECT / "params.yaml").read_text())
    candidate = root / "models" / "candidate"
    shutil.copytree(served_folder, candidate / "optimized")
    (candidate / "model.pt").write_bytes(b"weights")
    (candidate / "evaluation").mkdir()
    (candidate / "evaluation" / "verdict.json").write_text(
        json.dumps({"outcome": "pass", "blocked": False, "bootstrap": True})
    )
    registry = open_registry(load_params(root / "params.yaml"), root)
    version = register(
        registry.record, candidate, {}, lambda: pseudonym_key(registry.record), ("user_id",)
    ).version.id
    promote(registry, version, "production", "private", reason="t", actor="t", at=T0)

    code = monitor_main(["--params", str(root / "params.yaml"), "--cloud", "private"])

    assert code == 1
    out = capsys.readouterr().out
    assert version in out and "no monitoring reference" in out
    assert not (root / "reports").exists()
