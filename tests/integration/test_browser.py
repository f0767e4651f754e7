"""Airflow's UI in a real browser: Debian's chromium, driven by Playwright, on ``make up``.

``python -m pipelines.main_job.stack up`` (what ``make up`` runs) starts the local stack for a
tiny copy of the project on a free port of 127.0.0.1, with the login from
``RECFLOW_AIRFLOW_PASSWORD``; the copy has no production version yet, so the stack starts no
fleet (the deploy tasks start their own). Then a person's steps on ``recsys_retrain``, each a
helper below: log in (:func:`login`), open the DAG's trigger form, fill it (:func:`fill_form`:
Airflow's own logical date, the data source ``tiny``, approval required), trigger
(:func:`trigger`), wait until ``approve_public`` waits in "Required actions"
(:func:`wait_for_approval`), answer it with a reason (:func:`approve`, :func:`reject`) and wait
for the run (:func:`wait_for_run`). Approved, the public rollout runs; a second run with one
more epoch (a new candidate) is rejected, ``deploy_public`` is skipped and ``recflow registry
history`` shows the private cloud rolled back by the UI's user, with the reason.

Screenshots of each step are kept in the test's temporary folder (printed by the test; pytest
keeps the last runs' folders), and the approval page also as ``reports/ui/approval.png`` in
the copy (the README's picture is one of these).

The browser is Debian's ``chromium`` (``/usr/bin/chromium``), installed with apt-get when it is
missing; never a browser download. Where it cannot be installed the test skips, saying why.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from pipelines.core.project import interpreter_env
from pipelines.core.waiting import wait_until
from pipelines.main_job.airflow_cli import DAG_ID, DB_URL_ENV
from pipelines.main_job.stack import ENV_FILE, read_state, stack_dir
from pipelines.main_job.ui import PASSWORD_ENV, USER
from pipelines.registry.stores.credentials import endpoint_env
from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, API_TOKENS_ENV
from tests.integration.conftest import AIRFLOW_OVERRIDES
from tests.integration.project import copy_project

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_PACKAGE = "chromium"
# The copy's cron fires on 29 February only (next in 2028), so unpausing the DAG creates no
# scheduled run beside the ones the test triggers: a new DAG is paused, "Unpause on trigger"
# (ticked by default, as a person leaves it) unpauses it, and with the project's daily cron the
# timetable would then create the latest missed run (skipped by the first task, but run in
# earnest in the hour after 02:00 UTC)
COPY_OVERRIDES = {
    **AIRFLOW_OVERRIDES,
    "airflow": {**AIRFLOW_OVERRIDES["airflow"], "schedule": "0 2 29 2 *"},
}
APPROVAL_TASK = "approve_public"
# the trigger form of recsys_retrain, by parameter name (``logical_date``: Airflow's own field,
# the data date); a name the form lacks fails the test, so a renamed field is noticed here
APPROVED_FORM: dict[str, Any] = {
    "logical_date": dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC),
    "source": "tiny",
    "require_approval": True,
}
# the same day and data, one more epoch: a new model, so a new candidate (training and what
# follows it run again, the data stages are up to date); another time, so another run
REJECTED_FORM: dict[str, Any] = {
    **APPROVED_FORM,
    "logical_date": dt.datetime(2026, 11, 20, 7, 0, tzinfo=dt.UTC),
    "epochs": 3,
}
APPROVE_REASON = "gate passed, private canary healthy"
REJECT_REASON = "hold the public cloud: a second candidate on the same day"
# the README's picture of the approval page, in the copy
APPROVAL_SHOT = Path("reports") / "ui" / "approval.png"
# limits that only end a hung test: nothing passes or fails by how fast it came
UP_TIMEOUT_S = 900
DOWN_TIMEOUT_S = 300
RUN_TIMEOUT_S = 2400
STEP_TIMEOUT_MS = 60_000
DONE = ("success", "failed")
# the whole test: a start, two runs, a stop (Airflow's own limits, not a measure of speed)
TEST_TIMEOUT_S = UP_TIMEOUT_S + 2 * RUN_TIMEOUT_S + DOWN_TIMEOUT_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]
_VERSION = re.compile(r"Roll (\S+) out to public\?")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _install_chromium() -> str | None:
    """Install Debian's chromium with apt-get; None when done, else why it could not be."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get on this machine"
    command = [apt, "install", "-y", "--no-install-recommends", CHROMIUM_PACKAGE]
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            return "not root, and no sudo to run apt-get"
        command = [sudo, "-n", *command]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in ([*command[:-4], "update"], command):
        done = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            return f"{' '.join(step)} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None if CHROMIUM.exists() else f"apt-get installed no {CHROMIUM}"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed when missing; the test skips where it cannot be."""
    if not CHROMIUM.exists():
        why = _install_chromium()
        if why is not None:
            pytest.skip(f"chromium cannot be installed here: {why}")
    return CHROMIUM


