"""The main job (``make run``): the chain through the Airflow DAG, then ``dvc repro``.

1. Runs the ``recsys_retrain`` DAG once with Airflow (standalone, SQLite under ``.airflow/``)
   for the logical date in ``params.yaml``; its tasks run the stage commands of ``dvc.yaml``
   and record them in ``dvc.lock``.
2. Runs ``dvc repro``, which finds everything up to date: the Airflow run left the same DVC
   record a local ``dvc repro`` would have.
3. Pushes data and model versions to the default DVC remote, and prints where reports landed.

Airflow is driven through its command line; this module never imports it.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.core.logs import setup_logging
from pipelines.core.params import load_params
from pipelines.core.project import PROJECT_ROOT, interpreter_env

log = logging.getLogger("recflow.run")

DAG_ID = "recsys_retrain"


def airflow_env(root: Path, airflow_home: Path) -> dict[str, str]:
    """Environment for a standalone Airflow on SQLite that sees this project's DAGs."""
    env = interpreter_env()
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "RECFLOW_PROJECT_ROOT": str(root),
        }
    )
    return env


def _run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
    log.info("$ %s", " ".join(cmd))
    started = time.perf_counter()
    subprocess.run(list(cmd), cwd=cwd, env=env, check=True)
    log.info("done in %.1f s", time.perf_counter() - started)


def run_airflow(root: Path, airflow_home: Path, logical_date: str) -> None:
    """Migrate the SQLite metadata database (idempotent) and run the DAG once."""
    env = airflow_env(root, airflow_home)
    airflow_home.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    _run([python, "-m", "airflow", "db", "migrate"], cwd=root, env=env)
    _run([python, "-m", "airflow", "dags", "test", DAG_ID, logical_date], cwd=root, env=env)


def run_dvc(root: Path, *, push: bool) -> None:
    """``dvc repro`` (a no-op after the Airflow run), metrics, and a push to the remote."""
    python = sys.executable
    env = airflow_env(root, root / ".airflow")
    _run([python, "-m", "dvc", "repro"], cwd=root, env=env)
    _run([python, "-m", "dvc", "metrics", "show"], cwd=root, env=env)
    if push:
        _run([python, "-m", "dvc", "push", "--quiet"], cwd=root, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the main job on the embedded default."""
    parser = argparse.ArgumentParser(prog="recflow-run", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT)
    parser.add_argument("--skip-airflow", action="store_true", help="only run dvc repro")
    parser.add_argument("--no-push", action="store_true", help="do not push to the DVC remote")
    args = parser.parse_args(argv)
    setup_logging()
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    logical_date = params.run.logical_date.isoformat()
    started = time.perf_counter()
    try:
        if not args.skip_airflow:
            run_airflow(root, root / ".airflow", logical_date)
        run_dvc(root, push=not args.no_push)
    except subprocess.CalledProcessError as exc:
        failed = " ".join(exc.cmd)
        print(f"error: step failed with exit code {exc.returncode}: {failed}", file=sys.stderr)
        return exc.returncode or 1
    elapsed = time.perf_counter() - started
    print(
        f"\nrecflow: chain finished for logical date {logical_date} in {elapsed:.0f} s\n"
        f"  validation report (GX Data Docs): {root / 'reports/validation'}\n"
        f"  prepared sequences and reference statistics: {root / 'data/prepared'}\n"
        f"  candidate model and training curves: {root / 'models/candidate'}\n"
        f"  serving artifacts and manifest: {root / 'models/candidate/optimized'}\n"
        f"  regression gate report: {root / 'models/candidate/evaluation/report.html'}\n"
        f"  metrics: {root / 'metrics'}   (dvc metrics show)\n"
        f"  Airflow home (SQLite): {root / '.airflow'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
