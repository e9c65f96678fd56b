"""``exwatch hunt``: hunt triage folders, archives or a live install for compromise evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from exwatch.cli.common import (
    EXIT_FOUND,
    EXIT_INCOMPLETE,
    EXIT_OK,
    db_option,
    echo_json,
    echo_jsonl,
    format_option,
    parse_time,
    resolve_db,
    stderr_console,
)
from exwatch.hunt.limits import chosen_limits, limit_options


@click.command("hunt")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--host", default=None, help="Host name for the findings (default: the PATH's name).")
@click.option(
    "--since",
    default=None,
    metavar="T",
    help="Only evidence at or after this ISO 8601 time (UTC if no zone).",
)
@click.option("--until", default=None, metavar="T", help="Only evidence at or before this time.")
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
    fmt: str,
    db_url: str | None,
    no_store: bool,
    no_verify: bool,
) -> None:
    """Hunt PATH... (triage folders or .zip/.7z/.tar.gz archives; none = the live Exchange install on Windows).

    Exit codes: 0 clean (review-level notes may be listed), 1 a finding of likely or confirmed
    confidence, 3 nothing above review but some files could not be read, 2 bad input.
    """
    from exwatch.hunt import HuntOptions, hunt_paths

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
        **chosen_limits(),
    )
    console = stderr_console()
    store_url = None if no_store else resolve_db(db_url)
    if store_url is not None:
        _refuse_store_in_evidence(store_url, [*paths, *(p for p in (exchange_path, iis_logs) if p)])
    started = datetime.now(UTC)
    result = hunt_paths(list(paths), options)
    if store_url is not None:
        _store(result, store_url, started, console)
    data = result.to_dict()
    if fmt == "json":
        echo_json(data)
    elif fmt == "jsonl":
        echo_jsonl(
            [{"type": "host", **h} for h in data["hosts"]]
            + [{"type": "finding", **f} for f in data["findings"]]
            + [{"type": "error", **e} for e in data["errors"]]
        )
    else:
        _render(result, console)
    for note in result.stats.get("notes", []):
        console.print(f"note: {note}", highlight=False)
    for e in result.errors:
        console.print(f"[yellow]warning:[/] {e.error}", markup=True, highlight=False)
    if result.above_review:
        raise SystemExit(EXIT_FOUND)
    if result.errors or result.verdict == "incomplete":
        raise SystemExit(EXIT_INCOMPLETE)
    raise SystemExit(EXIT_OK)


def _refuse_store_in_evidence(url: str, evidence: list[Path]) -> None:
    """A SQLite store must not be (or be created) inside the evidence, whatever the URL spelling."""
    from exwatch.hunt.limits import refuse_store_in_evidence

    refuse_store_in_evidence(url, evidence)


def _store(result: object, url: str, started: datetime, console: object) -> None:
    from exwatch.collect.hunthook import store_builds
    from exwatch.errors import StoreError
    from exwatch.fleet import open_store
    from exwatch.hunt.model import HuntResult

    assert isinstance(result, HuntResult)
    try:
        with open_store(url) as store:
            # The build a collection package read on the server (exwatch collect), source "collector";
            # stored first so that the hunt below is linked to that host.
            store_builds(store, result.stats.get("collector_observations", []), started)
            for h in result.hosts:
                findings = [f.to_dict() for f in result.findings if f.host == h.host]
                store.add_hunt(
                    h.host,
                    verdict=h.verdict,
                    coverage=h.coverage,
                    findings=findings,
                    started_at=started,
                    errors=[e.to_dict() for e in h.errors],
                )
    except StoreError as exc:
        stderr_console().print(f"warning: findings not stored: {exc}", highlight=False)


def _render(result: object, console: object) -> None:
    from rich.console import Console

    from exwatch.hunt.model import HuntResult

    assert isinstance(result, HuntResult)
    out = Console(width=max(Console().width, 160))
    for h in result.hosts:
        c = h.counts
        out.print(
            f"[bold]{h.host}[/]: {h.verdict}  ({c['confirmed']} confirmed, {c['likely']} likely, {c['review']} review)",
            highlight=False,
        )
        for fam, cov in sorted(h.coverage.items()):
            if "first" in cov:
                out.print(
                    f"  coverage {fam}: {(cov.get('first') or '?')[:19]} .. {(cov.get('last') or '?')[:19]} ({cov['files']} files)",
                    highlight=False,
                )
        for w in h.warnings:
            out.print(f"  [yellow]coverage warning:[/] {w}", highlight=False)
    if not result.findings:
        return
    table = Table(title="Findings by wave, in time order", show_lines=False)
    for col, width in (("wave", 13), ("time (UTC)", 19), ("confidence", 10), ("rule", 38), ("evidence", 60)):
        table.add_column(col, no_wrap=True, max_width=width, min_width=min(width, 19), overflow="ellipsis")
    last_wave = None
    for f in result.findings:
        ev = f.evidence
        where = ev.file + (f":{ev.line}" if ev.line else "") + (f" record {ev.record}" if ev.record else "")
        if len(where) > 60:
            where = "..." + where[-57:]
        wave = f.wave if f.wave != last_wave else ""
        last_wave = f.wave
        when = f.time.strftime("%Y-%m-%d %H:%M:%S") if f.time else "-"
        table.add_row(wave, when, f.confidence, f.rule, where)
    out.print(table)
