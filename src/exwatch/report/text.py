"""The report as a terminal table (rich) and as Markdown."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table

from exwatch.fleet.metrics import WaveCounts
from exwatch.fleet.rows import Compromise, HostState
from exwatch.report.model import Report, wave_name

STATE_COLUMNS = ("vulnerable", "patched", "mitigated", "unknown", "not_affected")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _bounds(bounds: Sequence[float] | None) -> str:
    return "-" if not bounds else f"{bounds[0] * 100:.1f}-{bounds[1] * 100:.1f}%"


def _change_lines(report: Report) -> list[str]:
    c7 = report.change_7d
    if not c7:
        return ["Change: no fleet picture about 7 days before the latest one."]
    lines = [
        f"Change against scan {c7.against_scan} ({c7.against_time.isoformat()[:16]}, {c7.days:g} days earlier):"
    ]
    for wave, ch in c7.waves.items():
        pp = "n/a" if ch.delta_pp is None else f"{ch.delta_pp:+.1f} pp"
        rel = "n/a" if ch.unprotected_rel_change is None else f"{ch.unprotected_rel_change * 100:+.1f}%"
        share = ch.protected_share_rel_change
        share_rel = "n/a" if share is None else f"{share * 100:+.1f}%"
        lines.append(
            f"  {wave_name(wave)}: protected share {pp} (percentage points); vulnerable count {rel} "
            f"({ch.vulnerable_before:,} -> {ch.vulnerable_now:,}, relative); protected share {share_rel} "
            f"(relative); universe {ch.universe_change:+,} hosts"
        )
    return lines


def _attempt_line(report: Report) -> str:
    att = report.attempts
    if not att.total:
        return "Exploitation attempts: no hunt findings in the store."
    fit = att.fit
    text = f"Exploitation attempts: {att.total:,} findings over {len(att.per_hour)} hours with attempts"
    if fit and fit.doubling_hours:
        lo, hi = fit.doubling_ci
        hi_text = "unbounded" if hi is None else f"{hi:.2f} h"
        lo_text = "-" if lo is None else f"{lo:.2f} h"
        text += (
            f"; log-linear fit over {fit.points} hours: doubling every {fit.doubling_hours:.2f} h "
            f"(95% CI {lo_text} to {hi_text}, R² {fit.r_squared:.2f})"
        )
    elif fit:
        text += f"; log-linear fit: no growth (rate {fit.rate_per_hour:+.3f}/h)"
    elif att.fit_error:
        text += f"; no fit: {att.fit_error}"
    return text + "."


def picture_rows(report: Report, wave: str, time_width: int = 16) -> list[list[str]]:
    """The fleet picture of one wave at each scan: scan, time, hosts, the states, stale, share, bounds."""
    rows = []
    for snap in report.snapshots:
        c = snap.waves.get(wave)
        if c is None:
            continue
        rows.append(
            [
                str(snap.scan_id),
                snap.time.isoformat()[:time_width].replace("T", " "),
                f"{c.hosts:,}",
                *(f"{_count(c, s):,}" for s in STATE_COLUMNS),
                f"{c.stale:,}",
                _pct(c.protected_share),
                _bounds(c.protected_bounds),
            ]
        )
    return rows


def _count(counts: WaveCounts, state: str) -> int:
    return int(getattr(counts, state))


def at_risk_row(row: HostState) -> list[str]:
    """host, address, name, wave, build, exposed since, days, fix."""
    return [
        f"#{row.host_id}",
        row.address or "",
        row.name or row.fe_server or "",
        row.wave,
        row.build or "",
        (row.exposed_since.isoformat() if row.exposed_since else "")[:10],
        "" if row.exposed_days is None else f"{row.exposed_days:g}",
        row.fix or "",
    ]


def _when(when: datetime | None) -> str:
    return when.isoformat() if when else ""


def compromise_row(row: Compromise, time_width: int = 16) -> list[str]:
    """host, address, wave, first evidence, protected at, findings."""
    return [
        f"#{row.host_id}",
        row.address or row.name or "",
        row.wave,
        _when(row.first_evidence)[:time_width].replace("T", " "),
        (_when(row.protected_at) or "never")[:time_width].replace("T", " "),
        str(row.findings),
    ]


def render_table(report: Report, *, width: int = 130, limit: int = 15) -> str:
    """The report for a terminal: headline, trend, change, hosts at risk, compromise (no text is cut:
    long cells wrap)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    console.print(report.headline)
    console.print()
    for wave in sorted({w for s in report.snapshots for w in s.waves}):
        table = Table(
            title=f"{wave_name(wave)}: the fleet picture at each scan (unit: hosts)", title_justify="left"
        )
        for col in ("scan", "time", "hosts", *STATE_COLUMNS, "stale", "protected", "bounds"):
            table.add_column(col, justify="right" if col not in ("time",) else "left")
        for row in picture_rows(report, wave):
            table.add_row(*row)
        console.print(table)
    for line in _change_lines(report):
        console.print(line)
    console.print(_attempt_line(report))
    at_risk = report.hosts_at_risk
    table = Table(
        title=f"Exposed servers, longest exposed first ({len(at_risk):,} in the fleet picture)",
        title_justify="left",
    )
    for col in ("host", "address", "name", "wave", "build", "exposed since", "days", "fix"):
        table.add_column(col, overflow="fold", min_width=30 if col == "fix" else None)
    for host in at_risk[:limit]:
        table.add_row(*at_risk_row(host))
    console.print(table)
    cbp = report.compromised_before_protected
    table = Table(title=f"Compromised before protected ({len(cbp)} hosts/waves)", title_justify="left")
    for col in ("host", "address", "wave", "first evidence", "protected at", "findings"):
        table.add_column(col, overflow="fold")
    for c in cbp[:limit]:
        table.add_row(*compromise_row(c))
    console.print(table)
    return buf.getvalue()


