"""A candidate whose model is byte-identical to stable's but whose item table maps every index
to the wrong catalog item: its answers are well-formed lists of real items, all of them wrong.
Against a stable version the shadow stops it (``wrong_item_table`` in ``test_faults.py``); a
first rollout has no stable version to shadow, and its bake, which scores the candidate's
catalog ids against the sessions' next items, stops it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.rollout.controller import RolloutFailed, deploy
from pipelines.rollout.record import Records
from tests.rollout import faults
from tests.rollout.conftest import Project

pytestmark = pytest.mark.slow


def test_a_first_rollout_with_a_wrong_item_table_fails_its_bake(
    make_project: Any, served_folder: Path, tmp_path: Path
) -> None:
    """Without a stable version the bake judges the candidate's answers, decoded with its own
    item table, against the session's true next item: the wrong items lose to popularity."""
    project: Project = make_project({"targets": ["private"]})
    wrong = faults.wrong_item_table(served_folder, tmp_path / "wrong")
    version = project.version(wrong, "wrong_item_table")

    with pytest.raises(RolloutFailed, match=r"private bake failed"):
        deploy(project.context(), version)

    record = Records(project.root / "deploy").load(version)
    assert record is not None
    failed = record.target("private").steps[-1]
    assert failed["step"] == "bake" and failed["outcome"] == "fail"
    hit_rate = next(c for c in failed["checks"] if c["metric"] == "hit_rate")
    assert hit_rate["outcome"] != "pass" and hit_rate["value"] < hit_rate["baseline"]
    assert project.production("private") is None
