"""``exwatch watch``: re-scan targets on a schedule and alert once per change (webhook, syslog, file)."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from exwatch.cli.common import EXIT_FOUND, EXIT_INCOMPLETE, resolve_db, stderr_console
from exwatch.cli.scan import parse_tags
from exwatch.cli.scan import scan as scan_command
from exwatch.errors import InputError
from exwatch.scan.engine import ScanOptions
from exwatch.scan.targets import parse_ports
from exwatch.watch import Alert, RoundResult, WatchConfig, Watcher, parse_duration

# The scan options are taken over from ``exwatch scan`` itself (one definition); these make no sense
# for a watch: a watch always stores, always scans now, prints alerts rather than hosts.
NOT_FOR_WATCH = {"targets", "resume", "fmt", "db_url", "no_store", "as_of"}
SCAN_PARAMS = [p for p in scan_command.params if p.name not in NOT_FOR_WATCH]
OPTION_FIELDS = {f.name for f in dataclasses.fields(ScanOptions)}


def scan_options(kwargs: dict[str, Any]) -> ScanOptions:
    """ScanOptions from the taken-over scan options (those named like a ScanOptions field)."""
    values: dict[str, Any] = {k: v for k, v in kwargs.items() if k in OPTION_FIELDS and v is not None}
    if isinstance(values.get("ports"), str):
        values["ports"] = parse_ports(values["ports"])
    if "exclude" in values:
        values["exclude"] = tuple(values["exclude"])
    if "targets_files" in values:
        values["targets_files"] = tuple(str(f) for f in values["targets_files"])
    options = ScanOptions(**values)
    options.validate()
    return options


def _waves(value: Any) -> tuple[str, ...] | None:
    if not value:
        return None
    items = value if isinstance(value, (tuple, list)) else [value]
    out: list[str] = []
    for item in items:
        out.extend(w.strip() for w in str(item).split(",") if w.strip())
    return tuple(out) or None


def _alert_line(a: Alert) -> str:
    where = f"{a.host}:{a.port}" if a.port else a.host
    change = f"{a.previous or '-'} -> {a.state}" if a.state else ""
    wave = f" {a.wave}" if a.wave else ""
    fix = f"; fix: {a.fix}" if a.fix and a.kind in ("exposed", "protection_lost") else ""
    return f"{a.time[:19]} {a.kind:<15} {where}{wave} {change} (build {a.build or '?'}, scan {a.scan}){fix}"


def _watch(
    targets: tuple[str, ...],
    every: str,
    rounds: int | None,
    alerts: tuple[str, ...],
    name: str | None,
    spool_dir: Path | None,
    spool_max: int,
    alert_retries: int,
    fmt: str,
    db_url: str | None,
    **scan_kwargs: Any,
) -> None:
    """Re-scan TARGETS every DURATION, store each round as a scan, and alert once per change.

    Alert kinds: exposed, protection_lost, protected, compromised, gone, back. --alert takes
    http(s)://... (POST JSON), syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT (RFC 5424) or
    file:///path.jsonl, and may be repeated. A restarted watch (same targets and ports, or the same
    --name) goes on from the store: changes already alerted are not sent again.
    """
    config = _config(
        targets, every, rounds, alerts, name, spool_dir, spool_max, alert_retries, db_url, scan_kwargs
    )
    err = stderr_console()
    stop = threading.Event()
    printer = _Printer(fmt, err)
    watcher = Watcher(
        config, stop=stop, on_alert=printer.alert, on_round=printer.round, on_problem=printer.problem
    )
    err.print(
        f"watch {watcher.name}: every {every}, {len(watcher.sinks)} sink(s); SIGTERM stops after the round",
        markup=False,
        highlight=False,
    )
    click.get_current_context().exit(_run(watcher, stop))


def _config(
    targets: tuple[str, ...],
    every: str,
    rounds: int | None,
    alerts: tuple[str, ...],
    name: str | None,
    spool_dir: Path | None,
    spool_max: int,
    alert_retries: int,
    db_url: str | None,
    scan_kwargs: dict[str, Any],
) -> WatchConfig:
    """The watch's configuration from the command line; InputError for a bad value."""
    if not targets and not scan_kwargs.get("targets_files"):
        raise InputError("no target: give TARGET arguments or --targets-file")
    if rounds is not None and rounds < 1:
        raise InputError("--rounds must be at least 1")
    if spool_max < 1:
        raise InputError("--spool-max must be at least 1")
    if not 0 <= alert_retries <= 10:
        raise InputError("--alert-retries must be between 0 and 10")
    seconds = parse_duration(every)
    options = scan_options(scan_kwargs)
    return WatchConfig(
        targets=list(targets),
        options=options,
        store_url=resolve_db(db_url),
        every=seconds,
        rounds=rounds,
        name=name,
        tags=parse_tags(tuple(scan_kwargs.get("tags") or ())),
        waves=_waves(scan_kwargs.get("wave") or scan_kwargs.get("waves")),
        sinks=tuple(alerts),
        spool_dir=spool_dir,
        spool_limit=spool_max,
        retries=alert_retries,
    )


