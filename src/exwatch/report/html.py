"""The report as one self-contained HTML file: inline SVG charts (matplotlib, Agg), no network needed."""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from exwatch.fleet.metrics import WaveCounts  # noqa: E402
from exwatch.fleet.rows import Compromise, Picture  # noqa: E402
from exwatch.report.model import Report, wave_name  # noqa: E402
from exwatch.report.text import (  # noqa: E402
    STATE_COLUMNS,
    _attempt_line,
    _change_lines,
    at_risk_row,
    picture_rows,
)

COLOURS = {
    "vulnerable": "#c0392b",
    "unknown": "#95a5a6",
    "mitigated": "#f39c12",
    "patched": "#27ae60",
    "not_affected": "#d5dbdb",
}

_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "exwatch"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    return _METADATA.sub("", text)


def _times(report: Report) -> list[datetime]:
    return [s.time for s in report.snapshots]


def _num(times: list[datetime]) -> list[float]:
    """Matplotlib date numbers (the axes are told they are dates with xaxis_date)."""
    return [float(mdates.date2num(t)) for t in times]


def _time_axis(ax: Any, times: list[datetime], min_pad: timedelta = timedelta(days=1)) -> None:
    """Dates on the x axis over the span of ``times`` with a margin, at least a day each side: one
    snapshot must not stretch the axis over years (matplotlib's default for a single date)."""
    ax.xaxis_date()
    if not times:
        return
    lo, hi = min(times), max(times)
    pad = max((hi - lo) * 0.05, min_pad)
    ax.set_xlim(float(mdates.date2num(lo - pad)), float(mdates.date2num(hi + pad)))


def chart_share(snapshots: Sequence[Picture]) -> str:
    """The protected share over time with its bounds, per wave."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    times = [s.time for s in snapshots]
    for wave in sorted({w for s in snapshots for w in s.waves}):
        pts = [(s.time, s.waves.get(wave)) for s in snapshots]
        shown = [(t, c) for t, c in pts if c and c.protected_share is not None and c.protected_bounds]
        if not shown:
            continue
        xs = [t for t, _ in shown]
        share = [(c.protected_share or 0) * 100 for _, c in shown]
        low = [(c.protected_bounds or (0, 0))[0] * 100 for _, c in shown]
        high = [(c.protected_bounds or (0, 0))[1] * 100 for _, c in shown]
        (line,) = ax.plot(_num(xs), share, marker="o", label=f"{wave_name(wave)} protected share")
        if len(xs) == 1:  # one point: its bounds as an error bar (an area needs two)
            ax.errorbar(
                _num(xs), share, yerr=[[share[0] - low[0]], [high[0] - share[0]]], color=line.get_color()
            )
        ax.fill_between(
            _num(xs),
            low,
            high,
            color=line.get_color(),
            alpha=0.2,
            label=f"{wave_name(wave)} bounds (unknown)",
        )
    ax.set_ylabel("patched or mitigated, % of classified")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no classified server yet", ha="center", va="center", transform=ax.transAxes)
    _time_axis(ax, times)
    fig.autofmt_xdate()
    ax.set_title("Protected share of the fleet over time")
    return _svg(fig)


def chart_states(report: Report) -> str:
    """The states of the headline wave as a stacked area over snapshots."""
    wave = report.wave
    fig, ax = plt.subplots(figsize=(8, 3.6))
    times = _times(report)
    if wave and times:
        series = []
        for state in STATE_COLUMNS:
            series.append([_state_count(s.waves.get(wave), state) for s in report.snapshots])
        if len(times) == 1:  # one snapshot: a stacked bar (a stacked area needs two points)
            bottom = 0
            for state, values in zip(STATE_COLUMNS, series, strict=True):
                ax.bar(_num(times), values, width=0.5, bottom=bottom, color=COLOURS[state], label=state)
                bottom += values[0]
        else:
            ax.stackplot(
                _num(times),
                *series,
                labels=list(STATE_COLUMNS),
                colors=[COLOURS[s] for s in STATE_COLUMNS],
                alpha=0.9,
            )
        ax.legend(fontsize=7, loc="upper left")
    ax.set_ylabel("hosts")
    ax.set_title(f"{wave_name(wave or '')} states in the fleet picture")
    ax.grid(alpha=0.3)
    _time_axis(ax, times)
    fig.autofmt_xdate()
    return _svg(fig)


def _state_count(counts: WaveCounts | None, state: str) -> int:
    return 0 if counts is None else int(getattr(counts, state))


def chart_attempts(report: Report) -> str:
    """Attempts per hour (log scale) with the log-linear fit."""
    att = report.attempts
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if att.per_hour:
        xs = [h for h, _ in att.per_hour]
        ys = [n for _, n in att.per_hour]
        ax.bar(_num(xs), ys, width=1 / 24 * 0.8, color="#34495e", label="findings per hour")
        fit = att.fit
        if fit and fit.start:
            start = fit.start
            end = fit.end or xs[-1]
            inside = [x for x in xs if start <= x <= end]  # the line only where it was fitted
            hours = [(x - start).total_seconds() / 3600 for x in inside]
            a = fit.intercept  # the fit: counts = exp(a + b * hours since start)
            ax.plot(
                _num(inside),
                [math.exp(a + fit.rate_per_hour * h) for h in hours],
                color="#c0392b",
                label=(
                    f"fit: doubling {fit.doubling_hours:.2f} h"
                    if fit.doubling_hours
                    else f"fit: rate {fit.rate_per_hour:+.3f}/h"
                ),
            )
        elif att.fit_error:
            ax.text(
                0.02, 0.95, f"no fit drawn: {att.fit_error}", fontsize=7, va="top", transform=ax.transAxes
            )
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        _time_axis(ax, xs, timedelta(hours=2))
    else:
        ax.text(0.5, 0.5, "no hunt findings", ha="center", va="center", transform=ax.transAxes)
        ax.xaxis_date()
    ax.set_ylabel("attempts per hour (confirmed or likely)")
    ax.set_title("Exploitation attempts across hunted hosts")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _svg(fig)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em} .headline{font-size:1.2em;font-weight:600;padding:.6em;border-radius:6px}
.headline.protected{background:#eef6ee} .headline.exposed{background:#fdecea} .headline.unknown{background:#eeeeee}
.note{background:#fff4e0;padding:.5em;border-radius:6px} table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#f3f3f3} td.l,th.l{text-align:left}
.charts svg{max-width:100%;height:auto}
"""


