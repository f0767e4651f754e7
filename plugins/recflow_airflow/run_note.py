"""``python -m recflow_airflow.run_note DAG_ID RUN_ID NOTE``: set a DAG run's note.

Airflow 3 gives a task no way to set its own run's note, and ``airflow dags test`` (the way
``make run`` runs the DAG) takes no run id and records the trigger time as the logical date.
The main job sets the note once the run ends, so that such a run names the data date it
trained on in the UI, as a run triggered from the form does through its logical date. It
writes through Airflow's own models into the metadata database of ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def set_note(dag_id: str, run_id: str, note: str) -> bool:
    """Set the note of run ``run_id`` of ``dag_id``; False where there is no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            .one_or_none()
        )
        if run is None:
            return False
        run.note = note
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 0 when the note is set, 1 (saying so) when the run does not exist."""
    parser = argparse.ArgumentParser(description="Set a DAG run's note.")
    parser.add_argument("dag_id")
    parser.add_argument("run_id")
    parser.add_argument("note")
    args = parser.parse_args(argv)
    if not set_note(args.dag_id, args.run_id, args.note):
        print(f"error: DAG {args.dag_id} has no run {args.run_id!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
