"""``exwatch hosts``: the hosts the store knows, one host's history, and tags."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from exwatch.cli.common import db_option, echo_json, echo_jsonl, format_option, resolve_db, stderr_console
from exwatch.errors import InputError
from exwatch.fleet import open_store
from exwatch.fleet import queries as q


@click.group()
def hosts() -> None:
    """The hosts in the store: list them, show one's history across snapshots and hunts, tag them."""


@hosts.command("list")
@click.option("--tag", "tag_text", default=None, metavar="KEY=VALUE", help="Only hosts with this tag.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many hosts.")
@format_option("table", "json", "jsonl")
@db_option
def list_(tag_text: str | None, limit: int | None, fmt: str, db_url: str | None) -> None:
    """List known hosts with their latest status, build and tags."""
    with open_store(resolve_db(db_url)) as store:
        rows = q.list_hosts(store, tag=q.parse_tag(tag_text), limit=limit)
    if fmt == "json":
        echo_json(rows)
        return
    if fmt == "jsonl":
        echo_jsonl(rows)
        return
    table = Table(title=f"{len(rows):,} hosts", title_justify="left")
    for col in ("host", "address", "name", "fe_server", "status", "build", "last seen", "tags"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            f"#{r['host_id']}",
            r["address"] or "",
            r["name"] or "",
            r["fe_server"] or "",
            r["status"] or "",
            r["build"] or "",
            (r["last_seen"] or "")[:16],
            ", ".join(f"{k}={v}" for k, v in sorted(r["tags"].items())),
        )
    Console(file=sys.stdout, width=160).print(table)


@hosts.command("show")
@click.argument("host")
@format_option("table", "json")
@db_option
def show(host: str, fmt: str, db_url: str | None) -> None:
    """Show one HOST (#id, address, DNS name or X-FEServer) across snapshots and hunts."""
    with open_store(resolve_db(db_url)) as store:
        doc = q.host_history(store, host)
    if fmt == "json":
        echo_json(doc)
        return
    out = Console(file=sys.stdout, width=160)
    out.print(
        f"host #{doc['host_id']}: address {doc['address']}, name {doc['name'] or '-'}, "
        f"X-FEServer {doc['fe_server'] or '-'}, certificate {doc['cert'] or '-'}"
    )
    if doc["tags"]:
        out.print("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(doc["tags"].items())))
    table = Table(title="snapshots", title_justify="left")
    waves = sorted({w for s in doc["snapshots"] for w in s["waves"]})
    for col in ("scan", "time", "status", "address", "build", "source", *waves):
        table.add_column(col)
    for s in doc["snapshots"]:
        table.add_row(
            str(s["scan"]),
            (s["time"] or "")[:16],
            s["status"],
            s["address"] or "",
            s["build"] or "",
            s["build_source"] or "",
            *(s["waves"].get(w, "") for w in waves),
        )
    out.print(table)
    for e in doc["exposure"]:
        end = e["first_protected"] or "still exposed"
        out.print(
            f"exposure {e['wave']}: {e['first_vulnerable']} -> {end}"
            + (f" ({e['days']} days)" if e["days"] else "")
        )
    for h in doc["hunts"]:
        out.print(
            f"hunt {h['hunt']} at {h['time'][:16]}: {h['verdict']}, {h['findings']} findings, first {h['first_finding']}"
        )


@hosts.command("tag")
@click.argument("host")
@click.argument("tags", nargs=-1, required=True, metavar="KEY=VALUE...")
@db_option
def tag(host: str, tags: tuple[str, ...], db_url: str | None) -> None:
    """Tag HOST (#id, address, DNS name or X-FEServer) with KEY=VALUE (organisation, country, network, ...)."""
    pairs = []
    for text in tags:
        pair = q.parse_tag(text)
        if pair is None:
            raise InputError("a tag is KEY=VALUE")
        pairs.append(pair)
    with open_store(resolve_db(db_url)) as store:
        for key, value in pairs:
            host_id = store.tag_host(host, key, value)
    stderr_console().print(f"host #{host_id}: " + ", ".join(f"{k}={v}" for k, v in pairs))
