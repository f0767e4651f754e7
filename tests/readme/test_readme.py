"""Every shell example of the README runs as printed, so the README cannot drift from the code.

The fast checks read the README: each shell block is runnable as printed (no placeholder) or
named in ``COVERED_ELSEWHERE`` with the tests that run it; each synopsis form has a concrete
example; each named test exists. The slow test runs the shell blocks in the README's order on
a copy of the project with the ``tiny`` preset: the chain of "The stages" first, which leaves the
state the later examples read (a registered, deployed version); a ``server`` block's server
runs on a free loopback port (``PORT``) while the blocks after it run, and is stopped at the
next ``server`` block or at the end.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.core.project import interpreter_env
from pipelines.core.waiting import wait_until
from pipelines.registry.loopback import free_port
from tests.conftest import PROJECT_ROOT
from tests.integration.project import TINY_OVERRIDES, copy_project
from tests.readme.blocks import (
    PLACEHOLDER,
    Block,
    covers,
    form_key,
    read_blocks,
    synopsis_forms,
)

README = PROJECT_ROOT / "README.md"
BLOCKS = read_blocks(README)

# shell blocks that a test of their own runs (``make run`` is the main job; re-running it here
# would double the suite's longest test), by their first command
COVERED_ELSEWHERE: dict[str, tuple[str, ...]] = {
    "make run": (
        "tests/integration/test_airflow_run.py::test_the_job_and_every_task_succeed",
        "tests/unit/test_packaging.py::test_makefile_has_the_documented_targets",
        "tests/unit/test_packaging.py::test_ci_runs_the_readme_test_command",
    ),
    "make up": (
        "tests/integration/test_stack.py::test_make_up_serves_everything_on_loopback_and_make_down_stops_exactly_it",
        "tests/unit/test_packaging.py::test_makefile_has_the_documented_targets",
    ),
    "make drift-demo": (
        "tests/integration/test_drift_demo.py::test_a_drifted_day_triggers_the_retrain_that_names_it",
        "tests/integration/test_drift_demo.py::test_a_day_without_drift_starts_nothing",
        "tests/unit/test_packaging.py::test_makefile_has_the_documented_targets",
    ),
}
# synopsis forms without a shell example here, and the tests that run them
FORMS_ELSEWHERE: dict[tuple[str, ...], tuple[str, ...]] = {
    ("recflow deploy approve",): (
        "tests/rollout/test_cli.py::test_status_approve_and_rollback_without_a_rollout",
        "tests/rollout/test_lifecycle.py::test_the_public_cloud_waits_for_approval",
    ),
    ("recflow deploy reject", "--reason"): (
        "tests/rollout/test_approval.py::test_the_approve_and_reject_commands",
        "tests/rollout/test_approval.py::test_deploying_the_next_target_after_a_reject_fails_naming_who",
    ),
    ("recflow deploy", "--from-alias", "--target"): (
        "tests/rollout/test_targets.py::test_one_target_at_a_time_then_the_public_target_resumes",
    ),
    ("recflow deploy", "--rollback", "--reason"): (
        "tests/rollout/test_cli.py::test_status_approve_and_rollback_without_a_rollout",
        "tests/rollout/test_lifecycle.py::test_a_finished_rollout_is_rolled_back_by_hand",
    ),
}
# what a block's output must hold, by the start of one of its commands
EXPECTED_OUTPUT: dict[str, tuple[str, ...]] = {
    "recflow registry list --cloud private": ("not verified: store 'public'", "0 problem(s)"),
    "mv stores/private stores/private.replaced": ("restored ", "0 problem(s)"),
    "curl ": ('"model_version"', '"fallback"'),
    'python -m pipelines.registry.loopback -- recflow deploy "$version" --dry-run': (
        "plan: roll out",
    ),
    "RECFLOW_API_TOKENS=client-token recflow replay": ("2000 answered", "errors 0.00%"),
}
# a server must answer /readyz within this bound, or the test fails naming its log
SERVER_START_S = 300


def _name(block: Block) -> str:
    """A block's name in the tables above: its first command, without a trailing comment."""
    return block.commands()[0].split("  #", 1)[0].strip()


