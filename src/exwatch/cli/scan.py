"""``exwatch scan``: fingerprint Exchange servers, judge them per wave, store the snapshot."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from exwatch.cli.common import (
    EXIT_FOUND,
    EXIT_INCOMPLETE,
    csv_cell,
    db_option,
    echo_json,
    format_option,
    quiet_stdout,
    resolve_db,
    stderr_console,
    verbosity,
)
from exwatch.errors import InputError

if TYPE_CHECKING:  # the engine, rich and the knowledge base load when a scan runs, not for --help
    from rich.console import Console
    from rich.progress import Progress

    from exwatch.record import ExposedHost, HostRecord
    from exwatch.scan.summary import Progress as ScanProgress
    from exwatch.scan.summary import ScanSummary

CSV_FIELDS = (
    "host",
    "key",
    "target",
    "address",
    "port",
    "services",
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
    "conflict",
    "conflicts",
    "fix",
    "kb",
    "fix_build",
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


def services_text(rec: HostRecord) -> str:
    """A host's services in a few words: ``443/https exchange; 80/http unreachable (refused)``."""
    parts = []
    for svc in rec.get("services") or []:
        error = f" ({svc['error']})" if svc.get("error") else ""
        parts.append(f"{svc.get('port')}/{svc.get('scheme')} {svc.get('status')}{error}")
    return "; ".join(parts)


def _csv_row(rec: HostRecord) -> dict[str, object]:
    """One CSV row: the record's ``CSV_FIELDS``, one column per wave (its state), the services in words."""
    row = {k: rec.get(k) for k in CSV_FIELDS if k in rec}
    for wave, v in (rec.get("waves") or {}).items():
        row[wave] = v.get("state")
    row["services"] = services_text(rec)
    row["conflicts"] = "; ".join(rec.get("conflicts") or [])
    row["kb"] = rec.get("fix_kb") or ""
    return row


def fix_summary(rec: HostRecord | ExposedHost) -> str:
    """The one update that closes every exposed wave of a host (the record's ``fix``, else computed)."""
    if rec.get("fix"):
        return str(rec["fix"])
    from exwatch.scan.observation import host_fix

    return str(host_fix(rec)["fix"])


