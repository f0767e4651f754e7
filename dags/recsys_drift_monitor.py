"""### recsys_drift_monitor

Drift and online quality of each cloud's served traffic, and a retrain when the traffic drifted.

| task | what it does |
|---|---|
| `monitor_<cloud>` | `recflow monitor --cloud <cloud>`, once per cloud of `monitor.clouds` |
| `signal_drift` | on a `drift` verdict, an event on `recflow://monitoring/drift`; else skipped |

Each monitor task compares the last `monitor.window_hours` of the cloud's request log with its
production version's reference, and writes the report, summary, gauges and trend under
`monitor.out/<cloud>/`. `signal_drift` reads each cloud's `latest.json` and the summary it
names, checked against its sha256; it emits at most one event per `monitor.debounce_hours`.

The event's extra is the reason, `{"kind": "drift", "cloud", "window", "summary_sha256",
"features"}`; `recsys_retrain` is scheduled on this asset as well as on its cron, and its
`register` task records the reason in the new version's lineage. When an event is emitted, a
warning names the drift, and with `monitor.webhook_url` set it is POSTed there as JSON.

A drift verdict is a finding, not a failure: the monitor tasks succeed on it. Schedule, clouds
and debounce live in the `monitor:` section of `params.yaml`; retries and timeouts in
`airflow:`, and the `execution:` section chooses local tasks or Kubernetes pods.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from recflow_airflow.execution import monitor_tasks
from recflow_airflow.monitoring import DRIFT_ASSET, SIGNAL_TASK, DriftAlert, signal_drift
from recflow_airflow.project import default_args, project_params, project_root

ROOT = project_root(Path(__file__).resolve().parent)
PARAMS = project_params(ROOT)
AIRFLOW = PARAMS.airflow
MONITOR = PARAMS.monitor

with DAG(
    dag_id="recsys_drift_monitor",
    description="Monitor each cloud's traffic for drift; a drift asks recsys_retrain to retrain.",
    doc_md=__doc__,
    schedule=MONITOR.schedule,
    start_date=dt.datetime.combine(AIRFLOW.start_date, dt.time(), tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(PARAMS),
    tags=[*AIRFLOW.tags, "monitoring"],
):
    monitors = monitor_tasks(PARAMS, ROOT)
    signal = PythonOperator(
        task_id=SIGNAL_TASK,
        python_callable=signal_drift,
        op_kwargs={
            "out": str(ROOT / MONITOR.out),
            "clouds": list(MONITOR.clouds),
            "debounce_hours": MONITOR.debounce_hours,
        },
        # the past drift events (the debounce) and the new one
        inlets=[DRIFT_ASSET],
        outlets=[DRIFT_ASSET],
        on_success_callback=DriftAlert(MONITOR.webhook_url, MONITOR.webhook_timeout_s),
        # a broken summary stays broken on a retry
        retries=0,
    )
    list(monitors.values()) >> signal