def _runnable() -> list[Block]:
    return [b for b in BLOCKS if b.runnable and _name(b) not in COVERED_ELSEWHERE]


def _test_exists(reference: str) -> bool:
    path, _, function = reference.partition("::")
    file = PROJECT_ROOT / path
    if not file.is_file():
        return False
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.FunctionDef) and node.name == function for node in ast.walk(tree)
    )


def test_the_readme_has_shell_examples_and_synopses() -> None:
    assert len(_runnable()) >= 8
    assert any("synopsis" in b.tags for b in BLOCKS)


def test_every_shell_block_runs_as_printed_or_names_its_tests() -> None:
    unrunnable = [
        f"README.md:{b.line}: {line}"
        for b in BLOCKS
        if b.runnable and _name(b) not in COVERED_ELSEWHERE
        for line in b.commands()
        if PLACEHOLDER.search(line)
    ]
    assert not unrunnable, "placeholders in shell blocks (use a text synopsis):\n" + "\n".join(
        unrunnable
    )


def test_every_covering_test_exists_and_every_entry_is_used() -> None:
    names = {_name(b) for b in BLOCKS if b.runnable}
    assert set(COVERED_ELSEWHERE) <= names, set(COVERED_ELSEWHERE) - names
    forms = {form_key(f) for b in BLOCKS if not b.runnable for f in synopsis_forms(b)}
    assert set(FORMS_ELSEWHERE) <= forms, set(FORMS_ELSEWHERE) - forms
    references = [
        r for refs in (*COVERED_ELSEWHERE.values(), *FORMS_ELSEWHERE.values()) for r in refs
    ]
    missing = [r for r in references if not _test_exists(r)]
    assert not missing, missing


def test_every_synopsis_form_has_a_concrete_example() -> None:
    examples = [command for b in _runnable() for command in b.commands()]
    uncovered = [
        f"README.md:{b.line}: {form}"
        for b in BLOCKS
        if not b.runnable
        for form in synopsis_forms(b)
        if form_key(form) not in FORMS_ELSEWHERE
        and not any(covers(example, form_key(form)) for example in examples)
    ]
    assert not uncovered, "forms without a runnable example:\n" + "\n".join(uncovered)


def test_the_block_reader_finds_lines_tags_and_unclosed_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n```bash server\nrecflow serve \\\n  --port 1\n```\n```\nplain\n```\n")
    served, plain = read_blocks(page)
    assert (served.line, served.lang, served.tags) == (2, "bash", ("server",))
    assert served.runnable and served.commands() == ["recflow serve    --port 1"]
    assert (plain.line, plain.lang, plain.runnable) == (6, "", False)
    page.write_text("```bash\nmake run\n")
    with pytest.raises(ValueError, match=r"page\.md:1: a fenced block is never closed"):
        read_blocks(page)


def test_a_form_is_covered_only_with_its_required_options() -> None:
    key = form_key("recflow deploy --rollback --reason R [VERSION]")
    assert key == ("recflow deploy", "--rollback", "--reason")
    assert covers('recflow deploy --rollback --reason "odd results"', key)
    assert not covers("recflow deploy status", key)
    assert form_key("recflow registry show VERSION [--cloud C]") == ("recflow registry show",)
    assert covers('version=$(x); recflow registry show "$version"', ("recflow registry show",))


@dataclass
class Outcome:
    """What a block did: its exit code, its output (both streams) and its standard output."""

    returncode: int
    output: str
    stdout: str = ""