def render_table(summary: ScanSummary, console: Console) -> None:
    """Per-wave counts, then the exposed hosts worst first with the update that fixes each."""
    from rich.markup import escape
    from rich.table import Table

    from exwatch.scan.observation import wave_ids, worst_state

    d = summary.to_dict()
    console.print(
        f"scan {summary.scan_id}: {summary.hosts} host(s), {summary.scanned} service(s) in {summary.seconds:.1f} s"
        + (f", {summary.skipped} done before the resume" if summary.skipped else "")
        + f"  ({', '.join(f'{k} {v}' for k, v in sorted(d['statuses'].items()))})"
    )
    states = ["vulnerable", "unknown", "mitigated", "patched", "not_affected"]
    chosen = summary.waves_selected
    title = "Exchange servers per wave" + (
        f" (exit code and exposed list: {', '.join(chosen)})" if chosen else ""
    )
    table = Table(title=title, title_justify="left")
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
        whole_scan = summary.whole
        if whole_scan is not None and whole_scan.vulnerable:  # a resume: the earlier runs found them
            console.print(
                f"No exposed Exchange server among the hosts this run scanned; the whole scan has "
                f"{whole_scan.vulnerable} vulnerable host(s): exwatch scans show {summary.scan_id}"
            )
        else:
            console.print("No exposed Exchange server.")
        return
    wave_cols = list(summary.waves) or list(wave_ids())
    hosts = Table(title="Exposed hosts (worst first)", title_justify="left")
    for col in ("host", "port", "build", "source", *wave_cols):
        hosts.add_column(col, overflow="fold")
    hosts.add_column("fix", overflow="fold", min_width=30)
    shown = exposed[:200]
    for rec in shown:
        cells = []
        for wave in wave_cols:
            entry = rec["waves"].get(wave)
            state = entry.get("state", "") if entry else ""
            cells.append(f"[{STATE_STYLE.get(state, '')}]{state}[/]")
        source = (rec.get("build_source") or "") + (" (CU only)" if rec.get("cu_only") else "")
        port = str(rec.get("port") or "") + (" (conflict)" if rec.get("conflict") else "")
        hosts.add_row(
            escape(str(rec.get("host") or rec["key"])),
            port,
            str(rec.get("build") or "?"),
            source,
            *cells,
            escape(fix_summary(rec)),
        )
    console.print(hosts)
    more = summary.exposed_hosts - len(shown)
    if more > 0:
        console.print(f"... and {more} more exposed host(s) (use --format jsonl)")


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
@click.option(
    "--wave",
    "waves",
    multiple=True,
    metavar="W",
    help="Only these waves decide the exit code and the exposed list (repeatable); every wave is stored.",
)
@click.option("--no-store", is_flag=True, help="Do not store the scan (print only; it cannot be resumed).")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    metavar="DATE",
    help="Verdicts and fixes with the knowledge of that day (only updates released by then), e.g. 2021-03-10.",
)
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
    waves: tuple[str, ...],
    no_store: bool,
    as_of: str | None,
    fmt: str,
    db_url: str | None,
) -> None:
    """Scan Exchange servers: build, per-wave state (ProxyLogon, ProxyShell, ProxyNotShell), fix.

    TARGETS are addresses, CIDRs, ranges (10.0.0.1-10.0.0.9, 10.0.0.1-9), host names, host:port,
    [IPv6]:port, URLs, or files of them. Each (host, port) is stored; the output has one record per host,
    its ports folded (an Exchange answer outranks a refused or non-Exchange port) and the port that gave
    the verdict named. Results go to the store as one snapshot; `--resume SCAN_ID` finishes an
    interrupted scan.
    """
    _check_arguments(bool(targets or targets_files), resume, no_store)
    from exwatch.scan.engine import run_scan
    from exwatch.scan.options import ScanOptions
    from exwatch.scan.targets import parse_ports

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
        waves=wave_list(waves),
        as_of=as_of,
    )
    options.validate()
    url = "null:" if no_store else resolve_db(db_url)
    output = HostOutput(fmt)
    display = ProgressDisplay(url, no_store)
    try:
        summary = run_scan(
            list(targets),
            options,
            url,
            tags=parse_tags(tags),
            resume=resume,
            progress=display.update,
            on_start=display.start,
            on_host=output.host,
        )
    except KeyboardInterrupt as exc:
        display.stop()
        stopped(exc, display.scan_id, no_store)
        return
    display.stop()
    output.finish(summary)
    display.summary_line(summary, fmt)
    click.get_current_context().exit(summary.exit_code)


def _check_arguments(has_targets: bool, resume: int | None, no_store: bool) -> None:
    if resume is None and not has_targets:
        raise InputError("no target: give TARGET arguments, --targets-file, or --resume SCAN_ID")
    if resume is not None and no_store:
        raise InputError("--resume continues a stored scan: it cannot be used with --no-store")


def wave_list(waves: tuple[str, ...]) -> tuple[str, ...]:
    """``--wave`` values (repeatable, comma-separated) in order, lower case, once each."""
    return tuple(dict.fromkeys(w.strip().lower() for item in waves for w in item.split(",") if w.strip()))


