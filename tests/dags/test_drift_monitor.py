"""The drift loop: the drift DAG's tasks, the signal and its debounce, the alert, the reason.

Fast tests call the plugin's functions with hand-written monitor outputs and stand-ins for
Airflow's event accessors; one slow test runs ``signal_drift`` twice under a real Airflow (on
SQLite, in a home of its own) and reads the asset events Airflow recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml
from recflow_airflow.execution import monitor_task_id, monitor_tasks
from recflow_airflow.monitoring import (
    DRIFT_ASSET,
    LATEST_FILE,
    SIGNAL_TASK,
    DriftAlert,
    alert_payload,
    debounce,
    drift_reason,
    read_finding,
    signal_drift,
    trigger_text,
)
from recflow_airflow.scripts import TRIGGER_TEMPLATE

from pipelines.core.errors import InputError
from pipelines.core.params import Params
from pipelines.stages.table import TRIGGER_ENV, stage, stage_command

DRIFT_DAG_ID = "recsys_drift_monitor"
RETRAIN_DAG_ID = "recsys_retrain"
T0 = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)
WINDOW = "20261205T100000Z--20261206T100000Z"


def write_monitor_run(
    out: Path,
    cloud: str,
    verdict: str,
    drifted: tuple[str, ...] = (),
    window: str = WINDOW,
) -> str:
    """A monitor run's files as ``recflow monitor`` leaves them; returns the summary's sha256."""
    since, until = window.split("--")
    summary = {
        "schema_version": 1,
        "verdict": verdict,
        "cloud": cloud,
        "window": {"since": since, "until": until},
        "drifted": [
            {"feature": name, "method": "jensenshannon", "score": 0.31, "threshold": 0.1}
            for name in drifted
        ],
        "reference": {"version": "0123456789abcdef", "kind": "version"},
    }
    folder = out / cloud / window
    folder.mkdir(parents=True, exist_ok=True)
    data = json.dumps(summary, indent=2).encode()
    (folder / "summary.json").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    latest = {"summary": f"{window}/summary.json", "sha256": digest}
    (out / cloud / LATEST_FILE).write_text(json.dumps(latest))
    return digest


# --- the DAGs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift_dag(dagbag: Any) -> Any:
    assert not dagbag.import_errors, dagbag.import_errors
    return dagbag.dags[DRIFT_DAG_ID]


def test_both_dags_parse(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert {DRIFT_DAG_ID, RETRAIN_DAG_ID} <= set(dagbag.dag_ids)


def test_retrain_runs_on_its_cron_or_on_the_drift_asset(dag: Any, params: Params) -> None:
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    timetable = dag.timetable
    assert isinstance(timetable, AssetOrTimeSchedule)
    assert timetable.asset_condition == DRIFT_ASSET
    assert isinstance(timetable.timetable, CronTriggerTimetable)
    assert timetable.timetable.expression == params.airflow.schedule
    assert DRIFT_ASSET.uri == "recflow://monitoring/drift"
    assert DRIFT_ASSET.name == "recsys_drift"


def test_drift_dag_monitors_each_cloud_then_signals(drift_dag: Any, params: Params) -> None:
    from airflow.sdk import CronTriggerTimetable

    clouds = list(params.monitor.clouds)
    monitors = [monitor_task_id(cloud) for cloud in clouds]
    assert [t.task_id for t in drift_dag.topological_sort()] == [*monitors, SIGNAL_TASK]
    signal = drift_dag.get_task(SIGNAL_TASK)
    assert set(signal.upstream_task_ids) == set(monitors)
    assert signal.outlets == [DRIFT_ASSET]
    assert signal.inlets == [DRIFT_ASSET]
    assert signal.op_kwargs["clouds"] == clouds
    assert signal.op_kwargs["debounce_hours"] == params.monitor.debounce_hours
    assert [type(c).__name__ for c in signal.on_success_callback] == ["DriftAlert"]
    assert params.monitor.schedule is not None
    expected = CronTriggerTimetable(params.monitor.schedule, timezone="UTC").expression
    assert drift_dag.timetable.expression == expected
    assert drift_dag.catchup is False
    assert drift_dag.max_active_runs == 1


def test_monitor_tasks_run_the_stage_command_per_cloud(
    drift_dag: Any, params: Params, project_root: Path
) -> None:
    chain = stage_command(stage("monitor"), params)
    assert chain.startswith("python -m pipelines.stages.monitor --params params.yaml --all-clouds")
    # the chain's monitor judges every cloud; the hourly DAG has a task per cloud instead
    command = chain.replace(" --all-clouds", "")
    for cloud in params.monitor.clouds:
        task = drift_dag.get_task(monitor_task_id(cloud))
        assert type(task).__name__ == "BashOperator"
        assert f"{command} --cloud {cloud}" in task.bash_command.splitlines()
        assert Path(task.cwd) == project_root
        assert task.retries == params.airflow.retries
        # the monitor must not write a run's date into params.yaml, nor need one
        assert "set_logical_date" not in task.bash_command
        assert "{{" not in json.dumps(task.env)


def test_monitor_pods_on_kubernetes_one_per_cloud(params: Params, project_root: Path) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import DAG

    on_k8s = params.model_copy(
        update={"execution": params.execution.model_copy(update={"backend": "kubernetes"})}
    )
    with DAG(dag_id="recsys_drift_monitor_k8s_probe", schedule=None):
        tasks = monitor_tasks(on_k8s, project_root)
    assert list(tasks) == list(params.monitor.clouds)
    names = set()
    for cloud, task in tasks.items():
        assert isinstance(task, KubernetesPodOperator)
        assert task.task_id == f"monitor_{cloud}"
        pod = task.pod_template_dict
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
        names.add(pod["metadata"]["name"])
        (container,) = pod["spec"]["containers"]
        script = container["command"][2]
        command = stage_command(stage("monitor"), on_k8s).replace(" --all-clouds", "")
        assert f"{command} --cloud {cloud}" in script.splitlines()
        assert "set_logical_date" not in script
    assert names == {f"recflow-monitor-{cloud}" for cloud in params.monitor.clouds}


def test_retrain_tasks_carry_the_trigger_reason(dag: Any) -> None:
    event = SimpleNamespace(timestamp=T0, extra={"kind": "drift", "cloud": "public"})
    env = dag.get_template_env()
    # every stage task (an approval runs no command)
    for task in [t for t in dag.tasks if hasattr(t, "env")]:
        assert task.env[TRIGGER_ENV] == TRIGGER_TEMPLATE
        rendered = env.from_string(task.env[TRIGGER_ENV])
        assert rendered.render(triggering_asset_events={DRIFT_ASSET: [event]}) == (
            '{"cloud":"public","kind":"drift"}'
        )
        assert rendered.render(triggering_asset_events={}) == ""
    assert f'--trigger "${TRIGGER_ENV}"' in dag.get_task("register").bash_command


# --- the debounce ----------------------------------------------------------------------------


def _emitted(verdict_times: list[dt.datetime], hours: float) -> list[dt.datetime]:
    """The events a drift verdict at each time emits, each decision seeing those before it."""
    events: list[dt.datetime] = []
    for now in verdict_times:
        if debounce(events, now, hours).emit:
            events.append(now)
    return events


def test_two_drifts_inside_the_debounce_window_emit_one_event() -> None:
    hourly = [T0 + dt.timedelta(hours=h) for h in range(3)]
    assert _emitted(hourly, 24.0) == [T0]


def test_a_drift_after_the_window_emits_again() -> None:
    times = [T0, T0 + dt.timedelta(hours=23, minutes=59), T0 + dt.timedelta(hours=24)]
    assert _emitted(times, 24.0) == [T0, T0 + dt.timedelta(hours=24)]


def test_debounce_decision_names_the_last_event_and_when_the_next_may_come() -> None:
    held = debounce([T0 - dt.timedelta(hours=30), T0], T0 + dt.timedelta(hours=2), 6.0)
    assert (held.emit, held.last, held.next_allowed) == (False, T0, T0 + dt.timedelta(hours=6))
    assert debounce([], T0, 6.0).emit
    # an event stamped after "now" (another clock) still holds the next one back
    assert not debounce([T0 + dt.timedelta(minutes=5)], T0, 6.0).emit
    # no debounce: every drift asks for a retrain
    burst = [T0, T0, T0 + dt.timedelta(seconds=1)]
    assert _emitted(burst, 0.0) == burst


# --- the monitor's files ---------------------------------------------------------------------


def test_read_finding_checks_the_summary_against_its_sha256(tmp_path: Path) -> None:
    digest = write_monitor_run(tmp_path, "public", "drift", ("history_category", "top_category"))
    finding = read_finding(tmp_path, "public")
    assert finding is not None
    assert (finding.cloud, finding.verdict, finding.window) == ("public", "drift", WINDOW)
    assert finding.names == ("history_category", "top_category")
    assert [f["score"] for f in finding.features] == [0.31, 0.31]
    assert finding.summary_sha256 == digest
    assert read_finding(tmp_path, "private") is None

    summary = tmp_path / "public" / WINDOW / "summary.json"
    summary.write_text(summary.read_text().replace('"drift"', '"no_drift"', 1))
    with pytest.raises(InputError, match=r"summary\.json does not match its sha256"):
        read_finding(tmp_path, "public")


@pytest.mark.parametrize(
    ("latest", "message"),
    [
        ("{not json", "is not readable JSON"),
        ('{"summary": 3}', "must hold"),
        ('{"summary": "../../elsewhere/summary.json", "sha256": "00"}', "outside"),
        ('{"summary": "missing/summary.json", "sha256": "00"}', "unreadable"),
    ],
    ids=["not-json", "wrong-shape", "outside-the-cloud", "missing-summary"],
)
def test_read_finding_names_a_broken_latest_file(tmp_path: Path, latest: str, message: str) -> None:
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / LATEST_FILE).write_text(latest)
    with pytest.raises(InputError, match=message) as raised:
        read_finding(tmp_path, "private")
    assert "private" in str(raised.value)


# --- the signal_drift task -------------------------------------------------------------------


class FakeInletEvents:
    """Airflow's inlet events of one asset: ``after(iso)`` narrows to events at or after it."""

    def __init__(self, events: list[SimpleNamespace]) -> None:
        self.events = events
        self.asked_after: str | None = None

    def after(self, after: str) -> list[SimpleNamespace]:
        self.asked_after = after
        since = dt.datetime.fromisoformat(after)
        return [e for e in self.events if e.timestamp >= since]


