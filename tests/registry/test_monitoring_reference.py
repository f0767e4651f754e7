"""A version's monitoring reference: kept with the version, crossing to the public cloud with its
own columns only, fetched verified into the cache; and why a version was made (its trigger),
recorded by the register command and shown first by ``recflow registry show``."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.commands import registry as registry_command
from pipelines.core.errors import InputError
from pipelines.core.params import FEATURE_NAMES, Params
from pipelines.registry.candidates import classify
from pipelines.registry.clouds import Registry
from pipelines.registry.errors import (
    ChecksumMismatch,
    MissingReference,
    PolicyViolation,
    UnknownAlias,
)
from pipelines.registry.lineage import parse_trigger, trigger_line
from pipelines.registry.monitoring import fetch_reference, resolve_version
from pipelines.registry.names import file_key
from pipelines.registry.policy import MONITORING_PARQUET
from pipelines.registry.publish import publish
from pipelines.registry.stores.s3 import S3Store
from pipelines.registry.versions import LINEAGE, list_versions, read_version, verify_version
from pipelines.stages import register as register_stage
from tests.registry.helpers import make_candidate, snapshots, write_params
from tests.registry.test_lineage import LOCK

AT = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
REFERENCE_FILES = (
    "reference.json",
    "reference.parquet",
    "popularity.parquet",
    "reference.schema.json",
)
DRIFT = {
    "kind": "drift",
    "cloud": "private",
    "window": "20261201T000000Z--20261202T000000Z",
    "summary_sha256": "ab" * 32,
    "features": [
        {"feature": "history_category", "method": "jensenshannon", "score": 0.31, "threshold": 0.1}
    ],
}


def write_reference(candidate: Path, **extra_columns: list[Any]) -> Path:
    """A monitoring reference in ``candidate/monitoring``, shaped as the reference stage's."""
    folder = candidate / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    features: dict[str, list[Any]] = {
        "history_length": [3, 5],
        "history_category": ["c1", "c2"],
        "history_price": [9.5, 12.0],
        "history_popularity": ["b0", "b1"],
        "unknown_share": [0.0, 0.2],
        "top_category": ["c2", "c1"],
        "top_popularity": ["b0", "unseen"],
    }
    assert set(features) == set(FEATURE_NAMES)
    pq.write_table(pa.table({**features, **extra_columns}), folder / "reference.parquet")
    pq.write_table(
        pa.table({"item_id": ["i1", "i2"], "count": [4, 1], "bucket": ["b0", "b1"]}),
        folder / "popularity.parquet",
    )
    (folder / "reference.json").write_text(
        json.dumps({"schema_version": 1, "rows": 2, "features": list(FEATURE_NAMES)})
    )
    (folder / "reference.schema.json").write_text(json.dumps({"type": "object"}))
    return folder


def _publish(registry: Registry, candidate: Path) -> str:
    return publish(registry, candidate, {"format": 1}, actor="t", at=AT).version.id


def _object_key(store: S3Store, key: str) -> str:
    return store.prefix + key


# --- the kind, and what may cross ------------------------------------------------------------


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_the_reference_files_are_their_own_kind(name: str) -> None:
    assert classify(f"monitoring/{name}") == "monitoring_reference"


def test_the_policy_knows_the_columns_the_reference_stage_writes() -> None:
    from pipelines.monitoring.features import FEATURE_SCHEMA
    from pipelines.monitoring.reference import POPULARITY_FILE, POPULARITY_SCHEMA, REFERENCE_FILE

    assert {
        f"monitoring/{REFERENCE_FILE}": frozenset(FEATURE_SCHEMA.names),
        f"monitoring/{POPULARITY_FILE}": frozenset(POPULARITY_SCHEMA.names),
    } == MONITORING_PARQUET


def test_the_reference_crosses_to_the_public_cloud_and_is_verified_there(
    registry: Registry, candidate: Path
) -> None:
    write_reference(candidate)
    version = read_version(registry.store("public"), _publish(registry, candidate))
    kinds = {item.path: item.kind for item in version.files}
    assert {path: kinds[path] for path in kinds if path.startswith("monitoring/")} == {
        f"monitoring/{name}": "monitoring_reference" for name in REFERENCE_FILES
    }
    assert verify_version(registry.store("public"), version.id) == []
    public = registry.store("public")
    data, _ = public.read(file_key(version.id, "monitoring/reference.parquet"))
    assert data == (candidate / "monitoring" / "reference.parquet").read_bytes()


