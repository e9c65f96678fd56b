"""``exwatch scan``: fingerprint Exchange servers, judge them per wave, store the snapshot."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from exwatch.cli.common import (
    EXIT_INCOMPLETE,
    db_option,
    echo_json,
    format_option,
    resolve_db,
    stderr_console,
    verbosity,
)
from exwatch.errors import InputError
from exwatch.scan.engine import Progress as ScanProgress
from exwatch.scan.engine import ScanOptions, ScanSummary, run_scan
from exwatch.scan.observation import worst_state
from exwatch.scan.targets import parse_ports

CSV_FIELDS = (
    "key",
    "target",
    "address",
    "port",
    "status",
    "error",
    "build",
    "build_source",
    "cu_only",
    "product",
    "fe_server",
    "proxylogon",
    "proxyshell",
    "proxynotshell",
    "conflicts",
    "time",
)
STATE_STYLE = {
    "vulnerable": "bold red",
    "unknown": "yellow",
    "mitigated": "cyan",
    "patched": "green",
    "not_affected": "dim",
    "unreachable": "magenta",
    "not_exchange": "dim",
}


def parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    """``--tag K=V`` values as a dict; anything else is an InputError."""
    out: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--tag {tag!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


_parse_tags = parse_tags  # the name exwatch.cli.cluster imports


def whole_scan_line(summary: ScanSummary) -> str | None:
    """For a resumed scan, one line with the stored counts of all its runs (None otherwise)."""
    whole = summary.whole
    if whole is None:
        return None
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(whole.statuses.items()))
    waves = "; ".join(
        f"{wave}: " + ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
        for wave, counts in sorted(whole.waves.items())
    )
    return f"whole scan {summary.scan_id} (every run): {statuses}" + (f"; {waves}" if waves else "")


def _csv_row(rec: dict[str, Any]) -> dict[str, Any]:
    row = {k: rec.get(k) for k in CSV_FIELDS if k in rec}
    for wave, v in (rec.get("waves") or {}).items():
        row[wave] = v.get("state")
    row["conflicts"] = "; ".join(rec.get("conflicts") or [])
    return row


def _build_key(build: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in build.split("."))
    except ValueError:
        return (0,)


def fix_summary(rec: dict[str, Any]) -> str:
    """The one update that closes every exposed wave of a host, in a few words (the kb's fix data)."""
    need_su: list[str] = []
    need_cu: list[str] = []
    for v in rec["waves"].values():
        if v.get("state") not in ("vulnerable", "unknown"):
            continue
        fix = v.get("fix") or {}
        if fix.get("security_update"):
            need_su.append(max(fix["security_update"], key=_build_key))
        elif fix.get("cumulative_update"):
            need_cu.append(fix["cumulative_update"])
    if need_cu:
        return f"update to CU {max(need_cu, key=_build_key)} or later, then its latest SU"
    if need_su:
        return f"install SU: build {max(need_su, key=_build_key)} or later"
    return ""


def render_table(summary: ScanSummary, console: Console) -> None:
    """Per-wave counts, then the exposed hosts worst first with the update that fixes each."""
    d = summary.to_dict()
    console.print(
        f"scan {summary.scan_id}: {summary.scanned} target(s) in {summary.seconds:.1f} s"
        + (f", {summary.skipped} done before the resume" if summary.skipped else "")
        + f"  ({', '.join(f'{k} {v}' for k, v in sorted(d['statuses'].items()))})"
    )
    states = ["vulnerable", "unknown", "mitigated", "patched", "not_affected"]
    table = Table(title="Exchange servers per wave", title_justify="left")
    table.add_column("wave")
    for state in states:
        table.add_column(state, justify="right", style=STATE_STYLE[state])
    for wave, counts in summary.waves.items():
        table.add_row(wave, *[str(counts.get(s, 0)) for s in states])
    console.print(table)
    whole = whole_scan_line(summary)
    if whole is not None:
        console.print(whole, markup=False, highlight=False)
    if summary.errors:
        console.print(
            "unreachable by error class: " + ", ".join(f"{k} {v}" for k, v in summary.errors.most_common())
        )
    exposed = sorted(summary.exposed, key=lambda r: (worst_state(r), str(r.get("key"))))
    if not exposed:
        console.print("No exposed Exchange server.")
        return
    hosts = Table(title="Exposed hosts (worst first)", title_justify="left")
    for col in ("host", "build", "source", "proxylogon", "proxyshell", "proxynotshell", "fix"):
        hosts.add_column(col, overflow="fold")
    for rec in exposed[:200]:
        cells = []
        for wave in ("proxylogon", "proxyshell", "proxynotshell"):
            state = (rec["waves"].get(wave) or {}).get("state", "")
            cells.append(f"[{STATE_STYLE.get(state, '')}]{state}[/]")
        source = (rec.get("build_source") or "") + (" (CU only)" if rec.get("cu_only") else "")
        hosts.add_row(str(rec["key"]), str(rec.get("build") or "?"), source, *cells, fix_summary(rec))
    console.print(hosts)
    if len(exposed) > 200 or summary.exposed_dropped:
        console.print(f"... and {len(exposed) - 200 + summary.exposed_dropped} more (use --format jsonl)")


@click.command(
    "scan",
    epilog="Exit codes: 0 nothing exposed; 1 a vulnerable host; 2 bad input; 3 none vulnerable but some "
    "targets unreachable or unknown. --probe sends attack-shaped requests (ProxyLogon SSRF, ProxyShell path "
    "confusion, ProxyNotShell rule check) that leave traces in the server's logs and look like attacks: "
    "use it only on servers you are authorised to test.",
)
@click.argument("targets", nargs=-1)
@click.option(
    "--targets-file",
    "targets_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File of targets, one a line (# comments, key=value tags); a lab manifest works too.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="F",
    help="Address, CIDR, range, name, or a file of them, never to contact (files are re-read when they change).",
)
@click.option(
    "--ports", default="443,80", show_default=True, help="Ports to scan, e.g. 443,80 or 8443/https."
)
@click.option(
    "--probe",
    is_flag=True,
    help="Also send the behavioural probes (they leave traces in the server's logs; authorised targets only).",
)
@click.option("--concurrency", default=256, show_default=True, help="Targets scanned at once.")
@click.option(
    "--rate", default=0.0, show_default=True, help="Requests per second over the whole scan (0: no limit)."
)
@click.option(
    "--per-host", default=20.0, show_default=True, help="Requests per second to one address (0: no limit)."
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per request (connect, send, read).")
@click.option(
    "--host-budget",
    default=30.0,
    show_default=True,
    help="Wall-clock seconds per target, whatever the server does.",
)
@click.option("--max-body", default=128 * 1024, show_default=True, help="Bytes of each response body kept.")
@click.option(
    "--retries",
    default=1,
    show_default=True,
    help="Retries for transient errors (never for a probe's attack request).",
)
@click.option(
    "--shuffle/--no-shuffle",
    default=True,
    show_default=True,
    help="Spread the scan order across networks (bounded memory).",
)
@click.option("--seed", type=int, default=None, help="Seed of the shuffle (for a reproducible order).")
@click.option("--yes-large", is_flag=True, help="Allow ranges larger than a /16.")
@click.option(
    "--resume",
    "resume",
    type=int,
    default=None,
    metavar="SCAN_ID",
    help="Finish an interrupted scan with its stored parameters.",
)
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag every host of this scan (repeatable).")
@format_option("table", "json", "jsonl", "csv")
@db_option
def scan(
    targets: tuple[str, ...],
    targets_files: tuple[Path, ...],
    exclude: tuple[str, ...],
    ports: str,
    probe: bool,
    concurrency: int,
    rate: float,
    per_host: float,
    timeout: float,
    host_budget: float,
    max_body: int,
    retries: int,
    shuffle: bool,
    seed: int | None,
    yes_large: bool,
    resume: int | None,
    tags: tuple[str, ...],
    fmt: str,
    db_url: str | None,
) -> None:
    """Scan Exchange servers: build, per-wave state (ProxyLogon, ProxyShell, ProxyNotShell), fix.

    TARGETS are addresses, CIDRs, ranges (10.0.0.1-10.0.0.9, 10.0.0.1-9), host names, URLs, or files
    of them. Results go to the store as one snapshot; `--resume SCAN_ID` finishes an interrupted scan.
    """
    if resume is None and not targets and not targets_files:
        raise InputError("no target: give TARGET arguments, --targets-file, or --resume SCAN_ID")
    options = ScanOptions(
        ports=parse_ports(ports),
        probe=probe,
        concurrency=concurrency,
        rate=rate,
        per_host=per_host,
        timeout=timeout,
        host_budget=host_budget,
        max_body=max_body,
        retries=retries,
        shuffle=shuffle,
        seed=seed,
        yes_large=yes_large,
        exclude=tuple(exclude),
        targets_files=tuple(str(f) for f in targets_files),
    )
    options.validate()
    url = resolve_db(db_url)
    err = stderr_console()
    verbose = verbosity()
    out = Console(width=max(Console().width, 140))
    records: list[dict[str, Any]] = []
    csv_writer: csv.DictWriter[str] | None = None
    if fmt == "csv":
        csv_writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore")
        csv_writer.writeheader()

    def on_record(rec: dict[str, Any]) -> None:
        if fmt == "jsonl":
            sys.stdout.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif fmt == "csv" and csv_writer is not None:
            csv_writer.writerow(_csv_row(rec))
        elif fmt == "json":
            records.append(rec)

    started: dict[str, int] = {}
    show_bar = verbose >= 0 and sys.stderr.isatty()
    bar: Progress | None = None
    task_id: Any = None
    last_line = [0.0]

    def on_start(scan_id: int, total: int, problems: list[str]) -> None:
        nonlocal bar, task_id
        started["id"] = scan_id
        for message in problems:
            err.print(f"exwatch: warning: skipped {message}", markup=False, highlight=False)
        if verbose >= 0:
            err.print(f"scan {scan_id}: {total:,} target(s), store {url.split('://', 1)[0]}", highlight=False)
        if show_bar:
            bar = Progress(
                TextColumn("scan {task.fields[scan]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "{task.fields[rate]:.0f}/s, {task.fields[errors]} unreachable, {task.fields[vuln]} vulnerable"
                ),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            )
            bar.start()
            task_id = bar.add_task("scan", total=total or None, scan=scan_id, rate=0.0, errors=0, vuln=0)

    def on_progress(p: ScanProgress) -> None:
        if bar is not None:
            bar.update(
                task_id,
                completed=p.done,
                total=p.total or None,
                rate=p.rate,
                errors=p.errors,
                vuln=p.vulnerable,
            )
        elif verbose >= 1 and time.monotonic() - last_line[0] >= 5.0:
            last_line[0] = time.monotonic()
            eta = f", {p.eta:.0f} s left" if p.eta is not None else ""
            click.echo(
                f"exwatch: scan: {p.done:,}/{p.total:,} done, {p.rate:.0f}/s, {p.errors:,} unreachable, "
                f"{p.vulnerable:,} vulnerable{eta}",
                err=True,
            )

    try:
        summary = run_scan(
            list(targets),
            options,
            url,
            tags=parse_tags(tags),
            resume=resume,
            on_record=on_record,
            progress=on_progress,
            on_start=on_start,
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        scan_id = started.get("id")
        hint = f": finish it with `exwatch scan --resume {scan_id}`" if scan_id is not None else ""
        click.echo(f"exwatch: interrupted; finished hosts are stored{hint}", err=True)
        click.get_current_context().exit(EXIT_INCOMPLETE)
    if bar is not None:
        bar.stop()
    if fmt == "json":
        echo_json(
            {"summary": summary.to_dict(), "hosts": sorted(records, key=lambda r: (worst_state(r), r["key"]))}
        )
    elif fmt == "table":
        render_table(summary, out)
    if verbose >= 0 and fmt != "table":
        d = summary.to_dict()
        err.print(
            f"scan {summary.scan_id}: {summary.scanned:,} target(s) in {summary.seconds:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in sorted(d["statuses"].items()))
            + f"; {summary.vulnerable} vulnerable host(s)",
            highlight=False,
        )
        whole = whole_scan_line(summary)
        if whole is not None:
            err.print(whole, markup=False, highlight=False)
    click.get_current_context().exit(summary.exit_code)
