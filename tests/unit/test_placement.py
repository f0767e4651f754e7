"""The placement policy: each branch of the rule, the crossing of its inputs, the config's
strictness, the record the lineage reads, and ``recflow placement`` on a real params file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pipelines.commands import placement as command
from pipelines.core.errors import InputError
from pipelines.core.params import NEVER_CROSS, ConfigError, load_params, read_params_file
from pipelines.core.params.registry import CrossingConfig
from pipelines.core.placement import (
    TRAINING_SET,
    CrossingRule,
    PlacementConfig,
    PlacementError,
    PlacementRefused,
    check_stores,
    decide,
    decision_record,
    read_decision,
    readable_inputs,
)
from tests.conftest import PROJECT_ROOT

# the registry's rule as the defaults of registry.crossing give it
CROSSING = CrossingRule(allow=frozenset(CrossingConfig().allow), never=NEVER_CROSS)
ROLES = {"private": "record", "public": "replica"}


def config(
    private_gpus: int = 4,
    public_gpus: int = 16,
    *,
    train_on_public: bool = False,
    rule: str = "private_first",
    public_wait: float = 0.0,
    private_wait: float = 0.0,
    gpu_hours: float = 2.0,
    gpus: int | None = None,
) -> PlacementConfig:
    """A placement config as params.yaml would hold it, checked by the strict model."""
    return PlacementConfig.model_validate(
        {
            "rule": rule,
            "train_on_public": train_on_public,
            "clouds": {
                "private": {
                    "context": "onprem",
                    "namespace": "recflow",
                    "store": "private",
                    "free_gpus": private_gpus,
                    "wait_hours": private_wait,
                    "price_per_gpu_hour": 1.2,
                    "private_data": True,
                },
                "public": {
                    "context": "eks-us-east-1",
                    "namespace": "recflow-burst",
                    "store": "public",
                    "free_gpus": public_gpus,
                    "wait_hours": public_wait,
                    "price_per_gpu_hour": 2.5,
                    "private_data": False,
                },
            },
            "tasks": {"train": {"gpu_hours": gpu_hours, "gpus": gpus, "deadline_hours": 6.0}},
        }
    )


# --- the rule, branch by branch -------------------------------------------------------------


def test_private_cloud_with_capacity_runs_the_task() -> None:
    decision = decide(config(), "train", CROSSING, training_gpus=2)
    assert (decision.cloud, decision.context, decision.namespace, decision.store) == (
        "private",
        "onprem",
        "recflow",
        "private",
    )
    assert decision.inputs == ("prepared_sequences",)
    assert decision.reason == (
        "private has 4 free GPUs (2 needed) and is done in 1.0 h, within the 6.0 h deadline, "
        "where private data may be seen"
    )
    # the public cloud was weighed too, and why it could not have run it is kept
    public = decision.considered[1]
    assert public.cloud == "public" and public.has_capacity and not public.eligible
    assert "prepared_sequences never leaves the private cloud" in str(public.refusal)


def test_private_cloud_first_even_when_the_public_one_may_read_a_training_set() -> None:
    decision = decide(config(train_on_public=True), "train", CROSSING, training_gpus=2)
    assert decision.cloud == "private"
    assert decision.considered[1].eligible  # it could have, but private comes first


def test_full_private_cloud_bursts_to_the_public_one_with_a_pseudonymized_training_set() -> None:
    decision = decide(config(private_gpus=1, train_on_public=True), "train", CROSSING, 2)
    assert (decision.cloud, decision.context, decision.namespace) == (
        "public",
        "eks-us-east-1",
        "recflow-burst",
    )
    assert decision.inputs == (TRAINING_SET,)
    assert decision.reason == (
        "burst: private: 1 of 2 GPUs free; public has 16 free GPUs (2 needed) and is done in "
        "1.0 h, within the 6.0 h deadline, reads training_set"
    )


def test_private_cloud_too_late_for_the_deadline_bursts() -> None:
    decision = decide(config(private_wait=5.5, train_on_public=True), "train", CROSSING, 2)
    assert decision.cloud == "public"
    private = decision.considered[0]
    assert private.finish_hours == pytest.approx(6.5) and not private.has_capacity
    assert private.short_of == "done in 6.5 h, after the 6.0 h deadline"
    assert decision.reason.startswith("burst: private: done in 6.5 h, after the 6.0 h deadline;")


def test_refused_when_the_only_cloud_with_capacity_may_not_see_the_data() -> None:
    with pytest.raises(PlacementRefused) as refused:
        decide(config(private_gpus=0), "train", CROSSING, training_gpus=2)
    assert str(refused.value) == (
        "refused to place train: public is the only cloud with capacity before the 6.0 h "
        "deadline, and may not see its inputs (public: prepared_sequences never leaves the "
        "private cloud, and its pseudonymized form (training_set) crosses only with "
        "execution.placement.train_on_public: true); private: 0 of 2 GPUs free"
    )
    assert refused.value.exit_code == 1


def test_refused_when_no_cloud_has_capacity_before_the_deadline() -> None:
    cfg = config(private_gpus=0, public_wait=5.5, train_on_public=True)
    with pytest.raises(PlacementRefused) as refused:
        decide(cfg, "train", CROSSING, training_gpus=2)
    assert str(refused.value) == (
        "no cloud can run train before its 6.0 h deadline: private: 0 of 2 GPUs free; "
        "public: done in 6.5 h, after the 6.0 h deadline"
    )


def test_private_only_never_bursts() -> None:
    cfg = config(private_gpus=0, train_on_public=True, rule="private_only")
    with pytest.raises(PlacementRefused, match="rule private_only keeps it where private data"):
        decide(cfg, "train", CROSSING, training_gpus=2)
    assert decide(config(rule="private_only"), "train", CROSSING, 2).cloud == "private"


def test_cheapest_picks_the_lowest_cost_among_the_clouds_that_may_run_it() -> None:
    # the public cloud is cheaper here, and may read the training set
    cheap_public = config(train_on_public=True, rule="cheapest").model_dump()
    cheap_public["clouds"]["public"]["price_per_gpu_hour"] = 0.5
    decision = decide(PlacementConfig.model_validate(cheap_public), "train", CROSSING, 2)
    assert decision.cloud == "public" and decision.estimated_cost == pytest.approx(1.0)
    assert decision.reason.startswith("the cheapest cloud that can run it in time: public")
    # without the training set crossing, the cheaper cloud may not run it
    cheap_public["train_on_public"] = False
    decision = decide(PlacementConfig.model_validate(cheap_public), "train", CROSSING, 2)
    assert decision.cloud == "private"


def test_estimated_cost_is_gpu_hours_times_the_price_of_each_cloud() -> None:
    decision = decide(config(gpu_hours=3.0, train_on_public=True), "train", CROSSING, 2)
    assert decision.gpu_hours == 3.0 and decision.price_per_gpu_hour == 1.2
    assert decision.estimated_cost == pytest.approx(3.0 * 1.2)
    assert [a.cost for a in decision.considered] == pytest.approx([3.0 * 1.2, 3.0 * 2.5])
    assert "estimated cost: 3 GPU-h x 1.20 USD = 3.60 USD" in decision.lines()


def test_the_gpus_come_from_the_estimate_else_from_the_training_topology() -> None:
    assert decide(config(gpus=4, private_gpus=4), "train", CROSSING, 2).gpus == 4
    decision = decide(config(private_gpus=4), "train", CROSSING, training_gpus=4)
    assert decision.gpus == 4 and decision.considered[0].finish_hours == pytest.approx(0.5)
    with pytest.raises(PlacementError, match=r"give execution.placement.tasks.train.gpus"):
        decide(config(), "train", CROSSING, training_gpus=0)
    with pytest.raises(PlacementError, match="no estimate for 'optimize'"):
        decide(config(), "optimize", CROSSING, training_gpus=2)


# --- what may cross -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["raw_events", "validated_batch"])
def test_raw_and_validated_batches_never_cross_whatever_the_switch(kind: str) -> None:
    for train_on_public in (False, True):
        read, refusal = readable_inputs((kind,), CROSSING, train_on_public)
        assert read == () and refusal == f"{kind} never leaves the private cloud"


def test_the_training_set_crosses_only_with_the_switch_and_the_crossing_rule() -> None:
    assert readable_inputs(("prepared_sequences",), CROSSING, True) == ((TRAINING_SET,), None)
    _, refusal = readable_inputs(("prepared_sequences",), CROSSING, False)
    assert "crosses only with execution.placement.train_on_public: true" in str(refusal)
    # the crossing rule comes in as data: one that keeps the training set private wins
    strict = CrossingRule(allow=CROSSING.allow, never=CROSSING.never | {TRAINING_SET})
    assert readable_inputs(("prepared_sequences",), strict, True) == (
        (),
        "prepared_sequences never leaves the private cloud",
    )


def test_a_kind_that_may_cross_is_read_only_where_the_crossing_rule_allows_it() -> None:
    assert readable_inputs(("model",), CROSSING, False) == (("model",), None)
    no_models = CrossingRule(allow=CROSSING.allow - {"model"}, never=CROSSING.never)
    assert readable_inputs(("model",), no_models, False) == (
        (),
        "model is not in registry.crossing.allow",
    )


def test_a_cloud_that_sees_private_data_works_with_the_store_of_record() -> None:
    check_stores(config(), ROLES)
    with pytest.raises(PlacementError, match="private data lives only in the store of record"):
        check_stores(config(), {"private": "replica", "public": "record"})
    with pytest.raises(PlacementError, match=r"clouds.public.store: 'public' is not a store"):
        check_stores(config(), {"private": "record"})


# --- the config -----------------------------------------------------------------------------


def test_training_set_crossing_is_off_by_default() -> None:
    assert PlacementConfig().train_on_public is False
    assert load_params(PROJECT_ROOT / "params.yaml").execution.placement.train_on_public is False


def test_the_defaults_place_training_in_the_private_cloud() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert command.place(params, "train").cloud == "private"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["clouds"]["private"].update(gpus=4), "clouds.private.gpus\n  Extra inputs"),
        (lambda d: d["clouds"]["private"].update(free_gpus="4"), "clouds.private.free_gpus"),
        (lambda d: d["clouds"]["private"].update(free_gpus=-1), "greater than or equal to 0"),
        (lambda d: d["clouds"]["public"].update(private_data="no"), "private_data"),
        (lambda d: d["clouds"]["public"].update(price_per_gpu_hour=-0.1), "price_per_gpu_hour"),
        (lambda d: d["clouds"]["public"].update(namespace="Recflow_Burst"), "namespace"),
        (lambda d: d["clouds"]["public"].update(context=""), "context"),
        (lambda d: d["clouds"]["public"].update(store="s3"), "clouds.public.store"),
        (lambda d: d["clouds"].update(edge=d["clouds"]["public"]), "clouds.edge.[key]"),
        (lambda d: d["tasks"]["train"].update(gpu_hours=0), "tasks.train.gpu_hours"),
        (lambda d: d["tasks"].update(ingest=d["tasks"]["train"]), "tasks.ingest.[key]"),
        (lambda d: d.update(train_on_public="false"), "train_on_public"),
        (lambda d: d.update(rule="nearest"), "rule"),
        (lambda d: d.update(clouds={}), "placement names no cloud"),
    ],
)
def test_the_config_is_strict(change: Any, message: str) -> None:
    document = config().model_dump()
    change(document)
    with pytest.raises(ValidationError) as invalid:
        PlacementConfig.model_validate(document)
    assert message in str(invalid.value)


def test_private_only_needs_a_cloud_that_may_see_private_data() -> None:
    document = config(rule="private_only").model_dump()
    document["clouds"]["private"]["private_data"] = False
    with pytest.raises(ValidationError, match="private_only needs a cloud with private_data"):
        PlacementConfig.model_validate(document)


def test_a_wrong_key_in_params_yaml_names_its_place(tmp_path: Path) -> None:
    raw = read_params_file(PROJECT_ROOT / "params.yaml")
    raw["execution"]["placement"]["clouds"]["public"]["free_gpu"] = 8
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"execution.placement.clouds.public.free_gpu: unknown"):
        load_params(path)


# --- the record the lineage reads -----------------------------------------------------------


def test_the_record_round_trips_as_plain_json(tmp_path: Path) -> None:
    decision = decide(config(private_gpus=0, train_on_public=True), "train", CROSSING, 2)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(decision_record(decision, "2026-03-01")), encoding="utf-8")
    record = read_decision(path, "2026-03-01")
    assert record is not None and record["decision"] == decision.to_json()
    assert record["decision"]["cloud"] == "public"
    assert record["decision"]["considered"][0]["short_of"] == "0 of 2 GPUs free"


def test_a_changed_record_is_refused_naming_it(tmp_path: Path) -> None:
    decision = decide(config(), "train", CROSSING, 2)
    record = decision_record(decision, "2026-03-01")
    record["decision"]["estimated_cost"] = 0.0
    path = tmp_path / "train.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(InputError, match=f"{path} does not match its sha256"):
        read_decision(path, "2026-03-01")
    path.write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="is not readable JSON"):
        read_decision(path, "2026-03-01")


def test_another_runs_record_or_none_leaves_the_lineage_without_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "train.json"
    assert read_decision(path, "2026-03-01") is None
    decision = decide(config(), "train", CROSSING, 2)
    path.write_text(json.dumps(decision_record(decision, "2026-02-28")), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="recflow.placement"):
        assert read_decision(path, "2026-03-01") is None
    assert "of the run of 2026-02-28, not of 2026-03-01" in caplog.text


# --- recflow placement ----------------------------------------------------------------------


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """The project's params with a logical date of its own."""
    raw = read_params_file(PROJECT_ROOT / "params.yaml")
    raw["run"]["logical_date"] = "2026-03-01"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_dry_run_prints_the_decision_and_records_nothing(
    params_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "placement" / "train.json"
    with caplog.at_level(logging.INFO, logger="recflow.placement"):
        code = command.main(
            ["--params", str(params_file), "--task", "train", "--dry-run", "--out", str(out)]
        )
    assert code == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert (
        lines[0] == "train -> private (context recflow-private, namespace recflow, store private)"
    )
    assert lines[1].startswith("reason: private has 4 free GPUs (2 needed)")
    assert "inputs: prepared_sequences" in lines
    assert "estimated cost: 2 GPU-h x 1.20 USD = 2.40 USD" in lines
    assert any(line.startswith("  public: 16 free GPUs") for line in lines)
    assert "dry run: nothing recorded" in printed.err
    assert not out.exists()
    # the decision, its inputs and the cost are logged
    assert "placement of train: private" in caplog.text and "2.40 USD" in caplog.text


def test_dry_run_as_json(params_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--params", str(params_file), "--task", "train", "--dry-run", "--json"]
    assert command.main(args) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["cloud"] == "private" and decision["inputs"] == ["prepared_sequences"]
    assert [c["cloud"] for c in decision["considered"]] == ["private", "public"]
    assert decision["train_on_public"] is False


def test_the_command_records_the_decision_for_the_lineage(
    params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "placement" / "train.json"
    args = ["--params", str(params_file), "--task", "train", "--out", str(out)]
    assert command.main(args) == 0
    record = read_decision(out, "2026-03-01")
    assert record is not None
    assert record["decision"]["cloud"] == "private"
    assert record["decision"]["estimated_cost"] == pytest.approx(2.4)
    capsys.readouterr()


def test_the_command_refuses_with_the_reason_when_no_cloud_may_run_it(
    params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train.json"
    args = ["--params", str(params_file), "--task", "train", "--out", str(out)]
    assert command.main([*args, "--free-gpus", "private=0"]) == 1
    err = capsys.readouterr().err
    assert "error: refused to place train: public is the only cloud with capacity" in err
    assert "train_on_public: true" in err and "private: 0 of 2 GPUs free" in err
    assert not out.exists()


def test_the_command_bursts_when_the_training_set_may_cross(
    params_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = read_params_file(params_file)
    raw["execution"]["placement"]["train_on_public"] = True
    params_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    args = ["--params", str(params_file), "--task", "train", "--dry-run", "--json"]
    assert command.main([*args, "--free-gpus", "private=0"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["cloud"] == "public" and decision["inputs"] == [TRAINING_SET]
    assert decision["estimated_cost"] == pytest.approx(2.0 * 2.5)


def test_a_bad_free_gpus_value_is_refused_by_the_parser(
    params_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        command.main(["--params", str(params_file), "--task", "train", "--free-gpus", "edge=3"])
    assert stopped.value.code == 2
    assert "'edge=3' is not CLOUD=N" in capsys.readouterr().err