def test_a_candidate_without_a_reference_is_still_a_version(
    registry: Registry, candidate: Path
) -> None:
    version = read_version(registry.store("public"), _publish(registry, candidate))
    assert not [item for item in version.files if item.kind == "monitoring_reference"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: write_reference(c, user_id=["u1", "u2"]),
            r"monitoring/reference\.parquet holds only the columns .*, not user_id",
        ),
        (
            lambda c: pq.write_table(
                pa.table({"user_id": ["u1"], "item_id": ["i1"]}),
                write_reference(c) / "events.parquet",
            ),
            r"Parquet files are monitoring/reference\.parquet and monitoring/popularity\.parquet "
            r"only, not monitoring/events\.parquet",
        ),
        (
            lambda c: pq.write_table(
                pa.table({"item_id": ["i1"], "count": [1], "session_id": ["s1"]}),
                write_reference(c) / "popularity.parquet",
            ),
            r"popularity\.parquet holds only the columns bucket, count, item_id, not session_id",
        ),
    ],
    ids=["extra-column", "other-file", "popularity-extra-column"],
)
def test_reference_parquet_only_with_its_columns_at_its_paths(
    registry: Registry, candidate: Path, edit: Any, message: str
) -> None:
    edit(candidate)
    with pytest.raises(InputError, match=message):
        _publish(registry, candidate)
    assert snapshots(registry) == {"private": {}, "public": {}}


def test_the_policy_refuses_a_disguised_reference_before_any_byte(
    registry: Registry, tmp_path: Path
) -> None:
    public = registry.store("public")
    events = tmp_path / "reference.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "history_length": [3]}), events)
    key = file_key("0123456789abcdef", "monitoring/reference.parquet")
    with pytest.raises(PolicyViolation, match="not user_id"):
        public.put_file(key, events, "monitoring_reference")
    # the reference's columns, but somewhere else than its place in a version
    good = write_reference(tmp_path / "candidate") / "reference.parquet"
    elsewhere = file_key("0123456789abcdef", "optimized/reference.parquet")
    with pytest.raises(PolicyViolation, match=r"only, not optimized/reference\.parquet"):
        public.put_file(elsewhere, good, "monitoring_reference")
    # any other kind of Parquet is data, whatever columns it has
    with pytest.raises(PolicyViolation, match="is a Parquet data file"):
        public.put_file(key, good, "report")
    assert public.list_keys() == []
    public.put_file(key, good, "monitoring_reference")
    assert public.list_keys() == [key]


def test_the_reference_stage_builds_with_the_params_it_names_in_dvc_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.stages import reference as reference_stage

    params = Params.model_validate(
        {
            "run": {"logical_date": "2026-11-22", "seed": 7},
            "deploy": {"replay": {"k": 5}},
            "monitor": {"reference_rows": 300},
        }
    )
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        reference_stage,
        "build_reference",
        lambda *args, **kwargs: calls.append((*args, kwargs)),
    )
    argv = ["--params", str(write_params(tmp_path, params)), "--prepared", "p"]
    assert reference_stage.main([*argv, "--model", "m", "--out", "o"]) == 0
    ((prepared, model, out, cfg, kwargs),) = calls
    assert (prepared, model, out) == (Path("p"), Path("m"), Path("o"))
    assert cfg.reference_rows == 300 and kwargs == {"seed": 7, "k": 5}


# --- fetching it into the cache --------------------------------------------------------------


