"""A local fleet: ``recflow serve --cloud <cloud>`` processes on 127.0.0.1, started for a rollout
and stopped when it ends (or when the controller dies: see ``pipelines.rollout.processes``).

Each server has its own port and run folder and loads versions from its cloud's store; the
tokens and the pseudonymization key reach it through its environment only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from pipelines.core.errors import RecflowError
from pipelines.core.params import FleetConfig
from pipelines.core.waiting import wait_until
from pipelines.rollout import processes
from pipelines.rollout.fleet.client import Fleet, Tokens
from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, API_TOKENS_ENV
from pipelines.serving.server.pseudonyms import PSEUDONYM_KEY_ENV

log = logging.getLogger("recflow.rollout.fleet")


class FleetStartError(RecflowError):
    """A server of a local fleet exited or was not ready in time."""


class LocalFleet:
    """The server processes of one cloud's local fleet.

    Args:
        cloud: The cloud (its store is the servers' source of versions).
        params_file: The project's params (stores, serve settings).
        folder: The servers' run folders and logs.
        cfg: Servers and workers.
        request_log_dir: Where the servers write the request log.
        tokens: The fleet's tokens.
        pseudonym_key: The request log's pseudonymization key (text).
    """

    def __init__(
        self,
        cloud: str,
        params_file: Path,
        folder: Path,
        cfg: FleetConfig,
        request_log_dir: Path,
        tokens: Tokens,
        pseudonym_key: str,
    ) -> None:
        self.cloud = cloud
        self.params_file = params_file
        self.folder = folder
        self.cfg = cfg
        self.request_log_dir = request_log_dir
        self.tokens = tokens
        self.pseudonym_key = pseudonym_key
        self.processes: list[tuple[subprocess.Popen[bytes], str, Path]] = []
        self.version: str | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            API_TOKENS_ENV: self.tokens.client,
            ADMIN_TOKEN_ENV: self.tokens.admin,
            PSEUDONYM_KEY_ENV: self.pseudonym_key,
        }

    def start(self, version: str, timeout_s: float) -> Fleet:
        """Start the servers serving ``version`` and wait until every one is ready.

        Raises:
            FleetStartError: A server exited or was not ready within ``timeout_s`` (every
                server is stopped then; the message holds the end of its log).
        """
        self.stop()
        self.version = version
        env = self._env()
        for index in range(self.cfg.servers):
            port = processes.free_port()
            url = f"http://{processes.HOST}:{port}"
            where = self.folder / f"server-{index + 1}"
            command = [
                sys.executable, "-m", "pipelines.cli", "serve",
                "--params", str(self.params_file),
                "--cloud", self.cloud,
                "--version", version,
                "--host", processes.HOST,
                "--port", str(port),
                "--workers", str(self.cfg.workers),
                "--run-dir", str(where / "run"),
                "--request-log-dir", str(self.request_log_dir),
            ]  # fmt: skip
            process = processes.start(command, where / "server.log", env)
            self.processes.append((process, url, where / "server.log"))
        try:
            self._wait_ready(timeout_s)
        except FleetStartError:
            self.stop()
            raise
        log.info(
            "%s fleet: %d server(s) serving %s: %s",
            self.cloud,
            len(self.processes),
            version,
            ", ".join(url for _, url, _ in self.processes),
        )
        return Fleet(self.cloud, [url for _, url, _ in self.processes], self.tokens)

    def _wait_ready(self, timeout_s: float) -> None:
        waiting = list(self.processes)

        def every_one_ready() -> bool:
            for item in list(waiting):
                process, url, log_file = item
                if process.poll() is not None:
                    raise FleetStartError(
                        f"{self.cloud} server {url} exited ({process.returncode}) before it was "
                        f"ready: {processes.tail(log_file, 1500)}"
                    )
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = httpx.get(f"{url}/readyz", timeout=2.0)
                    if answer.status_code == 200:
                        waiting.remove(item)
                        continue
                    # a server whose version does not load stays up with nothing to serve
                    refused = answer.json().get("error")
                    if refused:
                        raise FleetStartError(f"{self.cloud} server {url} is not ready: {refused}")
            return not waiting

        if not wait_until(every_one_ready, timeout_s=timeout_s, interval_s=0.2):
            _, url, log_file = waiting[0]
            raise FleetStartError(
                f"{self.cloud} server {url} was not ready in {timeout_s:.0f} s: "
                f"{processes.tail(log_file, 1500)}"
            )

    @property
    def running(self) -> bool:
        """Whether every server process is alive."""
        return bool(self.processes) and all(p.poll() is None for p, _, _ in self.processes)

    def stop(self) -> None:
        """Stop every server (in-flight requests finish first)."""
        # every server is told first, so they drain side by side
        for process, _, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _, _ in self.processes:
            processes.stop(process)
        if self.processes:
            log.info("%s fleet stopped", self.cloud)
        self.processes = []
