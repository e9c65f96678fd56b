"""``exwatch hunt``: hunt triage folders, archives or a live install for compromise evidence."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from exwatch.cli.common import (
    db_option,
    echo_json,
    echo_jsonl,
    format_option,
    parse_time,
    resolve_db,
    stderr_console,
    verbosity,
)
from exwatch.hunt import (
    CONFIDENCE_RANK,
    Finding,
    HuntOptions,
    HuntResult,
    Progress,
    apply_limits,
    centre_excerpt,
    hunt_paths,
    iso_z,
    limit_options,
    record_hunt,
    refuse_store_in_evidence,
    safe_text,
)

F = TypeVar("F", bound=Callable[..., Any])


def window_options(f: F) -> F:
    """``--since`` and ``--until``: the window of evidence a hunt reads (``exwatch hunt``, ``cluster hunt``)."""
    f = click.option("--until", default=None, metavar="T", help="Only evidence at or before this time.")(f)
    return click.option(
        "--since",
        default=None,
        metavar="T",
        help="Only evidence at or after this ISO 8601 time (UTC if no zone).",
    )(f)


def print_notes(result: HuntResult, console: Console) -> None:
    """The rule notes and each file error as a warning on stderr (evidence text as text, never markup)."""
    for note in result.stats.get("notes", []):
        console.print(Text(f"note: {note}"), highlight=False, soft_wrap=True)
    for e in result.errors:
        console.print(Text.assemble(("warning:", "yellow"), " ", e.error), highlight=False, soft_wrap=True)


@click.command("hunt")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--host", default=None, help="Host name for the findings (default: the PATH's name).")
@window_options
@click.option(
    "--rules",
    "rule_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra Sigma rules (folder or file); repeatable.",
)
@click.option(
    "--yara",
    "yara_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra YARA rule file for YARA-X; repeatable.",
)
@click.option(
    "--iocs",
    "ioc_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra indicators: STIX 2.1 bundle or type,value CSV.",
)
@click.option(
    "--exchange-path",
    type=click.Path(path_type=Path),
    default=None,
    help="Exchange install folder (live hunt).",
)
@click.option("--iis-logs", type=click.Path(path_type=Path), default=None, help="IIS log folder (live hunt).")
@click.option("--jobs", type=int, default=0, help="Worker processes (default: one per core).")
@click.option("--no-builtin", is_flag=True, help="Run only the rules given with --rules/--yara/--iocs.")
@click.option(
    "--min-confidence",
    type=click.Choice(["review", "low", "likely", "confirmed"], case_sensitive=False),
    default=None,
    help="Show findings at or above this confidence (low = review). Default: likely in the table, every finding in json/jsonl.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every finding, review-level ones included.")
@click.option(
    "-v", "--verbose", count=True, help="Progress on stderr (files, bytes/s); same as exwatch -v hunt."
)
@format_option("table", "json", "jsonl")
@db_option
@click.option("--no-store", is_flag=True, help="Do not write the findings to the store.")
@click.option(
    "--no-verify", is_flag=True, help="Hunt a collection package even if it does not match its manifest."
)
@limit_options
def hunt(
    paths: tuple[Path, ...],
    host: str | None,
    since: str | None,
    until: str | None,
    rule_dirs: tuple[Path, ...],
    yara_files: tuple[Path, ...],
    ioc_files: tuple[Path, ...],
    exchange_path: Path | None,
    iis_logs: Path | None,
    jobs: int,
    no_builtin: bool,
    min_confidence: str | None,
    show_all: bool,
    verbose: int,
    fmt: str,
    db_url: str | None,
    no_store: bool,
    no_verify: bool,
) -> None:
    """Hunt PATH... (triage folders or .zip/.7z/.tar.gz archives; none = the live Exchange install on Windows).

    A folder holding several triage packages (sub-folders or archives, each with its own volume
    folders) is hunted as several hosts. The table shows likely and confirmed findings, then the next
    steps per host (files with SHA-256, attacker addresses, accounts, the window, the fix).

    Exit codes: 0 clean (review-level notes may be listed), 1 a finding of likely or confirmed
    confidence, 3 nothing above review but some files could not be read, 2 bad input.
    """
    options = HuntOptions(
        host=host,
        since=parse_time(since, "--since") if since else None,
        until=parse_time(until, "--until") if until else None,
        rule_dirs=rule_dirs,
        yara_files=yara_files,
        ioc_files=ioc_files,
        exchange_path=exchange_path,
        iis_logs=iis_logs,
        jobs=jobs,
        builtin_rules=not no_builtin,
        verify_collections=not no_verify,
    )
    console = stderr_console()
    store_url = None if no_store else resolve_db(db_url)
    if store_url is not None:
        _refuse_store_in_evidence(store_url, [*paths, *(p for p in (exchange_path, iis_logs) if p)])
    floor = "review" if show_all else (min_confidence or ("likely" if fmt == "table" else "review")).lower()
    floor = "review" if floor == "low" else floor
    started = datetime.now(UTC)
    show_progress = verbose + verbosity() >= 1
    result = hunt_paths(
        list(paths), apply_limits(options), progress=_progress(console) if show_progress else None
    )
    if store_url is not None:
        _store(result, store_url, started, console)
    _output(result, fmt, floor)
    print_notes(result, console)
    raise SystemExit(result.exit_code)


def _output(result: HuntResult, fmt: str, floor: str) -> None:
    """The result on stdout: the JSON document, JSON lines (one per host, finding and error), or the table."""
    if fmt == "table":
        _render(result, floor=floor)
        return
    data = result.to_dict(floor)
    if fmt == "json":
        echo_json(data)
    else:
        echo_jsonl(
            [{"type": "host", **h} for h in data["hosts"]]
            + [{"type": "finding", **f} for f in data["findings"]]
            + [{"type": "error", **e} for e in data["errors"]]
        )


def _refuse_store_in_evidence(url: str, evidence: list[Path]) -> None:
    """A SQLite store must not be (or be created) inside the evidence, whatever the URL spelling."""
    refuse_store_in_evidence(url, evidence)


def _progress(console: Console) -> Any:
    """A progress callback printing on stderr, at most every 2 s and at the end of each host."""
    last = [time.monotonic()]  # the first line after 2 s: a short hunt prints only its end

    def report(p: Progress) -> None:
        now = time.monotonic()
        if not p.host_finished and now - last[0] < 2.0:
            return
        last[0] = now
        line = (
            f"hunt: {p.host} ({p.hosts_done}/{p.hosts_total} hosts done): {p.files_done}/{p.files_total} files, "
            f"{p.bytes_done / 1e6:,.1f} of {p.bytes_total / 1e6:,.1f} MB, {p.rate / 1e6:,.1f} MB/s"
        )
        console.print(Text(line), highlight=False, soft_wrap=True)

    return report


def _store(result: HuntResult, url: str, started: datetime, console: Console) -> None:
    """Store each host's hunt (``exwatch.hunt.record_hunt``); say on stderr when its name matches no
    scanned host or several. A store that cannot be written is a warning: the findings are still shown."""
    from exwatch.errors import StoreError
    from exwatch.fleet import open_store

    try:
        with open_store(url) as store:
            stored = record_hunt(store, result, started_at=started)
    except StoreError as exc:
        stderr_console().print(Text(f"warning: findings not stored: {exc}"), highlight=False, soft_wrap=True)
        return
    for s in stored:
        if s.message:
            console.print(Text(f"note: {s.message}"), highlight=False, soft_wrap=True)


def _render(result: HuntResult, _console: object = None, floor: str = "likely") -> None:
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
        for fam, cov in sorted(h.coverage.items()):
            if "first" in cov:
                out.print(
                    Text(
                        f"  coverage {fam}: {cov.get('first') or '?'} .. {cov.get('last') or '?'} ({cov['files']} files)"
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


def _render_next_steps(out: Console, host: str, steps: dict[str, Any]) -> None:
    def line(text: str, style: str = "") -> None:
        out.print(Text(text, style=style), soft_wrap=True)  # a path or SHA-256 is never cut

    line(f"Next steps for {safe_text(host, 60)}", "bold")
    window = steps.get("window")
    if not window:
        line(
            "  Nothing likely or confirmed: no action from this hunt (the coverage above says how far back it saw)."
        )
    else:
        line(
            f"  Window to investigate: {window['first']} .. {window['last']} (first and last likely or confirmed evidence)"
        )
    _render_files(line, steps)
    _render_people(line, steps)
    fix = steps.get("fix")
    if fix:
        where = {
            "store": f"from the store: build {fix.get('build')} seen {fix.get('scanned_at') or ''}".rstrip(),
            "collection": f"from the collection's build {fix.get('build')}",
            "kb": "build not known: exwatch scan HOST names the exact update",
        }.get(str(fix.get("source")), str(fix.get("source")))
        line(f"  Fix ({where}): {fix.get('text')}")
    elif window:
        line("  Fix: scan the server (exwatch scan HOST) for the update its build needs.")


def _more(line: Callable[[str], None], rows: list[Any]) -> None:
    if len(rows) > LIST_MAX:
        line(f"    ... and {len(rows) - LIST_MAX} more (--format json lists them all)")


def _render_files(line: Callable[[str], None], steps: dict[str, Any]) -> None:
    """The files to remove or inspect, and the files the logs name that the package does not hold."""
    files = steps.get("files", [])
    for action, head in (
        ("remove", "Files to remove (a confirmed finding; keep a copy as evidence first):"),
        ("inspect", "Files to inspect:"),
    ):
        rows = [r for r in files if r["action"] == action]
        if rows:
            line(f"  {head}")
            for r in rows[:LIST_MAX]:
                line(
                    f"    {safe_text(r['path'], 200)}  sha256 {r.get('sha256') or '-'}  ({', '.join(r['rules'][:3])})"
                )
            _more(line, rows)
    named = steps.get("files_named_in_logs", [])
    if named:
        line("  Files the logs name that the package does not hold (look for them on the server):")
        for r in named[:LIST_MAX]:
            line(
                f"    {safe_text(r['path'], 200)}  ({', '.join(r['rules'][:3])}; {safe_text(r.get('named_in', ''), 120)})"
            )
        _more(line, named)


def _render_people(line: Callable[[str], None], steps: dict[str, Any]) -> None:
    """The attacker addresses and the accounts used."""
    addresses = steps.get("addresses", [])
    if addresses:
        line("  Attacker addresses (block them; search firewall, proxy and other servers' logs for them):")
        for r in addresses[:LIST_MAX]:
            notes = [
                n
                for n, on in (
                    ("published attacker list", r.get("published")),
                    ("internal: a proxy, load balancer or the server itself", r.get("internal")),
                )
                if on
            ]
            line(
                f"    {safe_text(r['address'], 60)}  {r['findings']} finding(s) {r['first'] or '?'} .. {r['last'] or '?'}"
                + (f"  ({'; '.join(notes)})" if notes else "")
            )
        _more(line, addresses)
    accounts = steps.get("accounts", [])
    if accounts:
        line(
            "  Accounts used (reset their passwords, review their sessions, mailbox rules and role assignments):"
        )
        for r in accounts[:LIST_MAX]:
            note = "  (system account: commands ran with the server's own rights)" if r.get("system") else ""
            line(
                f"    {safe_text(r['account'], 120)}  {r['findings']} finding(s) {r['first'] or '?'} .. {r['last'] or '?'}{note}"
            )
        _more(line, accounts)