def test_the_reference_is_fetched_verified_and_reused(
    registry: Registry, candidate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_reference(candidate)
    version = _publish(registry, candidate)
    cache = tmp_path / "cache"
    folder = fetch_reference(registry, "public", version, cache)
    assert folder == cache / "monitoring" / version
    assert sorted(p.name for p in folder.iterdir()) == sorted(REFERENCE_FILES)
    for name in REFERENCE_FILES:
        assert (folder / name).read_bytes() == (candidate / "monitoring" / name).read_bytes()

    public = registry.store("public")
    downloads: list[str] = []
    original = public.download

    def counted(key: str, *args: Any, **kwargs: Any) -> Any:
        downloads.append(key)
        return original(key, *args, **kwargs)

    monkeypatch.setattr(public, "download", counted)
    assert fetch_reference(registry, "public", version, cache) == folder
    assert downloads == []  # the cached copy still hashes right
    (folder / "reference.parquet").write_bytes(b"changed in the cache")
    assert fetch_reference(registry, "public", version, cache) == folder
    assert downloads  # a damaged cached copy is fetched again
    assert (folder / "reference.parquet").read_bytes() == (
        candidate / "monitoring" / "reference.parquet"
    ).read_bytes()


def test_a_tampered_reference_is_caught_on_fetch(
    registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    write_reference(candidate)
    version = _publish(registry, candidate)
    public = registry.store("public")
    assert isinstance(public, S3Store)
    key = file_key(version, "monitoring/reference.parquet")
    info = public.head(key)
    assert info is not None
    # other bytes under the recorded checksum: bit rot, or a writer hiding a change
    public.client.put_object(
        Bucket=public.bucket,
        Key=_object_key(public, key),
        Body=b"not the reference",
        Metadata={"sha256": str(info.sha256)},
    )
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch, match=r"monitoring/reference\.parquet"):
        fetch_reference(registry, "public", version, cache)
    assert not (cache / "monitoring" / version).exists()
    # the private copy is intact
    assert (fetch_reference(registry, "private", version, cache) / "reference.parquet").is_file()


def test_a_version_without_a_reference_says_so(
    registry: Registry, candidate: Path, tmp_path: Path
) -> None:
    version = _publish(registry, candidate)
    with pytest.raises(MissingReference, match=f"version {version} in 'public' has no monitoring"):
        fetch_reference(registry, "public", version, tmp_path / "cache")
    assert not (tmp_path / "cache" / "monitoring").exists()


def test_an_alias_resolves_to_its_version(registry: Registry, candidate: Path) -> None:
    version = _publish(registry, candidate)  # passed the gate: named candidate in both clouds
    assert resolve_version(registry, "public", "candidate") == version
    assert resolve_version(registry, "public", version) == version
    with pytest.raises(UnknownAlias, match="'production' is not set in 'public'"):
        resolve_version(registry, "public", "production")


# --- the trigger -----------------------------------------------------------------------------


def test_trigger_lines() -> None:
    assert trigger_line({"trigger": parse_trigger("")}) == "trigger: manual or schedule"
    assert trigger_line({"trigger": parse_trigger("  \n")}) == "trigger: manual or schedule"
    assert trigger_line({"trigger": DRIFT}) == (
        "trigger: drift in private 20261201T000000Z--20261202T000000Z: "
        "history_category (0.31 >= 0.1)"
    )
    two = [DRIFT, {**DRIFT, "cloud": "public", "features": ["top_category"]}]
    assert trigger_line({"trigger": parse_trigger(json.dumps(two))}) == (
        "trigger: drift in private 20261201T000000Z--20261202T000000Z: "
        "history_category (0.31 >= 0.1); "
        "drift in public 20261201T000000Z--20261202T000000Z: top_category"
    )
    assert trigger_line({"trigger": {"kind": "backfill", "by": "alice"}}) == (
        'trigger: backfill {"by": "alice"}'
    )
    assert trigger_line({"format": 1}).startswith("trigger: not recorded")


@pytest.mark.parametrize("text", ["{oops", "42", '"drift"', "[]", '[{"kind": "drift"}, 3]'])
def test_a_trigger_that_is_not_an_object_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="--trigger"):
        parse_trigger(text)


def _project(tmp_path: Path, params: Params) -> list[str]:
    """A project folder for the register command; its arguments but ``--trigger``."""
    import yaml

    write_params(tmp_path, params)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (tmp_path / "validation.json").write_text(json.dumps({"success": True}))
    write_reference(make_candidate(tmp_path / "models" / "candidate"))
    return [
        "--params",
        str(tmp_path / "params.yaml"),
        "--candidate",
        str(tmp_path / "models" / "candidate"),
        "--lock",
        str(tmp_path / "dvc.lock"),
        "--validation",
        str(tmp_path / "validation.json"),
    ]


def test_register_records_the_trigger_and_show_prints_it_first(
    params: Params,
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CTX_")]:
        monkeypatch.delenv(name)  # the record is of a run by hand
    args = _project(tmp_path, params)
    assert register_stage.main([*args, "--trigger", json.dumps(DRIFT)]) == 0
    (version,) = list_versions(registry.record)
    for cloud in ("private", "public"):
        store = registry.store(cloud)
        lineage, _ = store.read(file_key(version, LINEAGE))
        assert json.loads(lineage)["trigger"] == DRIFT
    capsys.readouterr()
    assert registry_command.main(["--params", args[1], "show", version, "--cloud", "public"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "trigger: drift in private 20261201T000000Z--20261202T000000Z: "
        "history_category (0.31 >= 0.1)"
    )
    assert out[1].startswith(f"version {version} in public")
    assert any("monitoring_reference" in line for line in out)


def test_without_a_trigger_the_lineage_says_manual_or_schedule(
    params: Params, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _project(tmp_path, params)
    assert register_stage.main([*args, "--trigger", ""]) == 0
    (version,) = list_versions(registry.record)
    lineage, _ = registry.record.read(file_key(version, LINEAGE))
    assert json.loads(lineage)["trigger"] == {"kind": "manual_or_schedule"}
    capsys.readouterr()
    assert registry_command.main(["--params", args[1], "show", version]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "trigger: manual or schedule"


def test_an_invalid_trigger_stops_register_before_anything_is_written(
    params: Params, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _project(tmp_path, params)
    assert register_stage.main([*args, "--trigger", '{"kind": "drift",']) != 0
    assert "--trigger is not valid JSON" in capsys.readouterr().err
    assert snapshots(registry) == {"private": {}, "public": {}}
