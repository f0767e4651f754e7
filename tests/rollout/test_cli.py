"""``recflow deploy``'s command line: every bad input refused with a message naming it, before
anything starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.commands.deploy import main as command
from pipelines.registry.promotion import promote
from pipelines.rollout.record import Records, RolloutRecord, TargetRecord
from pipelines.stages.deploy import main
from tests.rollout.conftest import AT, Project


def _run(project: Project, *args: str) -> list[str]:
    return ["--params", str(project.params_file), "--prepared", str(project.prepared), *args]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "give a VERSION or --from-alias ALIAS"),
        (["0123456789abcdef", "--from-alias", "candidate"], "give a VERSION or --from-alias"),
        (["../../etc"], "is not a version id"),
        (["--rollback", "--dry-run"], "--rollback takes an optional VERSION and --reason only"),
    ],
)
def test_bad_arguments_are_named(
    args: list[str], words: str, make_project: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project()
    with pytest.raises(SystemExit) as stopped:
        main(_run(project, *args))
    assert stopped.value.code == 2
    assert words in capsys.readouterr().err


def test_versions_that_cannot_be_deployed_are_refused(
    make_project: Any, served_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project()
    assert main(_run(project, "--from-alias", "candidate")) == 2
    assert "alias 'candidate' is not set in 'private'" in capsys.readouterr().err
    assert main(_run(project, "0123456789abcdef")) == 2
    assert "no version 0123456789abcdef in store 'private'" in capsys.readouterr().err
    blocked = project.root / "blocked"
    (blocked / "evaluation").mkdir(parents=True)
    (blocked / "optimized").mkdir()
    for path in served_folder.iterdir():
        (blocked / "optimized" / path.name).write_bytes(path.read_bytes())
    (blocked / "model.pt").write_bytes(b"m")
    (blocked / "evaluation" / "verdict.json").write_text(
        json.dumps({"outcome": "fail", "verdict": "fail", "blocked": True})
    )
    from pipelines.registry.publish import publish

    version = publish(project.registry(), blocked, {"format": 1}, actor="t", at=AT).version.id
    assert main(_run(project, version)) == 2
    assert f"version {version} was blocked by the gate (verdict fail)" in capsys.readouterr().err
    assert not (project.root / "deploy" / version).exists()


def test_an_unfinished_rollout_blocks_another_version(
    make_project: Any, served_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project()
    first = project.version(served_folder, "first")
    second = project.version(served_folder, "second")
    Records(project.root / "deploy").save(
        RolloutRecord(
            version=first,
            targets=[TargetRecord("private", phase="canary", stable=second)],
            actor="t",
            created_at=AT.isoformat(),
            updated_at=AT.isoformat(),
        )
    )
    assert main(_run(project, second)) == 2
    err = capsys.readouterr().err
    assert f"the rollout of {first} is unfinished (private canary)" in err
    assert f"recflow deploy {first}" in err


def test_status_approve_and_rollback_without_a_rollout(
    make_project: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project()
    params = ["--params", str(project.params_file)]
    assert command(["status", *params]) == 2
    assert "no rollout yet" in capsys.readouterr().err
    assert command(["approve", *params]) == 2
    assert "no rollout waits for approval (latest rollout: none yet)" in capsys.readouterr().err
    assert main(["--rollback", "--reason", "why", *params]) == 2
    assert "there was no rollout yet" in capsys.readouterr().err


def test_the_plan_of_a_version_already_in_production(
    make_project: Any, served_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project()
    version = project.version(served_folder, "v1")
    promote(project.registry(), version, "production", "private", reason="t", actor="t", at=AT)
    assert main(_run(project, version, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "    nothing to do: the version is production there" in out
    assert "2. bake (no stable version yet)" in out  # public has none yet


def test_status_says_where_a_rollout_stands(
    make_project: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    project: Project = make_project()
    record = RolloutRecord(
        version="0123456789abcdef",
        targets=[
            TargetRecord(
                "private",
                phase="done",
                stable="fedcba9876543210",
                steps=[{"step": "infra", "outcome": "pass"}, {"step": "shadow", "outcome": "pass"}],
            ),
            TargetRecord("public", phase="canary", stable="fedcba9876543210", canary_step=1),
        ],
        actor="t",
        created_at=AT.isoformat(),
        updated_at=AT.isoformat(),
    )
    Records(project.root / "deploy").save(record)
    params = ["--params", str(project.params_file)]
    assert command(["status", *params]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "rollout of 0123456789abcdef: running (public canary)",
        "  private: done; stable fedcba9876543210; infra pass, shadow pass",
        "  public: canary; stable fedcba9876543210; no steps yet",
    ]
    assert command(["status", "0123456789abcdef", "--json", *params]) == 0
    assert json.loads(capsys.readouterr().out)["targets"][1]["canary_step"] == 1