class _Printer:
    """What the watch shows: alerts on stdout (lines or JSON lines), rounds and problems on stderr."""

    def __init__(self, fmt: str, err: Console) -> None:
        self.fmt = fmt
        self.err = err

    def alert(self, a: Alert) -> None:
        if self.fmt == "jsonl":
            sys.stdout.write(json.dumps(a.to_dict(), default=str, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(_alert_line(a) + "\n")
        sys.stdout.flush()

    def round(self, r: RoundResult) -> None:
        sent = ", ".join(
            f"{d.sink}: {d.sent} sent" + (f", {d.spooled} spooled" if d.spooled else "") for d in r.deliveries
        )
        self.err.print(
            f"watch round {r.number} (scan {r.scan_id}, {r.seconds:.1f} s): {r.hosts} host(s), "
            f"{r.exchange} Exchange, {r.vulnerable} vulnerable; {len(r.alerts)} alert(s)"
            + (f"; {sent}" if sent else ""),
            markup=False,
            highlight=False,
        )

    def problem(self, message: str) -> None:
        self.err.print(f"exwatch: warning: {message}", markup=False, highlight=False)


def _run(watcher: Watcher, stop: threading.Event) -> int:
    """Run the watch until its rounds are done, SIGTERM (after the round) or Ctrl-C; the exit code."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(_signum: int, _frame: Any) -> None:
        if not stop.is_set():
            click.echo("exwatch: SIGTERM: stopping after the current round", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        last = watcher.run()
    except KeyboardInterrupt:
        found = watcher.last is not None and watcher.last.vulnerable
        click.echo("exwatch: interrupted; the rounds done and their alerts are stored", err=True)
        return EXIT_FOUND if found else EXIT_INCOMPLETE
    finally:
        signal.signal(signal.SIGTERM, previous)
    return last.exit_code if last is not None else EXIT_INCOMPLETE


watch = click.Command(
    "watch",
    callback=_watch,
    help=_watch.__doc__,
    epilog="Exit codes (of the last round): 0 nothing exposed; 1 a vulnerable host; 2 bad input; 3 none "
    "vulnerable but some hosts unreachable or unknown.",
    params=[
        click.Argument(["targets"], nargs=-1),
        click.Option(
            ["--every"],
            required=True,
            metavar="DURATION",
            help="Time between the starts of two rounds: 30s, 15m, 6h, 1d.",
        ),
        click.Option(
            ["--rounds"], type=int, default=None, help="Stop after N rounds (default: run until SIGTERM)."
        ),
        click.Option(
            ["--alert", "alerts"],
            multiple=True,
            metavar="URL",
            help="Alert sink (repeatable): http(s)://..., syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, "
            "file:///path.jsonl.",
        ),
        click.Option(
            ["--name"], default=None, help="Name of this watch (default: derived from the targets and ports)."
        ),
        click.Option(
            ["--spool-dir"],
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where undelivered alerts wait (default: watch-spool in the data directory).",
        ),
        click.Option(
            ["--spool-max"], type=int, default=10_000, show_default=True, help="Events kept per sink's spool."
        ),
        click.Option(
            ["--alert-retries"],
            type=int,
            default=3,
            show_default=True,
            help="Retries of a failed webhook POST (backoff 0.5 s, doubling) before spooling.",
        ),
        *SCAN_PARAMS,
        click.Option(
            ["--format", "fmt"],
            type=click.Choice(["table", "jsonl"], case_sensitive=False),
            default="table",
            show_default=True,
            help="How alerts are printed on stdout (messages go to stderr).",
        ),
        click.Option(
            ["--db", "db_url"],
            default=None,
            metavar="URL",
            help="Store URL (sqlite:///path or postgresql://...); default: EXWATCH_DB or the data directory.",
        ),
    ],
)