def _table(headers: list[str], rows: Sequence[Sequence[object]], left: int = 0) -> str:
    head = "".join(
        f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='l'>{html.escape(str(c))}</td>" if i < left else f"<td>{html.escape(str(c))}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: Report, *, note: str | None = None, limit: int = 200) -> str:
    """One HTML document with the headline, three inline SVG charts and the tables."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>exwatch report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>exwatch fleet report</h1>",
    ]
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    level = html.escape(report.headline_level)
    parts.append(f"<p class='headline {level}'>{html.escape(report.headline)}</p>")
    parts.append("<div class='charts'>")
    parts.append(f"<figure id='chart-share'>{chart_share(report.snapshots)}</figure>")
    parts.append(f"<figure id='chart-states'>{chart_states(report)}</figure>")
    parts.append(f"<figure id='chart-attempts'>{chart_attempts(report)}</figure>")
    parts.append("</div>")
    parts.append("<h2>Exposed servers, longest exposed first</h2>")
    at_risk = [at_risk_row(r) for r in report.hosts_at_risk[:limit]]
    for row, host in zip(at_risk, report.hosts_at_risk, strict=False):
        row[6] = "" if host.exposed_days is None else str(host.exposed_days)  # the number as it is
    parts.append(
        _table(["host", "address", "name", "wave", "build", "exposed since", "days", "fix"], at_risk, left=8)
    )
    parts.append("<h2>Compromised before protected</h2>")
    parts.append(
        _table(
            ["host", "address", "wave", "first evidence", "protected at", "findings"],
            [_compromise_cells(c) for c in report.compromised_before_protected[:limit]],
            left=5,
        )
    )
    parts.append("<h2>Details</h2>")
    parts.append(_details(report))
    parts.append("</body></html>")
    return "\n".join(parts)


def _compromise_cells(c: Compromise) -> list[object]:
    return [
        f"#{c.host_id}",
        c.address or "",
        c.wave,
        c.first_evidence.isoformat() if c.first_evidence else None,
        c.protected_at.isoformat() if c.protected_at else "never",
        c.findings,
    ]


def _details(report: Report) -> str:
    """The fleet picture per wave, the change, the attempts and the definitions, as HTML."""
    out = []
    for wave in sorted({w for s in report.snapshots for w in s.waves}):
        out.append(f"<h3>{html.escape(wave_name(wave))}: the fleet picture at each scan (unit: hosts)</h3>")
        out.append(
            _table(
                ["scan", "time", "hosts", *STATE_COLUMNS, "stale", "protected", "bounds"],
                picture_rows(report, wave),
                left=2,
            )
        )
    out.append("<h3>Change</h3><ul>")
    out.extend(f"<li>{html.escape(line.strip())}</li>" for line in _change_lines(report))
    out.append("</ul>")
    out.append(f"<p>{html.escape(_attempt_line(report))}</p>")
    out.append("<h3>Definitions</h3><dl>")
    for key, text in report.definitions.items():
        out.append(f"<dt>{html.escape(key)}</dt><dd>{html.escape(text)}</dd>")
    out.append("</dl>")
    return "\n".join(out)
