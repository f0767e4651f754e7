"""The ``generate`` stage's work: write the clickstream that stands in for a shop's event log.

``pipelines.stages.generate`` reads the ``run`` (logical date, seed) and ``generate`` sections
of ``params.yaml``; ``generate`` writes ``events.parquet`` and ``catalog.parquet`` into the
output folder, replacing it as a whole. The same params give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.core.io import atomic_dir, write_parquet, write_parquet_stream
from pipelines.core.logs import Tenths
from pipelines.core.params import GenerateConfig, RunConfig
from pipelines.core.schema import CATALOG_FILE, EVENT_SCHEMA, EVENTS_FILE
from pipelines.data.synthetic.presets import PRESETS
from pipelines.data.synthetic.tables import simulate

log = logging.getLogger("recflow.generate")


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate`` wrote.

    Attributes:
        out: The output folder.
        events: Number of events.
        users: Number of distinct users with events.
        items: Number of catalog items.
        first_day: First day of the history.
        last_day: Last day of the history (the logical date).
    """

    out: Path
    events: int
    users: int
    items: int
    first_day: dt.date
    last_day: dt.date


def generate(cfg: GenerateConfig, run: RunConfig, out: Path) -> GenerateResult:
    """Simulate ``cfg.days`` days of traffic ending on the run's logical date into ``out``.

    The days are simulated and written one at a time, so memory stays bounded whatever the
    preset: only the catalog and the events of about one day are held at once.

    Args:
        cfg: Preset, number of days and drift knobs.
        run: The run's logical date (last day of the history) and seed.
        out: Folder to write ``events.parquet`` and ``catalog.parquet`` into; it is replaced
            as a whole, atomically.

    Returns:
        Counts of what was written.
    """
    started = time.perf_counter()
    preset = PRESETS[cfg.preset]
    traffic = simulate(
        preset, seed=run.seed, end_date=run.logical_date, days=cfg.days, drift=cfg.drift
    )
    seen = np.zeros(preset.n_users, dtype=bool)
    progress = _Progress(len(traffic.simulated), started)

    def tables() -> Iterator[pa.Table]:
        for chunk in traffic.chunks():
            seen[chunk.users] = True
            progress.day_done(chunk.day, chunk.events.num_rows)
            yield chunk.events

    with atomic_dir(out) as tmp:
        catalog = traffic.catalog()
        events = write_parquet_stream(tmp / EVENTS_FILE, EVENT_SCHEMA, tables())
        write_parquet(tmp / CATALOG_FILE, catalog)
    took = time.perf_counter() - started
    log.info(
        "simulated and wrote %d events (%s preset, %d days to %s) in %.2f s, %.0f events/s",
        events,
        cfg.preset,
        cfg.days,
        run.logical_date,
        took,
        events / max(took, 1e-9),
    )
    return GenerateResult(
        out=out,
        events=events,
        users=int(seen.sum()),
        items=catalog.num_rows,
        first_day=run.logical_date - dt.timedelta(days=cfg.days - 1),
        last_day=run.logical_date,
    )


class _Progress:
    """Logs the simulated days: each at DEBUG, and every tenth of them at INFO once the work
    has run long enough to be worth watching (a short run keeps the console short)."""

    def __init__(self, days: int, started: float) -> None:
        self.days = days
        self.done = self.events = 0
        self._tenths = Tenths(days, started=started)

    def day_done(self, day: dt.date, events: int) -> None:
        self.done += 1
        self.events += events
        log.debug("day %s: %d events final, %d so far", day, events, self.events)
        took = self._tenths.due(self.done)
        if took is not None:
            log.info(
                "%d of %d days simulated, %d events written so far, %.0f s",
                self.done,
                self.days,
                self.events,
                took,
            )