def render_markdown(report: Report, *, limit: int = 50) -> str:
    """The report as Markdown (tables in GitHub style)."""
    out = [f"# exwatch report\n\n**{report.headline}**\n"]
    for wave in sorted({w for s in report.snapshots for w in s.waves}):
        out.append(f"\n## {wave_name(wave)}: the fleet picture at each scan (unit: hosts)\n")
        out.append("| scan | time | hosts | " + " | ".join(STATE_COLUMNS) + " | stale | protected | bounds |")
        out.append("|" + "---|" * (len(STATE_COLUMNS) + 6))
        for cells in picture_rows(report, wave):
            cells[1] = cells[1].replace(" ", "T")
            out.append("| " + " | ".join(cells) + " |")
    out.append("\n## Change\n")
    out.extend(f"- {line.strip()}" for line in _change_lines(report))
    out.append(f"\n{_attempt_line(report)}\n")
    out.append(f"\n## Exposed servers ({len(report.hosts_at_risk):,}), longest exposed first\n")
    out.append(
        "| host | address | wave | build | exposed since | days | fix |\n|---|---|---|---|---|---|---|"
    )
    for row in report.hosts_at_risk[:limit]:
        out.append(
            f"| #{row.host_id} | {row.address or ''} | {row.wave} | {row.build or ''} | "
            f"{_when(row.exposed_since)[:10]} | {row.exposed_days if row.exposed_days is not None else ''} | "
            f"{(row.fix or '').replace('|', '/')} |"
        )
    cbp = report.compromised_before_protected
    out.append(f"\n## Compromised before protected ({len(cbp)})\n")
    out.append(
        "| host | address | wave | first evidence | protected at | findings |\n|---|---|---|---|---|---|"
    )
    for c in cbp[:limit]:
        out.append(
            f"| #{c.host_id} | {c.address or ''} | {c.wave} | {_when(c.first_evidence) or None} | "
            f"{_when(c.protected_at) or 'never'} | {c.findings} |"
        )
    out.append("\n## Definitions\n")
    out.extend(f"- **{k}**: {v}" for k, v in report.definitions.items())
    return "\n".join(out) + "\n"
