"""A local Prometheus for a rollout: Debian's ``prometheus`` binary on 127.0.0.1, scraping the
fleets it is told about.

The configuration is generated: one job, ``recflow``, whose targets come from one file per fleet
(file-based service discovery, read again as soon as a fleet's file changes), each target
labelled ``fleet=<cloud>``. Its data lives in the rollout's folder and goes with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from pipelines.core.errors import RecflowError
from pipelines.core.io import write_json, write_text
from pipelines.core.waiting import wait_until
from pipelines.rollout import processes

log = logging.getLogger("recflow.rollout.prometheus")


class PrometheusError(RecflowError):
    """Prometheus is not installed, or did not start."""


def find_binary(name: str) -> str | None:
    """The path of the Prometheus binary ``name`` (a path or a command on ``PATH``)."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name)


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def config_text(folder: Path, interval_s: float) -> str:
    """The configuration: every fleet's targets file under ``folder/targets``."""
    config = {
        "global": {
            "scrape_interval": _duration(interval_s),
            "scrape_timeout": _duration(interval_s),
            "evaluation_interval": "15s",
        },
        "scrape_configs": [
            {
                "job_name": "recflow",
                "metrics_path": "/metrics",
                "file_sd_configs": [
                    {"files": [str(folder / "targets" / "*.json")], "refresh_interval": "5s"}
                ],
            }
        ],
    }
    # JSON is YAML: no YAML writer needed for a generated file
    return json.dumps(config, indent=2) + "\n"


class LocalPrometheus:
    """One Prometheus process for one rollout.

    Args:
        binary: Its path.
        folder: Configuration, targets and data.
        interval_s: The scrape interval.
    """

    def __init__(self, binary: str, folder: Path, interval_s: float) -> None:
        self.binary = binary
        self.folder = folder
        self.interval_s = interval_s
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def watch(self, fleet: str, urls: list[str]) -> None:
        """Scrape ``urls`` (the servers of ``fleet``) from now on."""
        targets = [urlsplit(url).netloc for url in urls]
        write_json(
            self.folder / "targets" / f"{fleet}.json",
            [{"targets": targets, "labels": {"fleet": fleet}}],
        )

    def forget(self, fleet: str) -> None:
        """Stop scraping ``fleet``."""
        (self.folder / "targets" / f"{fleet}.json").unlink(missing_ok=True)

    def start(self, timeout_s: float) -> str:
        """Start it and wait until it is ready; returns its URL.

        Raises:
            PrometheusError: It exited or was not ready within ``timeout_s``.
        """
        (self.folder / "targets").mkdir(parents=True, exist_ok=True)
        write_text(self.folder / "prometheus.yml", config_text(self.folder, self.interval_s))
        port = processes.free_port()
        self.url = f"http://{processes.HOST}:{port}"
        log_file = self.folder / "prometheus.log"
        self._process = processes.start(
            [
                self.binary,
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address={processes.HOST}:{port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log_file,
            dict(os.environ),
        )
        process = self._process

        def ready() -> bool:
            if process.poll() is not None:
                raise PrometheusError(
                    f"Prometheus exited ({process.returncode}): {processes.tail(log_file)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
            return False

        if not wait_until(ready, timeout_s=timeout_s, interval_s=0.2):
            self.stop()
            raise PrometheusError(
                f"Prometheus was not ready in {timeout_s:.0f} s: {processes.tail(log_file)}"
            )
        log.info("Prometheus at %s (pid %d)", self.url, process.pid)
        return self.url

    def stop(self) -> None:
        """Stop it."""
        if self._process is not None:
            processes.stop(self._process)
            self._process = None


@contextlib.contextmanager
def running(
    binary: str, folder: Path, interval_s: float, timeout_s: float
) -> Iterator[LocalPrometheus]:
    """A started :class:`LocalPrometheus`, stopped on exit."""
    server = LocalPrometheus(binary, folder, interval_s)
    try:
        server.start(timeout_s)
        yield server
    finally:
        server.stop()
