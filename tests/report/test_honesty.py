"""Report honesty (issue 10 item 7): fix text never cut, one snapshot keeps a short time axis, the
headline box is not green when nothing is known, no attempts fit from too few points or a weak fit,
attempts count only confirmed or likely findings, the details section is HTML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import pytest

from exwatch.fleet import Store, open_store
from exwatch.report import ReportOptions, build_report
from exwatch.report import html as report_html
from exwatch.report.html import render_html
from exwatch.report.text import render_table

DAY = datetime(2021, 3, 10, 12, tzinfo=UTC)
LONG_FIX = (
    "install the March 2021 security update KB5000871 for Exchange Server 2016 CU19 (build 15.1.2176.9), "
    "or move to CU20 (15.1.2242.4) which includes it; then restart the MSExchangeFrontEndTransport service"
)


def one_scan(store: Store, states: dict[int, str], fix: str = LONG_FIX) -> None:
    sid = store.start_scan({"targets": ["127.77.0.0/28"]}, started_at=DAY)
    store.add_observations(
        sid,
        [
            {
                "key": f"127.77.0.{h}",
                "address": f"127.77.0.{h}",
                "port": 443,
                "status": "exchange",
                "build": "15.1.2176.2",
                "waves": {"proxylogon": {"state": s, "fix": {"text": fix}}},
            }
            for h, s in states.items()
        ],
    )
    store.finish_scan(sid)


def finding(when: datetime, confidence: str = "confirmed") -> dict[str, Any]:
    return {
        "rule": "proxylogon.ssrf_cookie",
        "wave": "proxylogon",
        "confidence": confidence,
        "time": when.isoformat(),
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with open_store(f"sqlite:///{tmp_path / 'h.db'}") as opened:
        yield opened


def test_fix_text_is_never_cut(store: Store) -> None:
    one_scan(store, {1: "vulnerable"})
    rep = build_report(store)
    doc = rep.to_dict()
    assert doc["hosts_at_risk"][0]["fix"] == LONG_FIX
    table = render_table(rep)
    assert "…" not in table
    # the fix wraps inside its column: every word is there, in order
    words = [w for line in table.splitlines() if "│" in line or "|" in line for w in line.split()]
    text = " ".join(words)
    for word in LONG_FIX.split():
        assert word in text
    assert LONG_FIX in render_html(rep)


def test_one_snapshot_keeps_a_short_time_axis(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    one_scan(store, {1: "vulnerable", 2: "patched"})
    rep = build_report(store)
    spans: list[float] = []

    def record(fig: Any) -> str:
        lo, hi = fig.axes[0].get_xlim()
        spans.append(hi - lo)
        return "<svg></svg>"

    monkeypatch.setattr(report_html, "_svg", record)
    report_html.chart_share(rep.snapshots)
    report_html.chart_states(rep)
    assert len(spans) == 2
    assert all(1 <= span <= 3 for span in spans), spans  # days, not years
    assert mdates.num2date(0).year == 1970  # the unit of the axis is days since the epoch


@pytest.mark.parametrize(
    ("states", "level"),
    [
        ({}, "unknown"),
        ({1: "unknown"}, "unknown"),
        ({1: "vulnerable", 2: "patched"}, "exposed"),
        ({1: "patched"}, "protected"),
    ],
)
def test_headline_box_colour(store: Store, states: dict[int, str], level: str) -> None:
    if states:
        one_scan(store, states)
    rep = build_report(store)
    doc = rep.to_dict()
    assert doc["headline_level"] == level
    page = render_html(rep)
    assert f"class='headline {level}'" in page
    if level == "unknown":
        assert "headline protected" not in page


def test_no_fit_from_too_few_points(store: Store) -> None:
    one_scan(store, {1: "vulnerable"})
    base = DAY - timedelta(days=5)
    findings = [finding(base + timedelta(hours=h, minutes=i)) for h in range(3) for i in range(2**h)]
    store.add_hunt("127.77.0.1", verdict="compromised", coverage={}, findings=findings)
    rep = build_report(store)
    doc = rep.to_dict()
    assert doc["attempts"]["fit"] is None
    assert "too few hours with attempts" in doc["attempts"]["fit_error"]
    assert "no fit" in render_table(rep)


def test_no_fit_when_it_explains_nothing(store: Store) -> None:
    one_scan(store, {1: "vulnerable"})
    base = DAY - timedelta(days=5)
    # counts 5, 1, 4, 1, 5, 1, 6, 2, 7: no clear growth; the busiest hour ends the default window
    counts = [5, 1, 4, 1, 5, 1, 6, 2, 7]
    findings = [finding(base + timedelta(hours=h, minutes=i)) for h, n in enumerate(counts) for i in range(n)]
    store.add_hunt("127.77.0.1", verdict="compromised", coverage={}, findings=findings)
    rep = build_report(store)
    doc = rep.to_dict()
    assert doc["attempts"]["fit"] is None
    assert "no reliable growth fit" in doc["attempts"]["fit_error"]


def test_attempts_count_only_confirmed_or_likely(store: Store) -> None:
    one_scan(store, {1: "vulnerable"})
    base = DAY - timedelta(days=5)
    findings = [
        finding(base, "confirmed"),
        finding(base, "likely"),
        finding(base, "review"),
        finding(base, "review"),
    ]
    store.add_hunt("127.77.0.1", verdict="compromised", coverage={}, findings=findings)
    rep = build_report(store)
    doc = rep.to_dict()
    assert sum(n for _, n in doc["attempts"]["per_hour"]) == 2


def test_details_are_html_not_markdown(store: Store) -> None:
    one_scan(store, {1: "vulnerable", 2: "patched"})
    page = render_html(build_report(store))
    details = page[page.index("<h2>Details</h2>") :]
    assert "<pre>" not in details and "|---|" not in details and "**" not in details
    assert "<table>" in details and "<dl>" in details and "<dt>protected_share</dt>" in details


def test_a_since_after_every_scan_does_not_say_the_store_is_empty(store: Store) -> None:
    """`report --since` later than every scan: the headline says the window is empty, not that no
    scan was ever run (it said "run exwatch scan first" on a store with scans)."""
    one_scan(store, {1: "vulnerable"})
    text = build_report(store, ReportOptions(since=DAY + timedelta(days=1))).headline
    assert text.startswith("No finished scan since 2021-03-11T12:00:00+00:00") and "exwatch scan" not in text
    assert build_report(store).headline.startswith("ProxyLogon: 0.0% of 1 classified")
