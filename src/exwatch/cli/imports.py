"""``exwatch import``: internet-scan exports (Shodan, Censys) as observations in the store, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from exwatch.cli.common import db_option, echo_json, format_option, resolve_db, verbosity
from exwatch.cli.scan import parse_tags
from exwatch.importers import ImportResult, import_file


def _render(result: ImportResult) -> None:
    out = sys.stdout
    rate = f", {result.lines_per_second:,.0f} lines/s" if result.lines_per_second else ""
    out.write(
        f"{result.source} export {result.path}: {result.lines:,} item(s) read in {result.seconds:.1f} s{rate}; "
        f"{result.observations:,} observation(s), {result.malformed.total():,} malformed, {result.skipped:,} without HTTP\n"
    )
    for day, scan_id in sorted(result.scans.items()):
        out.write(f"  {day}: scan {scan_id}\n")
    if result.already:
        out.write(f"  already imported from this file (not stored again): {', '.join(result.already)}\n")
    if result.statuses:
        out.write("  hosts: " + ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items())) + "\n")
    for wave, counts in sorted(result.waves.items()):
        out.write(f"  {wave}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "\n")


def _run(source: str, path: Path, tags: tuple[str, ...], fmt: str, db_url: str | None) -> None:
    result = import_file(source, path, resolve_db(db_url), tags=parse_tags(tags))
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        _render(result)
    if result.malformed:
        reasons = ", ".join(f"{r} {n}" for r, n in result.malformed.most_common())
        if verbosity() >= 0:
            click.echo(
                f"exwatch: warning: {result.malformed.total()} malformed item(s) skipped ({reasons}); "
                + "; ".join(result.examples),
                err=True,
            )
    click.get_current_context().exit(result.exit_code)


def _command(source: str, formats: str) -> click.Command:
    @click.command(
        source,
        help=f"Import a {formats} as observations with source {source} (one stored scan per observation day).",
        epilog="Exit codes: 0 nothing vulnerable; 1 a vulnerable host; 2 bad input (no such file, nothing "
        "readable); 3 nothing vulnerable but some items malformed.",
    )
    @click.argument("file", type=click.Path(path_type=Path))
    @click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag every imported host (repeatable).")
    @format_option("table", "json")
    @db_option
    def command(file: Path, tags: tuple[str, ...], fmt: str, db_url: str | None) -> None:
        _run(source, file, tags, fmt, db_url)

    return command


@click.group("import")
def import_() -> None:
    """Import internet-scan exports offline: exposure over time without sending a packet.

    The build comes from X-OWA-Version or the OWA path in each answer and is judged by the kb, as a
    scan without --probe would judge it (mitigations cannot be seen from an export).
    """


import_.add_command(_command("shodan", "`shodan download` file (JSON lines, plain or .gz)"))
import_.add_command(_command("censys", "Censys search export (a JSON array or JSON lines of hosts)"))