class ReadmeRun:
    """The README's shell blocks run in order on one project copy; each at most once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.outcomes: dict[int, Outcome] = {}
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = root / "readme-server.log"
        env = interpreter_env()
        for name in list(env):
            if name.startswith(("RECFLOW_", "AWS_")):
                del env[name]
        self.env = {**env, "PORT": str(self.port)}

    def shell(self, script: str, timeout: int = 1200) -> Outcome:
        """``script`` in bash (stopping at the first failing command) in the project."""
        result = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Outcome(result.returncode, result.stdout + result.stderr, result.stdout)

    def through(self, block: Block) -> Outcome:
        """Run every block before ``block`` not run yet, then ``block``; its outcome."""
        for earlier in _runnable():
            if earlier.line not in self.outcomes:
                self.outcomes[earlier.line] = self._run(earlier)
            if earlier.line == block.line:
                break
        return self.outcomes[block.line]

    def _run(self, block: Block) -> Outcome:
        before = BEFORE.get(_name(block))
        if before is not None:
            before(self)
        if "server" in block.tags:
            return self._start_server(block)
        return self.shell(block.text)

    def _start_server(self, block: Block) -> Outcome:
        self.stop_server()
        log = self.server_log.open("ab")
        self.server = subprocess.Popen(
            ["bash", "-e", "-c", block.text],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = self.server

        def up() -> bool:
            return server.poll() is not None or _ready(self.port)

        # the limit only ends a hung test: nothing passes or fails by how fast it came
        if (
            not wait_until(up, timeout_s=SERVER_START_S, interval_s=0.5)
            or server.poll() is not None
        ):
            self.stop_server()
            return Outcome(1, "the server never became ready:\n" + self._log_tail())
        return Outcome(0, self._log_tail())

    def _log_tail(self) -> str:
        return self.server_log.read_text(errors="replace")[-5000:]

    def stop_server(self) -> None:
        """Stop the running server as Ctrl-C does (its whole process group)."""
        if self.server is None or self.server.poll() is not None:
            self.server = None
            return
        os.killpg(self.server.pid, signal.SIGINT)
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()
        self.server = None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _second_day(run: ReadmeRun) -> None:
    """A second version in production in the private cloud, as a second day's run leaves it: a
    candidate trained with another seed, optimized, judged, registered and promoted."""
    before = run.shell("recflow registry list --cloud private --json")
    assert before.returncode == 0, before.output
    built = run.shell(
        "recflow train --params params.yaml --prepared data/prepared --out models/day2 "
        "--config-json '{\"seed\": 2}'\n"
        "recflow optimize --params params.yaml --model models/day2/model.pt "
        "--out models/day2/optimized\n"
        "recflow evaluate --params params.yaml --candidate models/day2 "
        "--out models/day2/evaluation\n"
        "python -m pipelines.registry.loopback -- "
        "recflow register --params params.yaml --candidate models/day2\n"
        "recflow registry list --cloud private --json"
    )
    assert built.returncode == 0, built.output[-6000:]
    first = {row["id"] for row in json.loads(before.stdout)}
    (version,) = {row["id"] for row in json.loads(built.stdout)} - first
    promoted = run.shell(
        f"recflow registry promote {version} --alias production --cloud private "
        "--reason 'second day rollout'"
    )
    assert promoted.returncode == 0, promoted.output


BEFORE = {"recflow registry list --cloud private": _second_day}


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeRun]:
    """A copy of the project on the ``tiny`` preset, on which the blocks run in order."""
    root = copy_project(tmp_path_factory.mktemp("readme") / "project", TINY_OVERRIDES)
    run = ReadmeRun(root)
    try:
        yield run
    finally:
        run.stop_server()


@pytest.mark.slow
@pytest.mark.parametrize("block", _runnable(), ids=lambda b: f"README.md:{b.line}")
def test_the_shell_block_runs_as_printed(readme_run: ReadmeRun, block: Block) -> None:
    outcome = readme_run.through(block)
    assert outcome.returncode == 0, f"README.md:{block.line} failed:\n{outcome.output[-6000:]}"
    assert "Traceback" not in outcome.output, outcome.output[-6000:]
    expected_output = [
        text
        for start, texts in EXPECTED_OUTPUT.items()
        if any(command.startswith(start) for command in block.commands())
        for text in texts
    ]
    for expected in expected_output:
        assert expected in outcome.output, f"{expected!r} not in:\n{outcome.output[-6000:]}"
