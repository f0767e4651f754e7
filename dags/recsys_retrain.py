"""### recsys_retrain

The recflow chain for one data date: the same stage commands as `dvc.yaml`, run in order, then a
rollout cloud by cloud.

| task | what it does |
|---|---|
| `set_logical_date` | records the run's trigger form (its data date and overrides) for the stages |
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
| `deploy_private` | the private fleet: shadow, canary, full (`production`), or rolled back |
| `approve_public` | a person approves or rejects in the UI (when the run requires approval) |
| `deploy_public` | the public fleet, the same steps |
| `monitor` | drift and online quality of both clouds' traffic |

Each stage task asks DVC first: an up-to-date stage is skipped, a changed one runs and is
recorded in `dvc.lock`, so `dvc repro` afterwards finds nothing to do.

**The trigger form.** One date: the run's *logical date*, Airflow's own field, is the data date
(its day in UTC). Airflow 3.3's form always shows that field for a DAG whose timetable is not
partitioned, so the project declares no date field of its own, and the run header's logical date
is the day the run trained on. A caller without the form (the main job, `airflow dags trigger
--conf '{"data_date": "YYYY-MM-DD"}'`) passes the date in the run's conf instead; a manual run
without a logical date takes the day it was due. The other fields (data source, epochs,
training processes per node, execution, skip deploy, require approval, force retrain) are
validated on trigger: a wrong value is refused naming the field; empty means `params.yaml`'s
value. The whole form reaches the first task as JSON in `$RECFLOW_RUN_FORM` (never in a
command line), which records it where every later stage reads its params; two runs never see
each other's values. `execution` chooses, per run, between local tasks and Kubernetes pods;
`skip_deploy` skips the deploy and approval tasks; `force_retrain` makes `train` run although
DVC finds it up to date.

**Approval.** With `require_approval`, `approve_public` waits in the UI's Required Actions with
the gate's verdict, the private cloud's canary figures and links to the reports. Approve: the
public rollout runs. Reject: the private cloud is rolled back, who and why are in the ledger,
and `deploy_public` is skipped. No answer within `deploy.approval_timeout_s` is a reject. The
decision is the rollout record's, the same one `recflow deploy approve|reject` writes.

**Schedule.** The cron `airflow.schedule` (a `CronTriggerTimetable`, `catchup=False`) or a drift
event on the asset `recflow://monitoring/drift` from `recsys_drift_monitor`, whichever comes
first; the run a drift starts carries the event's reason in `$RECFLOW_TRIGGER`, which `register`
records in the version's lineage. With `catchup=False` the timetable still creates the most
recent missed cron run when a paused DAG is unpaused (`run_immediately` only applies to a DAG
without a start date), for instance by "unpause on trigger" in the trigger form. So the first
task skips a *scheduled* run that starts more than an hour after it was due, and the whole run
with it: a manual trigger starts exactly the run a person asked for, and a paused DAG catches
up on nothing. Retries with backoff, timeouts and the failure alert are set once for every
task (`airflow:` section of `params.yaml`); `max_active_runs=1` makes a second run wait.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable
from recflow_airflow.execution import chain_tasks
from recflow_airflow.form import FORM_FILTERS, form_params
from recflow_airflow.monitoring import DRIFT_ASSET, TEMPLATE_FILTERS
from recflow_airflow.project import default_args, project_params, project_root

ROOT = project_root(Path(__file__).resolve().parent)
PARAMS = project_params(ROOT)
AIRFLOW = PARAMS.airflow

with DAG(
    dag_id="recsys_retrain",
    description="Retrain the recommender on one day of clickstream, gate it, roll it out.",
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
    # the drift event's reason ($RECFLOW_TRIGGER), the data date and the form as JSON
    user_defined_filters={**TEMPLATE_FILTERS, **FORM_FILTERS},
    params=form_params(PARAMS),
):
    # one task per stage of the stage table (pipelines/stages/table.py), the deploy stage once
    # per target: ... >> register >> deploy_private >> approve_public >> deploy_public >> monitor
    chain_tasks(PARAMS, ROOT)
