"""``exwatch scans``: the stored scans (snapshots): list them, show one with its scope, delete one."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from exwatch import fleet
from exwatch.cli.common import db_option, echo_json, echo_jsonl, format_option, stderr_console
from exwatch.cli.readstore import existing_store
from exwatch.errors import InputError


@click.group()
def scans() -> None:
    """The scans in the store: list them, show one (its scope: the targets it was given), delete one."""


def _scope(scope: list[str] | None, width: int = 60) -> str:
    if scope is None:
        return "(not recorded)"
    text = ", ".join(scope)
    return text if len(text) <= width else f"{text[: width - 1]}… ({len(scope)} targets)"


@scans.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many scans.")
@format_option("table", "json", "jsonl")
@db_option
def list_(limit: int | None, fmt: str, db_url: str | None) -> None:
    """List the scans, newest first: time, finished or not, scope, services and hosts stored."""
    with existing_store(db_url) as store:
        rows = fleet.list_scans(store, limit=limit)
    if fmt == "json":
        echo_json(rows)
        return
    if fmt == "jsonl":
        echo_jsonl(rows)
        return
    table = Table(title=f"{len(rows)} scans", title_justify="left")
    for col in ("scan", "started", "finished", "services", "hosts", "scope"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["scan"]),
            (r["started_at"] or "")[:16],
            (r["finished_at"] or "not finished")[:16],
            f"{r['services']:,}",
            f"{r['hosts']:,}",
            _scope(r["scope"]),
        )
    Console(file=sys.stdout, width=160).print(table)


@scans.command("show")
@click.argument("scan_id", metavar="SCAN", type=click.IntRange(min=1))
@format_option("table", "json")
@db_option
def show(scan_id: int, fmt: str, db_url: str | None) -> None:
    """Show one SCAN: its scope (targets), options, what it saw, and the fleet picture at its time."""
    with existing_store(db_url) as store:
        doc = fleet.show_scan(store, scan_id)
    if fmt == "json":
        echo_json(doc)
        return
    out = Console(file=sys.stdout, width=160)
    out.print(
        f"scan {doc['scan']}: started {doc['started_at']}, "
        + (f"finished {doc['finished_at']}" if doc["finished"] else "not finished")
    )
    scope = doc["scope"]
    out.print("scope: " + ("(not recorded)" if scope is None else ", ".join(scope) or "(none)"))
    options = {k: v for k, v in doc["params"].items() if k != "targets"}
    if options:
        out.print("options: " + ", ".join(f"{k}={v}" for k, v in sorted(options.items())))
    out.print(f"stored: {doc['services']:,} services of {doc['hosts']:,} hosts")
    if doc["statuses"]:
        out.print(
            "seen (hosts per status): " + ", ".join(f"{k} {v:,}" for k, v in sorted(doc["statuses"].items()))
        )
    for wave, states in sorted(doc["waves"].items()):
        out.print(f"  {wave}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(states.items())))
    picture = doc["fleet_picture"]
    if picture:
        out.print(
            f"fleet picture at this time: {picture['hosts']:,} hosts ("
            + ", ".join(f"{k} {v:,}" for k, v in picture["statuses"].items())
            + f"), {picture['stale']:,} stale"
        )


@scans.command("delete")
@click.argument("scan_id", metavar="SCAN", type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
def delete(scan_id: int, yes: bool, db_url: str | None) -> None:
    """Delete SCAN and what it stored; the fleet picture, exposure windows and hosts only it saw are
    recomputed. Asks first unless --yes (and needs --yes when not run in a terminal)."""
    with existing_store(db_url, profile="existing") as store:
        doc = fleet.show_scan(store, scan_id)
        if not yes:
            if not sys.stdin.isatty():
                raise InputError(
                    f"deleting scan {scan_id} removes its {doc['services']:,} stored services; add --yes to confirm"
                )
            question = (
                f"Delete scan {scan_id} ({doc['started_at']}, {doc['services']:,} services of "
                f"{doc['hosts']:,} hosts)?"
            )
            try:
                sure = click.confirm(question, default=False, err=True)
            except click.Abort:  # end of input (Ctrl-D) at the prompt: a no, not click's "Aborted!" and 1
                click.echo("", err=True)
                sure = False
            if not sure:
                stderr_console().print("nothing deleted")
                return
        done = fleet.delete_scan(store, scan_id)
    stderr_console().print(
        f"scan {done['scan']} deleted: {done['services']:,} services of {done['hosts']:,} hosts "
        f"({done['hosts_removed']:,} hosts no other scan had seen removed); fleet picture of "
        f"{done['pictures_rebuilt']} later scans recomputed"
    )
