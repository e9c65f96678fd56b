"""Reports over the store: the headline, the trend, hosts at risk, compromise; table, JSON, Markdown, HTML, STIX."""

from __future__ import annotations

from exwatch.report.model import ReportOptions, build_report, headline

__all__ = ["ReportOptions", "build_report", "headline"]