class HostOutput:
    """Host records to stdout as they come (jsonl, csv) or at the end (json, table)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.records: list[HostRecord] = []
        self.csv: csv.DictWriter[str] | None = None
        if fmt == "csv":
            self.csv = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore")
            self.csv.writeheader()

    def host(self, rec: HostRecord) -> None:
        if self.fmt == "jsonl":
            sys.stdout.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif self.csv is not None:
            self.csv.writerow({k: csv_cell(v) for k, v in _csv_row(rec).items()})
            sys.stdout.flush()
        elif self.fmt == "json":
            self.records.append(rec)

    def finish(self, summary: ScanSummary) -> None:
        from rich.console import Console

        from exwatch.scan.observation import worst_state

        try:
            if self.fmt == "json":
                hosts = sorted(self.records, key=lambda r: (worst_state(r), r["key"]))
                echo_json({"summary": summary.to_dict(), "hosts": hosts})
            elif self.fmt == "table":
                render_table(summary, Console(width=max(Console().width, 140)))
            sys.stdout.flush()
        except BrokenPipeError:
            quiet_stdout()


class ProgressDisplay:
    """The scan's progress on stderr: a bar on a terminal, a line every 5 s with -v otherwise."""

    def __init__(self, url: str, no_store: bool) -> None:
        self.err = stderr_console()
        self.verbose = verbosity()
        self.url = url
        self.no_store = no_store
        self.scan_id: int | None = None
        self.bar: Progress | None = None
        self.task_id: Any = None
        self.last_line = 0.0

    def start(self, scan_id: int, total: int, problems: list[str]) -> None:
        self.scan_id = scan_id
        for message in problems:
            self.err.print(f"exwatch: warning: skipped {message}", markup=False, highlight=False)
        if self.verbose >= 0:
            store = "not stored" if self.no_store else f"store {self.url.split('://', 1)[0]}"
            self.err.print(f"scan {scan_id}: {total:,} service(s) to try, {store}", highlight=False)
        if self.verbose >= 0 and sys.stderr.isatty():
            self._start_bar(scan_id, total)

    def _start_bar(self, scan_id: int, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # The bar draws on stderr only: never take over stdout (redirect_stdout=False), where the
        # machine formats go, whether or not stdout is the terminal too.
        self.bar = Progress(
            TextColumn("scan {task.fields[scan]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[rate]:.0f}/s, {task.fields[errors]} unreachable, {task.fields[vuln]} vulnerable"
            ),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.bar.start()
        self.task_id = self.bar.add_task(
            "scan", total=total or None, scan=scan_id, rate=0.0, errors=0, vuln=0
        )

    def update(self, p: ScanProgress) -> None:
        if self.bar is not None:
            self.bar.update(
                self.task_id,
                completed=p.done,
                total=p.total or None,
                rate=p.rate,
                errors=p.errors,
                vuln=p.vulnerable,
            )
        elif self.verbose >= 1 and time.monotonic() - self.last_line >= 5.0:
            self.last_line = time.monotonic()
            eta = f", {p.eta:.0f} s left" if p.eta is not None else ""
            click.echo(
                f"exwatch: scan: {p.done:,}/{p.total:,} done, {p.rate:.0f}/s, {p.errors:,} unreachable, "
                f"{p.vulnerable:,} vulnerable{eta}",
                err=True,
            )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def summary_line(self, summary: ScanSummary, fmt: str) -> None:
        """For the machine formats, the summary in one line on stderr (the table has it already)."""
        if self.verbose < 0 or fmt == "table":
            return
        d = summary.to_dict()
        self.err.print(
            f"scan {summary.scan_id}: {summary.hosts:,} host(s), {summary.scanned:,} service(s) in "
            f"{summary.seconds:.1f} s; "
            + ", ".join(f"{k} {v}" for k, v in sorted(d["statuses"].items()))
            + f"; {summary.vulnerable} vulnerable host(s)",
            highlight=False,
        )
        whole = whole_scan_line(summary)
        if whole is not None:
            self.err.print(whole, markup=False, highlight=False)


def stopped(exc: KeyboardInterrupt, scan_id: int | None, no_store: bool) -> None:
    """A scan stopped by Ctrl-C or a closed output: one line, and the exit code of what it found."""
    from exwatch.scan.summary import ScanInterrupted

    summary = exc.summary if isinstance(exc, ScanInterrupted) else None
    reason = exc.reason if isinstance(exc, ScanInterrupted) else "interrupted"
    if reason == "output closed":
        quiet_stdout()
    found = summary is not None and summary.vulnerable > 0
    if no_store:
        kept = "nothing stored (--no-store)"
    elif scan_id is None:
        kept = "nothing stored"
    else:
        kept = f"finished hosts are stored: finish it with `exwatch scan --resume {scan_id}`"
    what = f"; {summary.vulnerable} vulnerable host(s) so far" if summary is not None else ""
    click.echo(f"exwatch: {reason}; {kept}{what}", err=True)
    click.get_current_context().exit(EXIT_FOUND if found else EXIT_INCOMPLETE)
