"""The trend of a cloud's monitor windows: ``reports/monitoring/<cloud>/trend.html``.

One page, drawn from the windows' ``summary.json`` files (each read through the contract) over
the newest ``monitor.history_windows`` of them: the online hit rate of each version and arm with
its interval, then each drift check's score against its threshold, a line per model version
(the version whose reference the window was compared with). The plots are inline SVG: no
script, no stylesheet or font from elsewhere, so the page opens offline and from an archive.
A summary that cannot be read is named on the page and left out of the plots.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.errors import InputError
from pipelines.core.io import write_text
from pipelines.core.params.monitor import FEATURE_NAMES
from pipelines.monitoring.summary import (
    OWN_DRIFT_CHECKS,
    SUMMARY_FILE,
    MonitorSummary,
    read_summary,
)

TREND_FILE = "trend.html"

# colour-blind-safe (Okabe-Ito), in the order series are met
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")

WIDTH, PANEL_HEIGHT = 860, 190
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 28, 36


@dataclass(frozen=True)
class Unreadable:
    """A summary left out of the trend, and why (its path relative to the cloud's folder)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Trend:
    """What :func:`write_trend` drew.

    Attributes:
        path: The page written.
        windows: The windows plotted, oldest first.
        unreadable: The summaries left out.
    """

    path: Path
    windows: tuple[str, ...]
    unreadable: tuple[Unreadable, ...]


def collect(
    cloud_dir: Path, history_windows: int
) -> tuple[tuple[MonitorSummary, ...], tuple[Unreadable, ...]]:
    """The newest ``history_windows`` readable summaries in ``cloud_dir`` (oldest first, by
    when the monitor ran, then by window), and every summary that could not be read."""
    readable: list[MonitorSummary] = []
    unreadable: list[Unreadable] = []
    folders = (
        sorted(p for p in cloud_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if cloud_dir.is_dir()
        else []
    )
    for folder in folders:
        path = folder / SUMMARY_FILE
        if not path.is_file():
            continue
        relative = f"{folder.name}/{SUMMARY_FILE}"
        try:
            summary = read_summary(path)
        except InputError as exc:
            unreadable.append(Unreadable(relative, str(exc).replace(str(path), relative)))
            continue
        if summary.window.name != folder.name:
            unreadable.append(
                Unreadable(relative, f"it describes window {summary.window.name}, not its folder")
            )
            continue
        readable.append(summary)
    readable.sort(key=lambda s: (s.created, s.window.name))
    return tuple(readable[-history_windows:]), tuple(unreadable)


def write_trend(
    cloud_dir: Path, history_windows: int, *, min_hit_rate: float | None = None
) -> Trend:
    """Draw ``cloud_dir/trend.html`` from the summaries of the windows in ``cloud_dir``.

    Args:
        cloud_dir: ``reports/monitoring/<cloud>``.
        history_windows: How many of the newest windows to plot.
        min_hit_rate: The online hit rate's floor, drawn as a dashed line when given.

    Returns:
        The page, the windows plotted and the summaries left out.
    """
    summaries, unreadable = collect(cloud_dir, history_windows)
    path = cloud_dir / TREND_FILE
    write_text(
        path, trend_html(summaries, unreadable, cloud=cloud_dir.name, min_hit_rate=min_hit_rate)
    )
    return Trend(
        path=path,
        windows=tuple(s.window.name for s in summaries),
        unreadable=unreadable,
    )


@dataclass(frozen=True)
class _Point:
    x: int
    y: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class _Series:
    name: str
    points: tuple[_Point, ...]
    dashed: bool = False
    colour: str = "#555555"


def trend_html(
    summaries: Sequence[MonitorSummary],
    unreadable: Sequence[Unreadable] = (),
    *,
    cloud: str,
    min_hit_rate: float | None = None,
) -> str:
    """The page for ``summaries`` (oldest first): the plots, the windows, what was left out."""
    labels = [_tick(s) for s in summaries]
    colours: dict[str, str] = {}

    def colour(name: str) -> str:
        return colours.setdefault(name, PALETTE[len(colours) % len(PALETTE)])

    panels: list[str] = []
    quality: dict[str, list[_Point]] = {}
    for x, summary in enumerate(summaries):
        for figure in summary.quality:
            if figure.hit_rate is not None:
                name = f"{figure.version} ({figure.arm})"
                point = _Point(x, figure.hit_rate, figure.low, figure.high)
                quality.setdefault(name, []).append(point)
    series = [_Series(n, tuple(p), colour=colour(n.split(" (")[0])) for n, p in quality.items()]
    if min_hit_rate is not None and summaries:
        floor = tuple(_Point(x, min_hit_rate) for x in range(len(summaries)))
        series.append(_Series("floor", floor, dashed=True))
    panels.append(_panel("Online hit rate (interval as bars)", series, labels))

    for metric in _drift_metrics(summaries):
        scores: dict[str, list[_Point]] = {}
        limits: list[_Point] = []
        for x, summary in enumerate(summaries):
            for check in summary.checks:
                if check.metric != metric or check.outcome == "skipped":
                    continue
                version = summary.reference.version or "prepared"
                value, limit = _number(check.value), _number(check.limit)
                if value is not None:
                    scores.setdefault(version, []).append(_Point(x, value))
                if limit is not None:
                    limits.append(_Point(x, limit))
        drawn = [_Series(v, tuple(p), colour=colour(v)) for v, p in scores.items()]
        if limits:
            drawn.append(_Series("threshold", tuple(limits), dashed=True))
        panels.append(_panel(f"Drift: {metric} (score vs threshold)", drawn, labels))

    legend = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>{html.escape(n)}</li>'
        for n, c in colours.items()
    )
    rows = "".join(
        f"<tr><td>{html.escape(s.window.name)}</td><td>{html.escape(s.verdict)}</td>"
        f"<td>{s.rows}</td><td>{html.escape(s.reference.version or 'prepared')}</td>"
        f"<td>{html.escape(', '.join(d.feature for d in s.drifted))}</td></tr>"
        for s in reversed(summaries)
    )
    left_out = "".join(
        f"<li><code>{html.escape(u.path)}</code>: {html.escape(u.reason)}</li>" for u in unreadable
    )
    body = [
        f"<h1>Monitoring trend: {html.escape(cloud)}</h1>",
        f"<p>{len(summaries)} window(s), oldest first. Lines are model versions; dashed grey "
        "lines are the thresholds.</p>",
    ]
    if summaries:
        body += [f'<ul class="legend">{legend}</ul>', *panels]
        body.append(
            "<table><tr><th>window</th><th>verdict</th><th>requests</th><th>reference</th>"
            f"<th>drifted</th></tr>{rows}</table>"
        )
    else:
        body.append("<p>No readable window yet.</p>")
    if unreadable:
        body.append(f"<h2>Left out (unreadable)</h2><ul>{left_out}</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>recflow monitoring trend: {html.escape(cloud)}</title><style>{_STYLE}</style>"
        "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "svg{display:block;margin:0.5em 0}"
    ".legend{list-style:none;padding:0}.legend li{display:inline-block;margin-right:1.2em}"
    ".swatch{display:inline-block;width:1em;height:0.7em;margin-right:0.3em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
)


def _drift_metrics(summaries: Sequence[MonitorSummary]) -> list[str]:
    """The drift checks present, features first in their fixed order, then recflow's own."""
    present = {c.metric for s in summaries for c in s.checks if c.outcome != "skipped"}
    return [m for m in (*FEATURE_NAMES, *OWN_DRIFT_CHECKS) if m in present]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _tick(summary: MonitorSummary) -> str:
    moment = summary.window.until or summary.created
    return moment.strftime("%m-%d %H:%M")


def _panel(title: str, series: Sequence[_Series], ticks: Sequence[str]) -> str:
    """One plot: the series over the windows, y from 0 to a little above the largest value."""
    values = [p.high if p.high is not None else p.y for s in series for p in s.points]
    # an empty panel (no window measured it) keeps a plain 0..1 axis
    top = max(values) if values and max(values) > 0 else 1.0
    top *= 1.15
    inner_w = WIDTH - LEFT - RIGHT
    inner_h = PANEL_HEIGHT - TOP - BOTTOM
    count = max(len(ticks), 1)

    def sx(x: int) -> float:
        return LEFT + (inner_w / 2 if count == 1 else inner_w * x / (count - 1))

    def sy(y: float) -> float:
        return TOP + inner_h * (1 - min(max(y, 0.0), top) / top)

    parts = [
        f'<svg width="{WIDTH}" height="{PANEL_HEIGHT}" viewBox="0 0 {WIDTH} {PANEL_HEIGHT}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = sy(top / 1.15 * fraction)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{top / 1.15 * fraction:.3g}</text>"
        )
    step = max(1, -(-len(ticks) // 8))
    for x, label in enumerate(ticks):
        if x % step == 0 or x == len(ticks) - 1:
            parts.append(
                f'<text x="{sx(x):.1f}" y="{PANEL_HEIGHT - 12}" font-size="10" '
                f'text-anchor="middle">{html.escape(label)}</text>'
            )
    for line in series:
        colour = "#888" if line.dashed else line.colour
        dash = ' stroke-dasharray="5,4"' if line.dashed else ""
        points = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in line.points)
        parts.append(
            f'<g class="series" data-series="{html.escape(line.name)}">'
            f"<title>{html.escape(line.name)}</title>"
            f'<polyline class="line" points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="{1 if line.dashed else 2}"{dash}/>'
        )
        if not line.dashed:
            for p in line.points:
                if p.low is not None and p.high is not None:
                    parts.append(
                        f'<line class="interval" x1="{sx(p.x):.1f}" x2="{sx(p.x):.1f}" '
                        f'y1="{sy(p.low):.1f}" y2="{sy(p.high):.1f}" stroke="{colour}"/>'
                    )
                parts.append(
                    f'<circle cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="3" fill="{colour}"/>'
                )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
