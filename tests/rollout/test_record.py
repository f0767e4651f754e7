"""The rollout record and the deploy settings: persisted as the controller leaves them, one
controller at a time, and every bad value named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.errors import InputError
from pipelines.core.params import ConfigError, load_params
from pipelines.rollout.record import Records, RolloutBusy, RolloutRecord, TargetRecord
from tests.rollout.conftest import PROJECT_ROOT


def _record(version: str = "0123456789abcdef") -> RolloutRecord:
    return RolloutRecord(
        version=version,
        targets=[TargetRecord("private", phase="done", stable=None), TargetRecord("public")],
        actor="test",
        created_at="2026-12-02T06:00:00+00:00",
        updated_at="2026-12-02T06:00:00+00:00",
    )


def test_a_record_is_saved_and_read_back_and_is_the_latest(tmp_path: Path) -> None:
    records = Records(tmp_path)
    record = _record()
    record.target("public").phase, record.target("public").canary_step = "canary", 1
    records.save(record)
    loaded = records.load(record.version)
    assert loaded == record and records.latest() == record
    assert loaded is not None and loaded.where() == "public canary"
    assert loaded.current is not None and loaded.current.cloud == "public"
    assert [t.cloud for t in loaded.touched] == ["private", "public"]
    assert records.load("fedcba9876543210") is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "is not readable JSON"),
        ('{"format": 9, "targets": []}', "format 9, expected 1"),
        ('{"format": 1, "version": "x"}', "is malformed"),
    ],
)
def test_a_damaged_record_is_named(content: str, words: str, tmp_path: Path) -> None:
    records = Records(tmp_path)
    (tmp_path / "0123456789abcdef").mkdir()
    (tmp_path / "0123456789abcdef" / "rollout.json").write_text(content)
    with pytest.raises(InputError, match=words):
        records.load("0123456789abcdef")


def test_one_controller_at_a_time(tmp_path: Path) -> None:
    records = Records(tmp_path)
    assert not records.controller_running()
    with records.lock():
        assert records.controller_running()
        with (
            pytest.raises(RolloutBusy, match=r"another deploy controller \(pid \d+\)"),
            Records(tmp_path).lock(),
        ):
            pass
    assert not records.controller_running()


def test_requests_are_left_and_cleared(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.write_request("0123456789abcdef", "rollback.json", {"reason": "r"})
    assert records.read_request("0123456789abcdef", "rollback.json") == {"reason": "r"}
    records.clear_request("0123456789abcdef", "rollback.json")
    assert records.read_request("0123456789abcdef", "rollback.json") is None


def _params_with(
    tmp_path: Path, deploy: dict[str, Any], registry: dict[str, Any] | None = None
) -> Path:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for key, value in deploy.items():
        params["deploy"][key] = value
    params["registry"].update(registry or {})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize(
    ("deploy", "registry", "words"),
    [
        ({"canary": {"weights": [0.5, 0.25]}}, None, "canary weights must increase"),
        ({"canary": {"weights": [0.05, 1.0]}}, None, "strictly between 0 and 1"),
        ({"targets": ["private", "private"]}, None, "distinct clouds"),
        ({"targets": ["onprem"]}, None, "deploy.targets.0"),
        ({"on_inconclusive": "retry"}, None, "deploy.on_inconclusive"),
        ({"analysis": {"error_rate": {"max": 2.0, "max_increase": 0.0,
                                      "max_relative_increase": 0.0}}}, None,
         "deploy.analysis.error_rate.max"),
        ({"metrics": {"source": "graphite"}}, None, "deploy.metrics.source"),
        ({"fleets": {"private": {"servers": 0}}}, None, "deploy.fleets.private.servers"),
        ({"kubernetes": {"autoscaling": {"min_replicas": 5, "max_replicas": 2}}}, None,
         "min_replicas exceeds max_replicas"),
        ({"shadow": {"request": 10}}, None, "deploy.shadow.request: unknown key"),
        ({}, {"candidate_alias": "production"}, "candidate_alias and promote_alias"),
    ],
)  # fmt: skip
def test_bad_deploy_settings_are_named(
    deploy: dict[str, Any], registry: dict[str, Any] | None, words: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=words):
        load_params(_params_with(tmp_path, deploy, registry))


def test_the_project_deploys_to_private_then_public(tmp_path: Path) -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.deploy.targets == ("private", "public")
    assert params.deploy.canary.weights == (0.05, 0.25, 0.5)
    assert params.deploy.fleets.private.replicas == 3
    assert params.registry.candidate_alias == "candidate"
    assert json.loads(json.dumps(params.deploy.model_dump(mode="json")))["analysis"]
