"""The gate's verdict as a page a person reads: Markdown and a self-contained HTML file.

Both are Jinja2 templates in ``pipelines/gate/templates/``. The HTML one is autoescaped, so a
check's detail (which may quote an error message or a file name) is shown, never run.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from pipelines.core.judgment import CheckValue
from pipelines.gate.verdict import Verdict

_MARKS = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "skipped": "skipped"}
_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700", "skipped": "#57606a"}


def _shown(value: CheckValue) -> str:
    """A check's value or limit as text: a dash for none, JSON for numbers and lists."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell and is not read as HTML."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\n", " ")
    )


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipelines.gate", "templates"),
        # by the template's name: report.html is escaped, report.md is not
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(shown=_shown, number=_number, cell=_cell)
    return env


_ENV = _environment()


def summary(verdict: Verdict) -> str:
    """One paragraph: what the gate decided and why."""
    if verdict.blocked:
        return f"Blocked: {verdict.outcome}. Checks that stopped it: {', '.join(verdict.stopping)}."
    if verdict.first_model:
        return (
            "Passed under the first-model rule: there is no production model yet, so every "
            "check but the comparison had to pass and quality had to meet its minimums."
        )
    if verdict.outcome == "inconclusive":
        return "Inconclusive, let through because evaluate.on_inconclusive is 'pass'."
    return (
        "Passed: no check failed and quality is not worse than production beyond the allowed drop."
    )


def _context(verdict: Verdict) -> dict[str, Any]:
    production = verdict.production.quality if verdict.production else {}
    return {
        "verdict": verdict,
        "summary": summary(verdict),
        "production": production,
        "marks": _MARKS,
        "colours": _COLOURS,
    }


def render_markdown(verdict: Verdict) -> str:
    """The verdict as Markdown."""
    return _ENV.get_template("report.md").render(_context(verdict))


def render_html(verdict: Verdict) -> str:
    """The verdict as one HTML page without external resources."""
    return _ENV.get_template("report.html").render(_context(verdict))