@dataclass(frozen=True)
class AirflowUi:
    """The Airflow of a stack that ``make up`` started for a project copy.

    Attributes:
        root: The copy.
        address: The UI's address.
        password: ``admin``'s password (``RECFLOW_AIRFLOW_PASSWORD`` of the stack).
        shots: Where the screenshots go.
        scheduler_log: The scheduler's output.
        env: The environment of a shell that talks to the stack (``stack.env`` sourced).
    """

    root: Path
    address: str
    password: str
    shots: Path
    scheduler_log: Path
    env: dict[str, str]

    def api(self, path: str) -> Any:
        """``GET`` on Airflow's REST API as ``admin``."""
        request = urllib.request.Request(
            self.address + path, headers={"Authorization": f"Bearer {self._token()}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def _token(self) -> str:
        request = urllib.request.Request(
            f"{self.address}/auth/token",
            data=json.dumps({"username": USER, "password": self.password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            token: str = json.loads(answer.read())["access_token"]
            return token

    def shot(self, page: Any, name: str) -> Path:
        """A screenshot of the whole page, kept as the test's artifact."""
        path = self.shots / f"{len(list(self.shots.iterdir())) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def recflow(self, *args: str) -> str:
        """``recflow <args>`` in the copy, as a shell that sourced ``stack.env`` runs it."""
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"recflow {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout


def _env_file(path: Path) -> dict[str, str]:
    """The variables of ``stack.env`` (``export NAME=value`` lines, shell-quoted)."""
    pairs = [shlex.split(line.removeprefix("export "))[0] for line in path.read_text().splitlines()]
    return dict(pair.split("=", 1) for pair in pairs)


def _stack(root: Path, env: dict[str, str], *args: str, timeout: int) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.main_job.stack", *args, "--root", str(root)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUi]:
    """``make up`` for a tiny copy of the project, on a free port; ``make down`` after."""
    base = tmp_path_factory.mktemp("browser")
    root = copy_project(base / "project", COPY_OVERRIDES)
    shots = base / "screenshots"
    shots.mkdir()
    password = secrets.token_urlsafe(16)
    env = interpreter_env()
    env[PASSWORD_ENV] = password
    # this stack's own store server, tokens and SQLite database, whatever this shell has
    for name in (endpoint_env("public"), API_TOKENS_ENV, ADMIN_TOKEN_ENV, DB_URL_ENV):
        env.pop(name, None)
    port = _free_port()
    try:
        print(_stack(root, env, "up", "--port", str(port), timeout=UP_TIMEOUT_S))
        (scheduler,) = [e for e in read_state(root) if e.name == "airflow-scheduler"]
        shell = {**env, **_env_file(stack_dir(root) / ENV_FILE)}
        yield AirflowUi(
            root, f"http://127.0.0.1:{port}", password, shots, Path(scheduler.log), shell
        )
    finally:
        print(f"screenshots: {shots}")
        if read_state(root):
            print(_stack(root, env, "down", timeout=DOWN_TIMEOUT_S))


@pytest.fixture
def page(chromium: Path, airflow_ui: AirflowUi) -> Iterator[Any]:
    """A new browser page of Debian's chromium, headless, in UTC."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=args
        )
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000}, timezone_id="UTC")
            tab.set_default_timeout(STEP_TIMEOUT_MS)
            yield tab
        finally:
            browser.close()


# --- a person's steps in the UI ---------------------------------------------------------------


def login(page: Any, ui: AirflowUi) -> None:
    """Log in as ``admin`` on the simple auth manager's form."""
    page.goto(ui.address + "/")
    page.wait_for_url("**/auth/login**")
    page.locator("input[name=username]").fill(USER)
    page.locator("input[name=password]").fill(ui.password)
    ui.shot(page, "login")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def open_dag(page: Any, ui: AirflowUi, dag_id: str) -> None:
    """The DAG's page, once the DAG processor has parsed it."""

    def parsed() -> bool:
        try:
            return bool(ui.api(f"/api/v2/dags/{dag_id}"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    if not wait_until(parsed, timeout_s=UP_TIMEOUT_S, interval_s=2):
        raise AssertionError(f"Airflow never parsed the DAG {dag_id}")
    page.goto(f"{ui.address}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.wait_for()


def set_logical_date(page: Any, dialog: Any, when: dt.datetime) -> None:
    """Airflow's logical date field: its picker's date and time inputs (UTC), then closed."""
    picker = dialog.get_by_test_id("datetime-input")
    picker.click()
    popover = page.locator("[data-scope=popover][data-part=content][data-state=open]")
    utc = when.astimezone(dt.UTC)
    popover.get_by_placeholder("YYYY/MM/DD").fill(utc.strftime("%Y/%m/%d"))
    popover.get_by_placeholder("HH:mm").fill(utc.strftime("%H:%M"))
    # a click beside the picker closes it
    dialog.get_by_role("heading").first.click()
    popover.wait_for(state="detached")
    shown = utc.strftime("%b %d, %Y %H:%M")
    assert picker.inner_text().strip() == shown, (picker.inner_text(), shown)


def fill_form(page: Any, where: Any, values: Mapping[str, Any]) -> None:
    """Fill a form's fields: ``values`` by parameter name.

    ``logical_date`` is Airflow's own date field (:func:`set_logical_date`). Airflow names every
    other field's input ``element_<parameter>``; the kind of input decides how it is filled: a
    switch (boolean) is set, a drop-down (enum) picks the option, any other (text, number) is
    typed; None empties a field.
    """
    for name, value in values.items():
        if name == "logical_date":
            set_logical_date(page, where, value)
            continue
        field = where.locator(f'[name="element_{name}"]')
        if field.count() != 1:
            raise AssertionError(f"the form has no field {name!r}")
        kind = field.get_attribute("type")
        if kind == "checkbox":
            if field.is_checked() != bool(value):
                # the switch's input is hidden behind its drawn control: click the control
                field.locator("xpath=..").click()
            assert field.is_checked() == bool(value), name
        elif kind == "hidden":  # a drop-down: the visible control is the element with that id
            where.locator(f"#element_{name}").click()
            where.get_by_role("option", name=str(value), exact=True).click()
            assert field.input_value() == str(value), name
        else:
            field.fill("" if value is None else str(value))


def trigger(page: Any, ui: AirflowUi, dag_id: str, values: Mapping[str, Any]) -> str:
    """Open the DAG's trigger form, fill it with ``values``, trigger; the new run's id."""
    open_dag(page, ui, dag_id)
    before = {run["dag_run_id"] for run in _runs(ui, dag_id)}
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    fill_form(page, dialog, values)
    ui.shot(page, f"trigger-form-{dag_id}")
    dialog.get_by_test_id("trigger-dag-submit").click()
    new = wait_until(
        lambda: [r for r in _runs(ui, dag_id) if r["dag_run_id"] not in before],
        timeout_s=STEP_TIMEOUT_MS / 1000,
        interval_s=1,
    )
    if not new:
        ui.shot(page, f"trigger-refused-{dag_id}")
        raise AssertionError(f"no run of {dag_id} after the trigger form was sent")
    (run,) = new
    run_id: str = run["dag_run_id"]
    return run_id


def _runs(ui: AirflowUi, dag_id: str) -> list[dict[str, Any]]:
    try:
        runs: list[dict[str, Any]] = ui.api(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the DAG is not parsed yet
            return []
        raise
    return runs


def _quoted(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def the_run(ui: AirflowUi, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run as the REST API reports it."""
    run: dict[str, Any] = ui.api(f"/api/v2/dags/{dag_id}/dagRuns/{_quoted(run_id)}")
    return run


def task_states(ui: AirflowUi, dag_id: str, run_id: str) -> dict[str, str]:
    """Each task's state in the run."""
    rows = ui.api(f"/api/v2/dags/{dag_id}/dagRuns/{_quoted(run_id)}/taskInstances?limit=100")
    return {row["task_id"]: str(row["state"]) for row in rows["task_instances"]}


def wait_for_run(page: Any, ui: AirflowUi, dag_id: str, run_id: str) -> str:
    """Wait until the run ends; its run page as the browser shows it, screenshot kept."""
    state = wait_until(
        lambda: (s := the_run(ui, dag_id, run_id)["state"]) in DONE and s,
        timeout_s=RUN_TIMEOUT_S,
        interval_s=5,
    )
    page.goto(f"{ui.address}/dags/{dag_id}/runs/{_quoted(run_id)}")
    page.get_by_text(run_id).first.wait_for()
    ui.shot(page, f"run-{dag_id}-{state or 'unfinished'}")
    return str(state or the_run(ui, dag_id, run_id)["state"])


def wait_for_approval(page: Any, ui: AirflowUi, dag_id: str, run_id: str, task_id: str) -> Path:
    """Wait until ``task_id`` awaits a person's answer, and open its "Required actions" page.

    Airflow 3.3 parks a human-in-the-loop task in ``awaiting_input``; the task instance's
    "Required actions" tab shows the subject, the body and a button per option.

    Returns:
        The screenshot of the approval page.
    """

    def waiting() -> bool:
        states = task_states(ui, dag_id, run_id)
        if states.get(task_id) in ("failed", "upstream_failed", "skipped", "success"):
            raise AssertionError(f"{task_id} ended without a person's answer: {states}")
        return states.get(task_id) == "awaiting_input"

    if not wait_until(waiting, timeout_s=RUN_TIMEOUT_S, interval_s=3):
        raise AssertionError(f"{task_id} never awaited input: {task_states(ui, dag_id, run_id)}")
    # an answer before the scheduler has taken in the end of the task's first part (its
    # executor event) makes Airflow 3.3 fail the task ("state changed externally"); a person is
    # never that fast, a test is: wait for the scheduler to say it has
    parked = (
        f"Received executor event with state success for task instance TaskInstanceKey("
        f"dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}'"
    )
    if not wait_until(
        lambda: parked in ui.scheduler_log.read_text(errors="replace"),
        timeout_s=STEP_TIMEOUT_MS / 1000,
        interval_s=1,
    ):
        raise AssertionError(f"the scheduler never took in {task_id}'s wait for input")
    page.goto(f"{ui.address}/dags/{dag_id}/runs/{_quoted(run_id)}/tasks/{task_id}/required_actions")
    page.get_by_test_id("hitl-option-Approve").wait_for()
    return ui.shot(page, f"approval-{dag_id}")


def _answer(page: Any, ui: AirflowUi, option: str, reason: str) -> None:
    """Fill the required action's reason, then press ``option``.

    The page's fields are the task's own ``params`` (named ``element_<name>`` like the trigger
    form's); its buttons, one per option, are enabled once every required field is filled.
    """
    fill_form(page, page, {"reason": reason})
    button = page.get_by_test_id(f"hitl-option-{option}")
    ui.shot(page, f"answer-{option.lower()}")
    button.click()
    # once recorded, the page shows the answer instead of the enabled buttons
    page.get_by_test_id(f"hitl-option-{option}").and_(page.locator(":enabled")).wait_for(
        state="detached"
    )
    ui.shot(page, f"answered-{option.lower()}")


def approve(page: Any, ui: AirflowUi, reason: str) -> None:
    """Press Approve on the open "Required actions" page, with a reason."""
    _answer(page, ui, "Approve", reason)


def reject(page: Any, ui: AirflowUi, reason: str) -> None:
    """Press Reject on the open "Required actions" page, with a reason."""
    _answer(page, ui, "Reject", reason)


def hitl_answer(ui: AirflowUi, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    """What Airflow recorded of the request and its answer: subject, chosen options, who, and
    the fields' values."""
    detail: dict[str, Any] = ui.api(
        f"/api/v2/dags/{dag_id}/dagRuns/{_quoted(run_id)}/taskInstances/{task_id}/-1/hitlDetails"
    )
    return detail


def ledger(ui: AirflowUi, cloud: str) -> list[dict[str, Any]]:
    """``recflow registry history --cloud <cloud> --json``: the cloud's ledger entries."""
    entries: list[dict[str, Any]] = json.loads(
        ui.recflow("registry", "history", "--cloud", cloud, "--alias", "production", "--json")
    )
    return entries


# --- the test ---------------------------------------------------------------------------------


def _run_to_approval(page: Any, ui: AirflowUi, form: Mapping[str, Any]) -> tuple[str, str]:
    """Trigger a run from the form and wait at its approval; the run id and the version."""
    run_id = trigger(page, ui, DAG_ID, form)
    run = the_run(ui, DAG_ID, run_id)
    assert run["run_type"] == "manual"
    assert dt.datetime.fromisoformat(run["logical_date"]) == form["logical_date"]
    fields = {name: value for name, value in form.items() if name != "logical_date"}
    assert {name: run["conf"].get(name) for name in fields} == fields, run["conf"]
    shot = wait_for_approval(page, ui, DAG_ID, run_id, APPROVAL_TASK)
    request = hitl_answer(ui, DAG_ID, run_id, APPROVAL_TASK)
    found = _VERSION.fullmatch(request["subject"])
    assert found, request["subject"]
    version = found.group(1)
    # the page shows what the approver decides on: the subject, the gate, the private cloud
    page.get_by_text(request["subject"]).first.wait_for()
    page.get_by_text("Gate", exact=True).first.wait_for()
    readme_shot = ui.root / APPROVAL_SHOT
    readme_shot.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, readme_shot)
    return run_id, version


def test_a_person_triggers_the_retrain_from_the_form_approves_one_rollout_and_rejects_the_next(
    page: Any, airflow_ui: AirflowUi
) -> None:
    ui = airflow_ui
    login(page, ui)

    # approve: the run succeeds, the public cloud serves the version
    approved_run, approved = _run_to_approval(page, ui, APPROVED_FORM)
    approve(page, ui, APPROVE_REASON)
    assert wait_for_run(page, ui, DAG_ID, approved_run) == "success", task_states(
        ui, DAG_ID, approved_run
    )
    states = task_states(ui, DAG_ID, approved_run)
    assert states["deploy_private"] == states["deploy_public"] == "success", states
    assert set(states.values()) <= {"success", "skipped"}, states
    answer = hitl_answer(ui, DAG_ID, approved_run, APPROVAL_TASK)
    assert answer["chosen_options"] == ["Approve"]
    assert answer["responded_by_user"]["name"] == USER
    assert answer["params_input"].get("reason") == APPROVE_REASON
    assert ledger(ui, "public")[-1]["to_version"] == approved
    assert ledger(ui, "private")[-1]["to_version"] == approved

    # reject a new candidate: deploy_public skipped, the private cloud back on the approved one
    rejected_run, rejected = _run_to_approval(page, ui, REJECTED_FORM)
    assert rejected != approved
    assert ledger(ui, "private")[-1]["to_version"] == rejected
    reject(page, ui, REJECT_REASON)
    assert wait_for_run(page, ui, DAG_ID, rejected_run) == "success", task_states(
        ui, DAG_ID, rejected_run
    )
    states = task_states(ui, DAG_ID, rejected_run)
    assert states["deploy_private"] == "success", states
    assert states[APPROVAL_TASK] == "success", states
    assert states["deploy_public"] == "skipped", states
    answer = hitl_answer(ui, DAG_ID, rejected_run, APPROVAL_TASK)
    assert answer["chosen_options"] == ["Reject"]
    assert answer["params_input"].get("reason") == REJECT_REASON
    rollback = ledger(ui, "private")[-1]
    assert rollback["to_version"] == approved, rollback
    assert rollback["from_version"] == rejected, rollback
    assert rollback["actor"] == USER, rollback
    assert REJECT_REASON in rollback["reason"], rollback
    # the public cloud never saw the rejected version
    assert [e["to_version"] for e in ledger(ui, "public")] == [approved]
    # the runs are the two the person triggered: unpausing the DAG started no scheduled run
    assert sorted(run["run_type"] for run in _runs(ui, DAG_ID)) == ["manual", "manual"]
