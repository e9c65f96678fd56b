"""``exwatch hunt``: hunt triage folders, archives or a live install for compromise evidence."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from exwatch.cli.common import (
    EXIT_FOUND,
    EXIT_INCOMPLETE,
    db_option,
    echo_csv,
    echo_json,
    echo_jsonl,
    format_option,
    parse_time,
    resolve_db,
    stderr_console,
    verbosity,
)
from exwatch.cli.hunt_output import print_notes, render_hunt
from exwatch.hunt import (
    CONFIDENCE_RANK,
    Finding,
    HuntInterrupted,
    HuntOptions,
    HuntResult,
    Progress,
    apply_limits,
    hunt_paths,
    limit_options,
    record_hunt,
    refuse_store_in_evidence,
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
    help="Show findings at or above this confidence (low = review). Default: likely in the table, every finding in json/jsonl/csv.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every finding, review-level ones included.")
@click.option(
    "-v", "--verbose", count=True, help="Progress on stderr (files, bytes/s); same as exwatch -v hunt."
)
@format_option("table", "json", "jsonl", "csv")
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
        refuse_store_in_evidence(store_url, [*paths, *(p for p in (exchange_path, iis_logs) if p)])
    floor = "review" if show_all else (min_confidence or ("likely" if fmt == "table" else "review")).lower()
    floor = "review" if floor == "low" else floor
    started = datetime.now(UTC)
    show_progress = verbose + verbosity() >= 1
    try:
        result = hunt_paths(
            list(paths), apply_limits(options), progress=_progress(console) if show_progress else None
        )
    except HuntInterrupted as exc:
        # DESIGN: one line, what is kept, and the exit code of what it had found (1 if something, else 3)
        click.echo(
            f"exwatch: interrupted; nothing stored ({exc.files_done:,} of {exc.files_total:,} files found so "
            f"far were hunted, {exc.found:,} finding(s) of likely or confirmed confidence): run the hunt again",
            err=True,
        )
        raise SystemExit(EXIT_FOUND if exc.found else EXIT_INCOMPLETE) from None
    try:
        if store_url is not None:
            _store(result, store_url, started, console)
        _output(result, fmt, floor)
        print_notes(result, console)
    except KeyboardInterrupt:
        click.echo(
            "exwatch: interrupted after the hunt, while storing or printing it: run it again", err=True
        )
        raise SystemExit(EXIT_FOUND if result.exit_code == EXIT_FOUND else EXIT_INCOMPLETE) from None
    raise SystemExit(result.exit_code)


def _output(result: HuntResult, fmt: str, floor: str) -> None:
    """The result on stdout: the JSON document, JSON lines (one per host, finding and error), or the table."""
    if fmt == "table":
        render_hunt(result, floor=floor)
    elif fmt == "json":
        echo_json(result.to_dict(floor))
    elif fmt == "csv":
        rank = CONFIDENCE_RANK[floor]
        echo_csv(CSV_FIELDS, (csv_row(f) for f in result.findings if CONFIDENCE_RANK[f.confidence] >= rank))
    else:
        rank = CONFIDENCE_RANK[floor]
        echo_jsonl(
            [{"type": "host", **h.to_dict()} for h in result.hosts]
            + [
                {"type": "finding", **f.to_dict()}
                for f in result.findings
                if CONFIDENCE_RANK[f.confidence] >= rank
            ]
            + [{"type": "error", **e.to_dict()} for e in result.errors]
        )


# One row per finding; the facts a responder acts on get columns of their own.
FACT_FIELDS = ("client_ip", "user", "url", "path", "command", "cmdlet")
CSV_FIELDS = (
    "host",
    "confidence",
    "rule",
    "wave",
    "cve",
    "time",
    "title",
    "file",
    "line",
    "record",
    "offset",
    "sha256",
    "family",
    *FACT_FIELDS,
    "excerpt",
    "description",
)


def csv_row(finding: Finding) -> dict[str, object]:
    """The CSV row of one finding (``--format csv``)."""
    data = finding.to_dict()
    evidence = finding.evidence
    row: dict[str, object] = {
        k: data.get(k) for k in ("host", "confidence", "rule", "wave", "cve", "time", "title")
    }
    row.update(
        file=evidence.file,
        line=evidence.line,
        record=evidence.record,
        offset=evidence.offset,
        sha256=evidence.sha256,
        family=evidence.family,
        excerpt=evidence.excerpt,
        description=finding.description,
    )
    row.update({k: evidence.facts.get(k, "") for k in FACT_FIELDS})
    return row


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
