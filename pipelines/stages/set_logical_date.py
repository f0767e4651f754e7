"""Task ``set_logical_date``: write the run's date and trigger form into the run overlay.

    python -m pipelines.stages.set_logical_date --params params.yaml --form "$RECFLOW_RUN_FORM"
    python -m pipelines.stages.set_logical_date --params params.yaml --set-logical-date 2026-11-22

The Airflow DAG's first task. It never edits ``params.yaml``: it replaces ``params.run.yaml``
beside it with the run's values that differ from ``params.yaml`` (every other key null), and
every later stage reads that overlay through ``load_params``
(:mod:`pipelines.core.params.run_form` says why this keeps ``dvc.lock`` honest).

``--form`` is the trigger form as JSON: ``data_date`` (``YYYY-MM-DD`` or null), ``source`` (a
synthetic preset ``tiny | default | medium | large | huge``, or a path under ``data/source/``),
``epochs`` and ``nproc_per_node`` (whole numbers or null); null means ``params.yaml``'s value.
The DAG's own fields (``execution``, ``skip_deploy``, ``require_approval``, ``force_retrain``)
are accepted and left to the DAG. The date is the form's ``data_date``, else
``--set-logical-date``, else ``$RECFLOW_LOGICAL_DATE`` (the DAG run's date, rendered by
Airflow); a form's date and ``--set-logical-date`` that disagree are an error. Without
``--form`` the run sets only its date. Not a DVC stage: it writes a parameter, it produces no
output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pipelines.core.cli import run_cli, stage_parser
from pipelines.core.params import ConfigError
from pipelines.core.params.loading import set_run
from pipelines.core.params.run_form import form_date
from pipelines.core.run_date import parse_logical_date
from pipelines.stages.table import LOGICAL_DATE_ENV


def _date_arg(text: str) -> dt.date:
    try:
        return parse_logical_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _form_arg(text: str) -> dict[str, Any]:
    try:
        form = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(form, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of the form's fields")
    return form


def _env_date() -> dt.date | None:
    text = os.environ.get(LOGICAL_DATE_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_logical_date(text)
    except ValueError as exc:
        raise ConfigError(f"${LOGICAL_DATE_ENV}: {exc}") from exc


def _main(argv: Sequence[str] | None) -> int:
    parser = stage_parser(
        "recflow set_logical_date",
        "Write the run's date and trigger form into the run overlay (params.run.yaml).",
    )
    parser.add_argument(
        "--form",
        type=_form_arg,
        default={},
        metavar="JSON",
        help="the trigger form as a JSON object (data_date, source, epochs, nproc_per_node)",
    )
    parser.add_argument(
        "--set-logical-date",
        type=_date_arg,
        default=None,
        metavar="YYYY-MM-DD",
        help=f"the run's logical date when the form has none (default: ${LOGICAL_DATE_ENV})",
    )
    args = parser.parse_args(argv)
    date = form_date(args.form.get("data_date"))
    given = args.set_logical_date
    if given is not None and date is not None and date != given:
        raise ConfigError(f"--form: data_date: {date} disagrees with --set-logical-date {given}")
    set_run(args.params, args.form, given or _env_date())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pipelines.stages.set_logical_date --form JSON``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
