"""The gate's verdict as a page a person reads: Markdown and a self-contained HTML file."""

from __future__ import annotations

import html
import json
from typing import Any

_MARK = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "skipped": "skipped"}
_COLOUR = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700", "skipped": "#57606a"}


def _summary(result: dict[str, Any]) -> str:
    outcome = result["verdict"]
    if result["blocked"]:
        failed = [c["name"] for c in result["checks"] if c["status"] in ("fail", "inconclusive")]
        return f"Blocked: {outcome}. Checks that stopped it: {', '.join(failed)}."
    if result["bootstrap"]:
        return (
            "Passed under the bootstrap rule: there is no production model yet, so every "
            "check but the comparison had to pass and quality had to meet its minimums."
        )
    if outcome == "inconclusive":
        return "Inconclusive, let through because evaluate.on_inconclusive is 'pass'."
    return (
        "Passed: no check failed and quality is not worse than production beyond the allowed drop."
    )


def _value(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)


def render_markdown(result: dict[str, Any]) -> str:
    """The verdict as Markdown."""
    lines = [
        f"# Regression gate: {result['verdict'].upper()}",
        "",
        _summary(result),
        "",
        f"Golden set: {result['golden_users']} test users. Candidate artifact: "
        f"{result['candidate']['artifact']}.",
        "",
        "| metric | candidate | production |",
        "| --- | --- | --- |",
    ]
    production = (result.get("production") or {}).get("quality") or {}
    for metric, value in result["candidate"]["quality"].items():
        lines.append(f"| {metric} | {value:.4f} | {production.get(metric, '—')} |")
    lines += [
        "",
        "| check | status | value | threshold | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in result["checks"]:
        lines.append(
            f"| {check['name']} | {_MARK[check['status']]} | {_value(check['value'])} | "
            f"{_value(check['threshold'])} | {check['detail']} |"
        )
    return "\n".join(lines) + "\n"


def render_html(result: dict[str, Any]) -> str:
    """The verdict as one HTML page without external resources."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(c['name'])}</td>"
        f"<td style='color:{_COLOUR[c['status']]};font-weight:600'>{_MARK[c['status']]}</td>"
        f"<td>{esc(_value(c['value']))}</td><td>{esc(_value(c['threshold']))}</td>"
        f"<td>{esc(c['detail'])}</td></tr>"
        for c in result["checks"]
    )
    production = (result.get("production") or {}).get("quality") or {}
    quality = "".join(
        f"<tr><td>{esc(m)}</td><td>{v:.4f}</td><td>{esc(str(production.get(m, '—')))}</td></tr>"
        for m, v in result["candidate"]["quality"].items()
    )
    colour = _COLOUR["fail" if result["blocked"] else "pass"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>recflow regression gate</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}}
table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}}
th{{background:#f6f8fa}}</style></head><body>
<h1 style="color:{colour}">Regression gate: {esc(result["verdict"].upper())}</h1>
<p>{esc(_summary(result))}</p>
<p>Golden set: {result["golden_users"]} test users. Candidate artifact:
{esc(str(result["candidate"]["artifact"]))}.</p>
<table><tr><th>metric</th><th>candidate</th><th>production</th></tr>{quality}</table>
<table><tr><th>check</th><th>status</th><th>value</th><th>threshold</th><th>detail</th></tr>{rows}</table>
</body></html>
"""
