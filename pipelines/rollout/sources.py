"""Where the analysis reads a fleet's metrics: each server's ``/metrics``, or Prometheus.

Both give a :class:`~pipelines.rollout.metrics.Snapshot` of the same samples. Prometheus is asked
in PromQL, one instant query per sample name, ``sum by (<labels>) (<name>{fleet="<cloud>"})``,
at one evaluation time; before a snapshot it waits until every server of the fleet was scraped
after the moment the window starts or ends, so both sources count the same requests (PromQL's
``increase()`` would extrapolate over the window's edges instead).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx

from pipelines.core.waiting import wait_until
from pipelines.rollout.metrics import WANTED, MetricsError, Snapshot, parse_exposition


class MetricSource(Protocol):
    """Snapshots of one fleet's metrics."""

    def snapshot(self, after: float) -> Snapshot:
        """The fleet's samples as of a moment no earlier than ``after`` (epoch seconds)."""
        ...

    def problems(self) -> list[str]:
        """Why the source cannot see every server of the fleet (empty: it can)."""
        ...

    def describe(self) -> str:
        """What it is, for a person."""
        ...


class ScrapeSource:
    """Each server's ``/metrics``, summed.

    Args:
        urls: The servers' base URLs.
        timeout_s: Per page.
    """

    def __init__(self, urls: list[str], timeout_s: float = 10.0) -> None:
        self.urls = urls
        self.timeout_s = timeout_s

    def snapshot(self, after: float) -> Snapshot:
        """Scrape every server now (``after`` has passed already)."""
        snapshot = Snapshot(at=time.time())
        with httpx.Client(timeout=self.timeout_s) as client:
            for url in self.urls:
                try:
                    answer = client.get(f"{url}/metrics")
                except httpx.HTTPError as exc:
                    raise MetricsError(f"{url}/metrics did not answer: {exc}") from exc
                if answer.status_code != 200:
                    raise MetricsError(f"{url}/metrics answered {answer.status_code}")
                parse_exposition(answer.text, snapshot)
        return snapshot

    def problems(self) -> list[str]:
        try:
            self.snapshot(time.time())
        except MetricsError as exc:
            return [str(exc)]
        return []

    def describe(self) -> str:
        return f"/metrics of {len(self.urls)} server(s)"


class PrometheusSource:
    """A Prometheus server that scrapes the fleet's servers (label ``fleet``), in PromQL.

    Args:
        url: Prometheus' base URL.
        fleet: The fleet's label value (its cloud).
        servers: How many servers the fleet has.
        interval_s: The scrape interval (how long a fresh scrape may take).
    """

    def __init__(
        self, url: str, fleet: str, servers: int, interval_s: float, timeout_s: float = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        self.fleet = fleet
        self.servers = servers
        self.interval_s = interval_s
        self.timeout_s = timeout_s

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector.

        Raises:
            MetricsError: Prometheus did not answer or refused the query.
        """
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            answer = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout_s)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise MetricsError(
                f"Prometheus at {self.url} did not answer {promql!r}: {exc}"
            ) from exc
        if answer.status_code != 200 or body.get("status") != "success":
            raise MetricsError(
                f"Prometheus refused {promql!r}: {body.get('error', answer.status_code)}"
            )
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def _selector(self) -> str:
        return f'{{fleet="{self.fleet}"}}'

    def _scraped(self) -> tuple[int, float | None]:
        """Servers up, and the oldest of their last scrapes."""
        up = self.query(f"count(up{self._selector()} == 1)")
        oldest = self.query(f"min(timestamp(up{self._selector()}))")
        count = int(float(up[0]["value"][1])) if up else 0
        return count, float(oldest[0]["value"][1]) if oldest else None

    def snapshot(self, after: float) -> Snapshot:
        """The fleet's samples once every server was scraped after ``after``.

        Raises:
            MetricsError: Not every server was scraped in time.
        """
        scraped: tuple[int, float | None] = (0, None)

        def fresh() -> bool:
            nonlocal scraped
            scraped = count, oldest = self._scraped()
            return count >= self.servers and oldest is not None and oldest >= after

        timeout_s = max(10 * self.interval_s, 5.0)
        if not wait_until(fresh, timeout_s=timeout_s, interval_s=min(0.2, self.interval_s / 4)):
            count, oldest = scraped
            raise MetricsError(
                f"Prometheus saw {count} of {self.servers} servers of {self.fleet} up, last "
                f"scraped at {oldest}, not after {after:.3f}"
            )
        at = time.time()
        snapshot = Snapshot(at=at)
        for name, labels in WANTED.items():
            promql = f"sum by ({', '.join(labels)}) ({name}{self._selector()})"
            for series in self.query(promql, at):
                snapshot.add(name, series["metric"], float(series["value"][1]))
        return snapshot

    def problems(self) -> list[str]:
        try:
            count, _ = self._scraped()
        except MetricsError as exc:
            return [str(exc)]
        if count < self.servers:
            return [f"Prometheus sees {count} of the {self.servers} servers of {self.fleet} up"]
        return []

    def describe(self) -> str:
        return f"Prometheus at {self.url} (PromQL)"
