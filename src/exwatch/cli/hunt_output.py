"""What ``exwatch hunt`` and ``exwatch cluster hunt`` print: the findings table with each host's next
steps, and the rule notes and file errors on stderr. Evidence text is never read as markup."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from exwatch.hunt import (
    CONFIDENCE_RANK,
    Finding,
    HuntResult,
    NextSteps,
    centre_excerpt,
    iso_z,
    safe_text,
)


def print_notes(result: HuntResult, console: Console) -> None:
    """The rule notes and each file error as a warning on stderr (evidence text as text, never markup)."""
    for note in result.stats.notes:
        console.print(Text(f"note: {note}"), highlight=False, soft_wrap=True)
    for e in result.errors:
        console.print(Text.assemble(("warning:", "yellow"), " ", e.error), highlight=False, soft_wrap=True)


def render_hunt(result: HuntResult, floor: str = "likely") -> None:
    """The table: per host its verdict and coverage, its findings at or above ``floor`` with the rule's
    title and a safe excerpt, then its next steps. Evidence text is never read as markup."""
    out = Console(width=max(Console().width, 160), highlight=False)
    rank = CONFIDENCE_RANK[floor]
    for h in result.hosts:
        c = h.counts
        out.print(
            Text.assemble(
                (h.host, "bold"),
                f": {h.verdict}  ({c['confirmed']} confirmed, {c['likely']} likely, {c['review']} review)",
            )
        )
        for fam, cov in sorted(h.coverage.logs.items()):
            out.print(
                Text(
                    f"  coverage {fam}: {iso_z(cov.first) or '?'} .. {iso_z(cov.last) or '?'} ({cov.files} files)"
                )
            )
        for w in h.warnings:
            out.print(Text.assemble("  ", ("coverage warning:", "yellow"), f" {w}"))
        mine = [f for f in result.findings if f.host == h.host]
        shown = [f for f in mine if CONFIDENCE_RANK[f.confidence] >= rank]
        hidden = len(mine) - len(shown)
        if shown:
            out.print(_findings_table(h.host, shown, floor))
        if hidden:
            out.print(
                Text(
                    f"  {hidden} finding(s) below {floor} not shown (--all or --min-confidence review shows them)"
                )
            )
        _render_next_steps(out, h.host, h.next_steps)
        out.print()


EXCERPT_WIDTH = 160


def _findings_table(host: str, shown: list[Finding], floor: str) -> Table:
    """One host's findings by wave in time order: where each is, and an excerpt of the evidence centred
    on the matched part ("…" where it is cut)."""
    table = Table(
        title=f"Findings on {safe_text(host, 60)}, by wave in time order"
        + (f" ({floor} and above)" if floor != "review" else ""),
        show_lines=False,
        title_justify="left",
    )
    table.add_column("wave", no_wrap=True, max_width=13)
    table.add_column("time (UTC)", no_wrap=True, min_width=20)
    table.add_column("confidence", no_wrap=True, max_width=10)
    table.add_column("finding", ratio=2, overflow="fold")
    table.add_column("evidence", ratio=3, overflow="fold")
    last_wave = None
    for f in shown:
        ev = f.evidence
        where = ev.file + (f":{ev.line}" if ev.line else "") + (f" record {ev.record}" if ev.record else "")
        finding = Text(safe_text(f.title, 120))
        finding.append("\n" + f.rule, style="dim")
        evidence = Text(safe_text(where, EXCERPT_WIDTH))
        if ev.excerpt and ev.excerpt != ev.file:
            view, _ = centre_excerpt(ev.excerpt, EXCERPT_WIDTH, ev.focus)
            evidence.append("\n" + safe_text(view, EXCERPT_WIDTH), style="cyan")
        table.add_row(
            f.wave if f.wave != last_wave else "", iso_z(f.time) or "-", f.confidence, finding, evidence
        )
        last_wave = f.wave
    return table


LIST_MAX = 20


def _render_next_steps(out: Console, host: str, steps: NextSteps | None) -> None:
    def line(text: str, style: str = "") -> None:
        out.print(Text(text, style=style), soft_wrap=True)  # a path or SHA-256 is never cut

    line(f"Next steps for {safe_text(host, 60)}", "bold")
    steps = steps or NextSteps()
    window = steps.window
    if not window:
        line(
            "  Nothing likely or confirmed: no action from this hunt (the coverage above says how far back it saw)."
        )
    else:
        line(
            f"  Window to investigate: {iso_z(window.first)} .. {iso_z(window.last)} (first and last likely or confirmed evidence)"
        )
    _render_files(line, steps)
    _render_people(line, steps)
    fix = steps.fix
    if fix:
        seen = fix.scanned_at.isoformat() if fix.scanned_at else ""
        where = {
            "store": f"from the store: build {fix.build} seen {seen}".rstrip(),
            "collection": f"from the collection's build {fix.build}",
            "kb": "build not known: exwatch scan HOST names the exact update",
        }.get(fix.source, fix.source)
        line(f"  Fix ({where}): {fix.text}")
    elif window:
        line("  Fix: scan the server (exwatch scan HOST) for the update its build needs.")


def _more(line: Callable[[str], None], rows: Sequence[object]) -> None:
    if len(rows) > LIST_MAX:
        line(f"    ... and {len(rows) - LIST_MAX} more (--format json lists them all)")


def _when(first: datetime | None, last: datetime | None) -> str:
    return f"{iso_z(first) or '?'} .. {iso_z(last) or '?'}"


def _render_files(line: Callable[[str], None], steps: NextSteps) -> None:
    """The files to remove or inspect, and the files the logs name that the package does not hold."""
    for action, head in (
        ("remove", "Files to remove (a confirmed finding; keep a copy as evidence first):"),
        ("inspect", "Files to inspect:"),
    ):
        rows = [r for r in steps.files if r.action == action]
        if rows:
            line(f"  {head}")
            for r in rows[:LIST_MAX]:
                line(
                    f"    {safe_text(r.path, 200)}  sha256 {r.sha256 or '-'}  ({', '.join(r.seen.rules[:3])})"
                )
            _more(line, rows)
    named = steps.files_named_in_logs
    if named:
        line("  Files the logs name that the package does not hold (look for them on the server):")
        for n in named[:LIST_MAX]:
            line(
                f"    {safe_text(n.path, 200)}  ({', '.join(n.seen.rules[:3])}; {safe_text(n.named_in, 120)})"
            )
        _more(line, named)


def _render_people(line: Callable[[str], None], steps: NextSteps) -> None:
    """The attacker addresses and the accounts used."""
    addresses = steps.addresses
    if addresses:
        line("  Attacker addresses (block them; search firewall, proxy and other servers' logs for them):")
        for r in addresses[:LIST_MAX]:
            notes = [
                n
                for n, on in (
                    ("published attacker list", r.published),
                    ("internal: a proxy, load balancer or the server itself", r.internal),
                )
                if on
            ]
            line(
                f"    {safe_text(r.address, 60)}  {r.seen.findings} finding(s) {_when(r.seen.first, r.seen.last)}"
                + (f"  ({'; '.join(notes)})" if notes else "")
            )
        _more(line, addresses)
    accounts = steps.accounts
    if accounts:
        line(
            "  Accounts used (reset their passwords, review their sessions, mailbox rules and role assignments):"
        )
        for a in accounts[:LIST_MAX]:
            note = "  (system account: commands ran with the server's own rights)" if a.system else ""
            line(
                f"    {safe_text(a.account, 120)}  {a.seen.findings} finding(s) {_when(a.seen.first, a.seen.last)}{note}"
            )
        _more(line, accounts)
