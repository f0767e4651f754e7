"""The ``generate`` stage's work: write the clickstream that stands in for a shop's event log.

``pipelines.stages.generate`` reads the ``run`` (logical date, seed) and ``generate`` sections
of ``params.yaml``; ``generate`` writes ``events.parquet`` and ``catalog.parquet`` into the
output folder, replacing it as a whole. The same params give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.io import atomic_dir, write_parquet
from pipelines.core.params import GenerateConfig, RunConfig
from pipelines.core.schema import CATALOG_FILE, EVENTS_FILE
from pipelines.data.synthetic.presets import PRESETS
from pipelines.data.synthetic.tables import synthesize

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

    Args:
        cfg: Preset, number of days and drift knobs.
        run: The run's logical date (last day of the history) and seed.
        out: Folder to write ``events.parquet`` and ``catalog.parquet`` into; it is replaced
            as a whole, atomically.

    Returns:
        Counts of what was written.
    """
    started = time.perf_counter()
    events, catalog = synthesize(
        PRESETS[cfg.preset],
        seed=run.seed,
        end_date=run.logical_date,
        days=cfg.days,
        drift=cfg.drift,
    )
    simulated = time.perf_counter() - started
    log.info(
        "simulated %d events (%s preset, %d days to %s) in %.2f s, %.0f events/s",
        events.num_rows,
        cfg.preset,
        cfg.days,
        run.logical_date,
        simulated,
        events.num_rows / max(simulated, 1e-9),
    )
    with atomic_dir(out) as tmp:
        write_parquet(tmp / EVENTS_FILE, events)
        write_parquet(tmp / CATALOG_FILE, catalog)
    log.info("wrote %s in %.2f s", out, time.perf_counter() - started - simulated)
    return GenerateResult(
        out=out,
        events=events.num_rows,
        users=len(events.column("user_id").unique()),
        items=catalog.num_rows,
        first_day=run.logical_date - dt.timedelta(days=cfg.days - 1),
        last_day=run.logical_date,
    )
