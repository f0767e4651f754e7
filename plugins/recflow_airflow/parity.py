"""Check that a DAG runs what ``dvc.yaml`` declares: the same stages, commands and edges.

``dvc.yaml`` is read through DVC's own API, so its templating and stage graph are DVC's, not a
re-implementation. Used by ``tests/dags/test_parity.py``; cheap enough to run anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.params import Params
from pipelines.stages.table import STAGES, stage_command


@dataclass(frozen=True)
class DvcStage:
    """A stage as DVC resolves it: its command and the stages whose outputs it depends on."""

    name: str
    cmd: str
    upstream: frozenset[str]


def read_dvc_stages(root: Path) -> dict[str, DvcStage]:
    """Resolve the pipeline in ``root/dvc.yaml`` with DVC.

    Args:
        root: A DVC project root.

    Returns:
        Stage name to resolved stage. A stage's upstream are the stages with an output that
        it depends on.
    """
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        index = repo.index
        stages = [s for s in index.stages if getattr(s, "cmd", None) is not None]
        # DVC's graph points from a stage to the stages it depends on
        upstream: dict[str, set[str]] = {s.name: set() for s in stages}
        for dependent, dependency in index.graph.edges():
            if dependent.name in upstream:
                upstream[dependent.name].add(dependency.name)
        return {
            s.name: DvcStage(
                name=s.name,
                cmd=s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
                upstream=frozenset(upstream[s.name]),
            )
            for s in stages
        }


def task_script(task: Any) -> str:
    """The shell script an Airflow task built by the factory runs, whatever its backend."""
    if hasattr(task, "bash_command"):
        return str(task.bash_command)
    pod = getattr(task, "pod_template_dict", None) or {}
    containers = pod.get("spec", {}).get("containers", [])
    return str(containers[0]["command"][-1]) if containers else ""


def parity_problems(dvc_stages: dict[str, DvcStage], dag: Any, params: Params) -> list[str]:
    """Every way ``dag`` differs from the DVC pipeline; empty when they agree.

    Compares the stage table's commands (after templating) with DVC's resolved ``cmd``s, checks
    each task runs its command as one line of its script, and compares the edges between the
    DAG's DVC stages with DVC's graph: ``a >> b`` exactly when ``b`` depends on an output of ``a``.

    Args:
        dvc_stages: The pipeline as ``read_dvc_stages`` returns it.
        dag: The Airflow DAG built from the stage table.
        params: The params the DAG was built with.

    Returns:
        One human-readable line per difference.
    """
    problems: list[str] = []
    tracked = {spec.name: spec for spec in STAGES if spec.tracked}
    tasks = {task.task_id: task for task in dag.tasks}

    for name in sorted(set(dvc_stages) - set(tracked)):
        problems.append(f"stage {name!r} is in dvc.yaml but not in the stage table")
    for name in sorted(set(tracked) - set(dvc_stages)):
        problems.append(f"stage {name!r} is in the stage table but not in dvc.yaml")
    for name in sorted(set(tracked) - set(tasks)):
        problems.append(f"stage {name!r} has no task in DAG {dag.dag_id!r}")

    for name in sorted(set(tracked) & set(dvc_stages)):
        command = stage_command(tracked[name], params)
        expected = dvc_stages[name].cmd
        if command != expected:
            problems.append(
                f"stage {name!r}: command differs\n  dvc.yaml: {expected}\n  DAG:      {command}"
            )
        if name in tasks and command not in task_script(tasks[name]).splitlines():
            problems.append(f"task {name!r} does not run its stage command {command!r}")

        dag_upstream = set(tasks[name].upstream_task_ids) & set(tracked) if name in tasks else set()
        dvc_upstream = set(dvc_stages[name].upstream)
        for missing in sorted(dvc_upstream - dag_upstream):
            problems.append(f"edge {missing} >> {name} is in dvc.yaml but not in the DAG")
        for extra in sorted(dag_upstream - dvc_upstream):
            problems.append(f"edge {extra} >> {name} is in the DAG but not in dvc.yaml")
    return problems
