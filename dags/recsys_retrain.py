"""### recsys_retrain

The recflow chain for one logical date: the same stage commands as `dvc.yaml`, run in order.

| task | what it does |
|---|---|
| `set_logical_date` | writes the run's date into `params.yaml` (`run.logical_date`) |
| `pin_production` | pins the production version the gate compares against (from the registry) |
| `generate` | synthetic clickstream (only used when `ingest.source` is `synthetic`) |
| `ingest` | the run's immutable raw batch |
| `validate` | Great Expectations suite; a failing batch is quarantined and stops the run |
| `prepare` | user sequences, splits and reference statistics |
| `train` | SASRec under torchrun (DDP), with checkpoints, resume and early stopping |
| `optimize` | ONNX export, ONNX Runtime (and TensorRT on GPUs) artifacts, parity with PyTorch |
| `reference` | the monitor's reference: held-out requests and the model's answers, featurized |
| `evaluate` | regression gate against the production model; a blocked candidate stops here |
| `register` | registers the gated model, replicates it to the public store, names it `candidate` |
| `deploy` | private, then public fleet: shadow, canary, full (`production`), or rolled back |

Each stage task asks DVC first: an up-to-date stage is skipped, a changed one runs and is
recorded in `dvc.lock`, so `dvc repro` afterwards finds nothing to do.

Besides its cron (`airflow.schedule`), the chain runs when `recsys_drift_monitor` finds drift:
that DAG emits an event on the asset `recflow://monitoring/drift` (at most one per
`monitor.debounce_hours`), and the run it starts carries the event's reason (cloud, window,
summary checksum, drifted features) in `$RECFLOW_TRIGGER`, which `register` records in the
version's lineage. A scheduled or manual run has an empty `$RECFLOW_TRIGGER`.

The date is the run's logical date, or, for a manual run without one, the time it was
triggered; the trigger form's `logical_date` overrides both. Schedule, retries and timeouts
live in the `airflow:` section of `params.yaml`, and the `execution:` section chooses between
local tasks and Kubernetes pods.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param
from recflow_airflow.execution import chain_tasks
from recflow_airflow.monitoring import DRIFT_ASSET, TEMPLATE_FILTERS
from recflow_airflow.project import default_args, project_params, project_root

ROOT = project_root(Path(__file__).resolve().parent)
PARAMS = project_params(ROOT)
AIRFLOW = PARAMS.airflow

with DAG(
    dag_id="recsys_retrain",
    description="Retrain the recommender on one day of clickstream and gate the candidate.",
    doc_md=__doc__,
    # the cron, or a drift the monitor found: whichever comes first
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(AIRFLOW.schedule, timezone="UTC"), assets=DRIFT_ASSET
    ),
    start_date=dt.datetime.combine(AIRFLOW.start_date, dt.time(), tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(PARAMS),
    tags=list(AIRFLOW.tags),
    # the drift event's reason as $RECFLOW_TRIGGER in every task's environment
    user_defined_filters=TEMPLATE_FILTERS,
    params={
        "logical_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Logical date",
            description="Run the chain for this date (YYYY-MM-DD) instead of the run's own.",
        ),
    },
):
    # one task per stage of the stage table (pipelines/stages/table.py), with its edges:
    # set_logical_date >> pin_production >> generate >> ingest >> validate >> prepare >> train
    # >> optimize >> evaluate >> register >> deploy, plus prepare and train >> the later stages
    # that read their outputs, and pin_production >> evaluate (the production pin it compares)
    chain_tasks(PARAMS, ROOT)
