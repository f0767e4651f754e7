"""The growth-curve benchmark's parts: its memory measurement, the train log it reads, the fit
that names the stage bounding the batch, and the plot."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_scale import (
    STAGES,
    growth,
    main,
    render_svg,
    run_measured,
    stage_commands,
    train_details,
)
from pipelines.core.params import GenerateConfig, PrepareConfig, RunConfig, load_params
from pipelines.core.project import PROJECT_ROOT
from pipelines.data.preparation import prepare
from pipelines.data.synthetic.generator import generate
from pipelines.model.training.loop import train

MB = 1024 * 1024


def test_peak_memory_counts_a_grandchild_and_the_exit_status(tmp_path: Path) -> None:
    # the child only starts a grandchild that holds 300 MB; the child itself stays small
    grandchild = "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('ok')"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    measured = run_measured([sys.executable, "-c", child], tmp_path / "log")
    assert measured.returncode == 0
    assert measured.peak_rss >= 300 * MB
    assert measured.peak_rss < 2000 * MB
    assert (tmp_path / "log").read_text().strip() == "ok"
    failed = run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log2")
    assert failed.returncode == 3


def test_the_commands_are_the_stage_modules_with_their_flags(tmp_path: Path) -> None:
    commands = stage_commands(tmp_path / "params.yaml", tmp_path)
    assert list(commands) == list(STAGES)
    assert commands["train"][2:4] == ["pipelines.stages.train", "--torchrun"]
    assert commands["validate"][commands["validate"].index("--out") + 1] == str(
        tmp_path / "validated"
    )


def test_the_train_log_gives_the_epoch_and_the_test_scoring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunConfig(logical_date=dt.date(2026, 11, 22), seed=1)
    generate(GenerateConfig(preset="tiny"), run, tmp_path / "source")
    prepare(PrepareConfig(), run, tmp_path / "source", tmp_path / "prepared")
    cfg = load_params(PROJECT_ROOT / "params.yaml").train.model_copy(
        update={"epochs": 1, "progress": False, "hidden": 16, "max_len": 10}
    )
    with caplog.at_level(logging.INFO, logger="recflow.train"):
        train(cfg, run, tmp_path / "prepared", tmp_path / "model")
    details = train_details(caplog.text)
    assert details["epoch_train_s"] > 0
    assert details["test_users"] > 100
    assert details["test_scoring_s"] >= details["test_model_s"] > 0
    assert details["test_baselines_s"] >= 0


def _run(preset: str, events: int, memory: dict[str, float]) -> dict[str, Any]:
    return {
        "preset": preset,
        "batch_events": events,
        "stages": {
            stage: {"wall_s": events / 1e5, "peak_rss_gb": memory[stage]} for stage in memory
        },
    }


def test_the_stage_whose_memory_grows_fastest_bounds_the_batch() -> None:
    # prepare grows by 1 GB per 10M events from 1 GB; train by 2 GB per 10M from 2 GB;
    # validate stays flat
    runs = [
        _run("a", 10_000_000, {"validate": 1.0, "prepare": 2.0, "train": 4.0}),
        _run("b", 20_000_000, {"validate": 1.0, "prepare": 3.0, "train": 6.0}),
    ]
    fit = growth(runs, memory_gb=24.0)
    assert fit["stages"]["validate"]["memory_slope"] == 0
    assert "events_at_memory_limit" not in fit["stages"]["validate"]
    assert fit["stages"]["prepare"]["bytes_per_event"] == pytest.approx(100.0)
    # train: 6 GB at 20M, 200 bytes per event: 24 GB at 110M
    assert fit["stages"]["train"]["events_at_memory_limit"] == 110_000_000
    assert fit["largest_batch_by_fit"] == {"events": 110_000_000, "bound_by": "train"}
    assert fit["largest_batch_every_stage"] is None  # not every stage ran
    assert fit["stages"]["prepare"]["largest_batch"] == 20_000_000
    assert fit["stages"]["train"]["wall_slope"] == pytest.approx(1.0)


def test_a_failed_stage_is_left_out_of_the_fit_and_of_the_largest_run() -> None:
    runs = [
        _run("a", 10_000_000, {"prepare": 2.0, "train": 4.0}),
        _run("b", 20_000_000, {"prepare": 3.0, "train": 6.0}),
    ]
    runs[1]["stages"]["train"] = {"failed": "exit -9", "wall_s": 1.0, "peak_rss_gb": 23.0}
    runs.insert(0, _run("c", 5_000_000, dict.fromkeys(STAGES, 1.0)))
    runs[1]["stages"].update({stage: {"wall_s": 1.0, "peak_rss_gb": 1.0} for stage in STAGES[:3]})
    fit = growth(runs, memory_gb=24.0)
    assert fit["stages"]["train"]["largest_batch"] == 10_000_000
    assert fit["largest_batch_every_stage"] == 10_000_000


def test_the_plot_has_a_line_per_stage_in_each_panel() -> None:
    runs = [
        _run("a", 1_000_000, dict.fromkeys(STAGES, 1.0)),
        _run("b", 10_000_000, dict.fromkeys(STAGES, 2.0)),
    ]
    svg = ET.fromstring(render_svg(runs))
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2 * len(STAGES)
    labels = [text.text for text in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert {"1M", "10M"} <= set(labels)


def test_the_command_runs_the_first_stages_and_keeps_other_presets(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    out.write_text(json.dumps({"runs": [_run("other", 5, {"generate": 1.0})]}))
    args = ["--presets", "tiny", "--stages", "2", "--work", str(tmp_path / "work")]
    assert main([*args, "--out", str(out), "--memory-gb", "24"]) == 0
    report = json.loads(out.read_text())
    tiny = next(run for run in report["runs"] if run["preset"] == "tiny")
    assert list(tiny["stages"]) == ["generate", "ingest"]
    assert tiny["stages"]["ingest"]["events"] == tiny["batch_events"] > 1000
    assert tiny["stages"]["generate"]["events"] >= tiny["batch_events"]
    assert {run["preset"] for run in report["runs"]} == {"other", "tiny"}
    assert report["growth"]["memory_gb"] == 24
    assert out.with_suffix(".svg").read_text().startswith("<svg")


def test_a_run_from_a_later_stage_keeps_the_earlier_entries_and_outputs(tmp_path: Path) -> None:
    out, work = tmp_path / "scale.json", tmp_path / "work"
    common = ["--presets", "tiny", "--work", str(work), "--out", str(out), "--memory-gb", "24"]
    assert main([*common, "--stages", "2"]) == 0
    first = json.loads(out.read_text())["runs"][0]["stages"]
    source = (work / "tiny" / "source" / "events.parquet").read_bytes()
    (work / "tiny" / "raw" / "stale").mkdir()
    assert main([*common, "--stages", "3", "--from", "ingest"]) == 0
    tiny = json.loads(out.read_text())["runs"][0]
    assert list(tiny["stages"]) == ["generate", "ingest", "validate"]
    assert tiny["stages"]["generate"] == first["generate"]  # not run again
    assert tiny["stages_from_an_earlier_run"] == ["generate"]
    assert (work / "tiny" / "source" / "events.parquet").read_bytes() == source
    assert not (work / "tiny" / "raw" / "stale").exists()  # the stage run again starts afresh
    assert tiny["stages"]["validate"]["events"] == tiny["batch_events"]


def test_a_run_from_a_later_stage_needs_its_recorded_entries_and_folder(tmp_path: Path) -> None:
    out, work = tmp_path / "scale.json", tmp_path / "work"
    args = ["--presets", "tiny", "--out", str(out), "--from", "train"]
    with pytest.raises(SystemExit):
        main(args)  # no --work
    with pytest.raises(SystemExit, match="no recorded generate, ingest, validate, prepare"):
        main([*args, "--work", str(work)])
    out.write_text(json.dumps({"runs": [_run("tiny", 5, dict.fromkeys(STAGES[:4], 1.0))]}))
    entries = json.loads(out.read_text())
    for stage in entries["runs"][0]["stages"].values():
        stage["events"] = 5
    out.write_text(json.dumps(entries))
    with pytest.raises(SystemExit, match="lacks source, raw, validated, prepared"):
        main([*args, "--work", str(work)])