def _context(past: list[SimpleNamespace]) -> dict[str, Any]:
    return {
        "inlet_events": {DRIFT_ASSET: FakeInletEvents(past)},
        "outlet_events": {DRIFT_ASSET: SimpleNamespace(extra={})},
    }


def _signal(out: Path, context: dict[str, Any], hours: float = 24.0) -> dict[str, Any]:
    return signal_drift(str(out), ["private", "public"], hours, now=T0, **context)


def test_signal_emits_the_reason_of_the_first_drifted_cloud(tmp_path: Path) -> None:
    write_monitor_run(tmp_path, "private", "no_drift")
    digest = write_monitor_run(tmp_path, "public", "drift", ("history_popularity",))
    context = _context([])
    reason = _signal(tmp_path, context)
    expected = {
        "kind": "drift",
        "cloud": "public",
        "window": WINDOW,
        "summary_sha256": digest,
        "features": [
            {
                "feature": "history_popularity",
                "method": "jensenshannon",
                "score": 0.31,
                "threshold": 0.1,
            }
        ],
    }
    assert reason == expected
    assert context["outlet_events"][DRIFT_ASSET].extra == expected


@pytest.mark.parametrize("verdict", ["no_drift", "insufficient_data"])
def test_signal_skips_without_drift(tmp_path: Path, verdict: str) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    write_monitor_run(tmp_path, "private", verdict)
    context = _context([])
    with pytest.raises(AirflowSkipException, match="no drift"):
        _signal(tmp_path, context)
    assert context["outlet_events"][DRIFT_ASSET].extra == {}


