"""Reports over the store: the headline, the trend, hosts at risk, compromise; table, JSON, Markdown, HTML, STIX.

``build_report`` gives a frozen ``Report`` (its JSON is ``Report.to_dict``); the renderers format it.
The renderers and the STIX export are imported when first used (matplotlib and stix2 are heavy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from exwatch.report.model import Attempts, Report, ReportOptions, WeekChange, build_report, headline

if TYPE_CHECKING:
    from exwatch.report.html import render_html
    from exwatch.report.stix import bundle_json, findings_bundle
    from exwatch.report.text import render_markdown, render_table

_LAZY = {
    "render_html": "exwatch.report.html",
    "render_markdown": "exwatch.report.text",
    "render_table": "exwatch.report.text",
    "bundle_json": "exwatch.report.stix",
    "findings_bundle": "exwatch.report.stix",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'exwatch.report' has no attribute {name!r}")


__all__ = [
    "Attempts",
    "Report",
    "ReportOptions",
    "WeekChange",
    "build_report",
    "bundle_json",
    "findings_bundle",
    "headline",
    "render_html",
    "render_markdown",
    "render_table",
]
