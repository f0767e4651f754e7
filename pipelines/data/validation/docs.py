"""Data Docs that are the same bytes for the same results and readable without network access.

GX writes the clock and random ids into its pages, and fills its index page with JavaScript
loaded from CDNs; ``freeze_data_docs`` and ``add_offline_index`` undo both after a build.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

_GX_STAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def freeze_data_docs(docs_dir: Path, stamp: str) -> None:
    """Make the Data Docs pages the same bytes for the same results.

    GX writes the clock (load time, cache-busting query strings) and random element ids into
    its pages; a rerun would change the report, and with it the stage's DVC record. Clock
    stamps become the run's own time and random ids become ids numbered per page in order of
    appearance, so links inside a page still match.
    """
    for page in sorted(docs_dir.rglob("*.html")):
        text = _GX_STAMP.sub(stamp, page.read_text(encoding="utf-8"))
        page.write_text(_number_uuids(text), encoding="utf-8")


def _number_uuids(text: str) -> str:
    numbering: dict[str, str] = {}

    def number(match: re.Match[str]) -> str:
        found = match.group(0)
        if found not in numbering:
            numbering[found] = f"00000000-0000-4000-8000-{len(numbering):012x}"
        return numbering[found]

    return _UUID.sub(number, text)


def add_offline_index(docs_dir: Path, results: list[ExpectationSuiteValidationResult]) -> None:
    """Put plain links to the result pages at the top of the Data Docs index.

    GX fills the index's result table with JavaScript loaded from CDNs, so opened from disk
    without network access it would list nothing; the result pages themselves are static HTML.
    """
    index = docs_dir / "index.html"
    items = []
    for result in results:
        pages = sorted((docs_dir / "validations" / result.suite_name).glob("**/*.html"))
        if not pages:
            continue
        stats = result.statistics
        status = "passed" if result.success else "failed"
        href = html.escape(pages[0].relative_to(docs_dir).as_posix())
        items.append(
            f'<li><a href="{href}">{html.escape(result.suite_name)}</a>: {status}, '
            f"{stats['successful_expectations']} of {stats['evaluated_expectations']} "
            "expectations met</li>"
        )
    block = (
        '<section id="recflow-results" style="margin:1em 2em">'
        "<h2>Validation results</h2><ul>" + "".join(items) + "</ul></section>"
    )
    text = index.read_text(encoding="utf-8")
    index.write_text(text.replace("<body>", "<body>\n" + block, 1), encoding="utf-8")