def test_signal_is_debounced_by_past_drift_events_only(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    write_monitor_run(tmp_path, "private", "drift", ("history_length",))
    recent = T0 - dt.timedelta(minutes=5)
    # a person's event (no drift reason) does not hold the drift back
    manual = SimpleNamespace(timestamp=recent, extra={})
    assert _signal(tmp_path, _context([manual]))["cloud"] == "private"

    drift = SimpleNamespace(timestamp=recent, extra={"kind": "drift", "cloud": "private"})
    context = _context([manual, drift])
    with pytest.raises(AirflowSkipException, match=r"debounce_hours 24"):
        _signal(tmp_path, context)
    assert context["outlet_events"][DRIFT_ASSET].extra == {}
    # only the events inside the debounce window are asked for
    asked = context["inlet_events"][DRIFT_ASSET].asked_after
    assert dt.datetime.fromisoformat(asked) == T0 - dt.timedelta(hours=24)
    # a drift event older than the window does not hold it back
    old = SimpleNamespace(timestamp=T0 - dt.timedelta(hours=25), extra={"kind": "drift"})
    assert _signal(tmp_path, _context([old]))["cloud"] == "private"


def test_signal_fails_on_a_tampered_summary(tmp_path: Path) -> None:
    write_monitor_run(tmp_path, "public", "drift", ("top_category",))
    summary = tmp_path / "public" / WINDOW / "summary.json"
    summary.write_bytes(summary.read_bytes()[:-10])
    with pytest.raises(InputError, match="sha256"):
        _signal(tmp_path, _context([]))


# --- the trigger reason ----------------------------------------------------------------------


def test_trigger_text_is_the_newest_drift_reason_as_json() -> None:
    from airflow.sdk import Asset

    older = SimpleNamespace(timestamp=T0, extra={"kind": "drift", "cloud": "private"})
    newer = SimpleNamespace(
        timestamp=T0 + dt.timedelta(hours=1),
        extra={"kind": "drift", "cloud": "public", "features": ["top_category"]},
    )
    other = SimpleNamespace(timestamp=T0 + dt.timedelta(hours=2), extra={"kind": "other"})
    events = {DRIFT_ASSET: [newer, older], Asset("s3://elsewhere/x"): [other]}
    text = trigger_text(events)
    assert json.loads(text) == newer.extra
    assert text == '{"cloud":"public","features":["top_category"],"kind":"drift"}'
    # an event of the asset without a reason still says what started the run
    bare = SimpleNamespace(timestamp=T0, extra={})
    assert json.loads(trigger_text({DRIFT_ASSET: [bare]})) == {
        "kind": "asset",
        "asset": "recflow://monitoring/drift",
    }


def test_trigger_text_reads_airflows_own_triggering_events(dag: Any) -> None:
    """The accessor a task's context holds, built from the records the execution API sends."""
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    def record(hours: int, extra: dict[str, Any]) -> AssetEventDagRunReferenceResult:
        asset = AssetReferenceAssetEventDagRun(name=DRIFT_ASSET.name, uri=DRIFT_ASSET.uri, extra={})
        return AssetEventDagRunReferenceResult(
            asset=asset,
            extra=extra,
            source_task_id=SIGNAL_TASK,
            source_dag_id=DRIFT_DAG_ID,
            source_run_id=f"scheduled__2026-12-06T{hours:02d}:00:00+00:00",
            source_map_index=-1,
            source_aliases=[],
            timestamp=T0 + dt.timedelta(hours=hours),
        )

    reason = {**REASON, "cloud": "private"}
    accessor = TriggeringAssetEventsAccessor.build([record(2, reason), record(1, REASON)])
    template = dag.get_template_env().from_string(dag.get_task("register").env[TRIGGER_ENV])
    text = template.render(triggering_asset_events=accessor)
    assert json.loads(text) == reason
    empty = TriggeringAssetEventsAccessor.build([])
    assert template.render(triggering_asset_events=empty) == ""


def test_trigger_text_is_empty_for_a_run_not_started_by_drift() -> None:
    import jinja2
    from airflow.sdk import Asset

    assert trigger_text({}) == ""
    assert trigger_text(None) == ""
    assert trigger_text(jinja2.StrictUndefined(name="triggering_asset_events")) == ""
    other = SimpleNamespace(timestamp=T0, extra={"kind": "drift"})
    assert trigger_text({Asset("s3://elsewhere/x"): [other]}) == ""


# --- the alert -------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook receiver: its URL and the JSON bodies it received."""
    received: list[dict[str, Any]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/secret-token", received
    finally:
        server.shutdown()
        server.server_close()


def _alert_context(reason: dict[str, Any]) -> dict[str, Any]:
    return {
        "outlet_events": {DRIFT_ASSET: SimpleNamespace(extra=reason)},
        "dag_run": SimpleNamespace(dag_id=DRIFT_DAG_ID, run_id="scheduled__2026-12-06T10:00:00"),
    }


REASON = {
    "kind": "drift",
    "cloud": "public",
    "window": WINDOW,
    "summary_sha256": "ab" * 32,
    "features": ["history_category", "top_popularity"],
}


def test_alert_logs_and_posts_the_reason(
    webhook: tuple[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, received = webhook
    with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
        DriftAlert(url, timeout_s=5.0).notify(_alert_context(REASON))
    (body,) = received
    assert body == alert_payload(REASON, DRIFT_DAG_ID, "scheduled__2026-12-06T10:00:00")
    assert body["reason"] == REASON
    assert body["summary"] == (
        f"drift in public (drifted: history_category, top_popularity, window {WINDOW}): "
        "recsys_retrain asked for a retrain"
    )
    assert [r.getMessage() for r in caplog.records] == [body["summary"]]


def test_alert_without_a_webhook_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
        DriftAlert(None, timeout_s=5.0).notify(_alert_context(REASON))
        DriftAlert(None, timeout_s=5.0).notify(_alert_context({}))
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("drift in public")


def test_a_failing_webhook_is_logged_without_its_secret(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/secret-token"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="recflow.monitor"):
        DriftAlert(url, timeout_s=2.0).notify(_alert_context(REASON))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[1].startswith("the drift alert's webhook at 127.0.0.1 failed")
    assert all("secret-token" not in m for m in messages)


def test_drift_reason_shape() -> None:
    from recflow_airflow.monitoring import Finding

    finding = Finding("private", "drift", WINDOW, "cd" * 32, ("unknown_share",))
    assert drift_reason(finding) == {
        "kind": "drift",
        "cloud": "private",
        "window": WINDOW,
        "summary_sha256": "cd" * 32,
        "features": ["unknown_share"],
    }


# --- under a real Airflow --------------------------------------------------------------------

_ASSET_EVENTS = """
import json
from sqlalchemy import select
from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
from airflow.models.dag import DagModel
from airflow.utils.session import create_session
with create_session() as session:
    asset = session.scalar(select(AssetModel).where(AssetModel.uri == {uri!r}))
    events = session.scalars(
        select(AssetEvent).where(AssetEvent.asset_id == asset.id).order_by(AssetEvent.id)
    ).all()
    queued = session.scalars(
        select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset.id)
    ).all()
    # what the scheduler asks before it creates asset-triggered runs
    _, ready = DagModel.dags_needing_dagruns(session)
    print(json.dumps({{
        "events": [
            {{"extra": e.extra, "dag_id": e.source_dag_id, "task_id": e.source_task_id}}
            for e in events
        ],
        "queued": sorted(queued),
        "ready": sorted(ready),
    }}))
"""


@pytest.fixture
def airflow_home_project(
    tmp_path: Path, project_root: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> tuple[Path, dict[str, str]]:
    """The DAGs, plugins and params (alerts to ``webhook``) with an Airflow home and database.

    ``recsys_retrain`` is unpaused, as under a running scheduler: Airflow queues asset events
    only for DAGs that are not paused.
    """
    from pipelines.main_job.airflow_cli import airflow_command, airflow_env

    root = tmp_path / "project"
    root.mkdir()
    for folder in ("dags", "plugins"):
        shutil.copytree(
            project_root / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["monitor"]["webhook_url"] = webhook[0]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = airflow_env(root, root / ".airflow")
    for args in (("db", "migrate"), ("dags", "reserialize"), ("dags", "unpause", RETRAIN_DAG_ID)):
        result = subprocess.run(
            airflow_command(*args), cwd=root, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return root, env


@pytest.mark.slow
def test_signal_under_airflow_emits_one_event_for_two_drifts(
    airflow_home_project: tuple[Path, dict[str, str]],
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    from pipelines.main_job.airflow_cli import airflow_command

    root, env = airflow_home_project
    out = root / "reports" / "monitoring"
    digest = write_monitor_run(out, "public", "drift", ("history_category",))
    write_monitor_run(out, "private", "no_drift")

    def run_signal(run_date: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            airflow_command("tasks", "test", DRIFT_DAG_ID, SIGNAL_TASK, run_date),
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = run_signal("2026-12-06T10:00:00+00:00")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "recsys_retrain asked for a retrain" in first.stdout + first.stderr
    # the monitor runs again an hour later and still finds drift, in a new window
    later = "20261205T110000Z--20261206T110000Z"
    write_monitor_run(out, "public", "drift", ("history_category",), window=later)
    second = run_signal("2026-12-06T11:00:00+00:00")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "debounce_hours 24" in second.stdout + second.stderr

    probe = subprocess.run(
        [sys.executable, "-c", _ASSET_EVENTS.format(uri=DRIFT_ASSET.uri)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    recorded = json.loads(probe.stdout.strip().splitlines()[-1])
    assert recorded["events"] == [
        {
            "extra": {
                "kind": "drift",
                "cloud": "public",
                "window": WINDOW,
                "summary_sha256": digest,
                "features": [
                    {
                        "feature": "history_category",
                        "method": "jensenshannon",
                        "score": 0.31,
                        "threshold": 0.1,
                    }
                ],
            },
            "dag_id": DRIFT_DAG_ID,
            "task_id": SIGNAL_TASK,
        }
    ]
    # the event asks recsys_retrain for a run: the scheduler starts it from this queue
    assert recorded["queued"] == [RETRAIN_DAG_ID]
    assert recorded["ready"] == [RETRAIN_DAG_ID]
    # one alert, for the one event, to the webhook of params.yaml
    _, received = webhook
    assert [body["reason"] for body in received] == [recorded["events"][0]["extra"]]
    assert received[0]["dag_id"] == DRIFT_DAG_ID
