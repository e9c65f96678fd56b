"""``exwatch hosts``: the hosts the store knows, one host's history, tags, and the host lifecycle
(retire, merge, split, changes, undo)."""

from __future__ import annotations

import sys
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from exwatch import fleet
from exwatch.cli.common import db_option, echo_json, echo_jsonl, format_option, parse_time, stderr_console
from exwatch.cli.readstore import existing_store
from exwatch.errors import InputError
from exwatch.fleet import HostHistory


@click.group()
def hosts() -> None:
    """The hosts in the store: list them, show one's history across snapshots and hunts, tag them,
    retire a decommissioned one, merge or split hosts that identity matching got wrong, and undo."""


@hosts.command("list")
@click.option("--tag", "tag_text", default=None, metavar="KEY=VALUE", help="Only hosts with this tag.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many hosts.")
@click.option(
    "--max-age",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    metavar="DAYS",
    help="Mark hosts not re-seen within this many days as stale.",
)
@format_option("table", "json", "jsonl")
@db_option
def list_(tag_text: str | None, limit: int | None, max_age: int, fmt: str, db_url: str | None) -> None:
    """List known hosts with their place in the fleet picture: folded status (and the port that gave
    it), build, last seen, stale or retired, and tags."""
    from datetime import timedelta

    tag = fleet.parse_tag(tag_text)
    with existing_store(db_url) as store:
        fleet.check_tag(store, tag)
        rows = fleet.list_hosts(store, tag=tag, limit=limit, max_age=timedelta(days=max_age))
    if fmt == "json":
        echo_json([r.to_dict() for r in rows])
        return
    if fmt == "jsonl":
        echo_jsonl([r.to_dict() for r in rows])
        return
    table = Table(title=f"{len(rows):,} hosts", title_justify="left")
    for col in ("host", "address", "name", "fe_server", "status", "port", "build", "last seen", "tags"):
        table.add_column(col, overflow="fold")
    for r in rows:
        status = r.status or ""
        if r.conflict:
            status += " (conflict)"
        if r.retired_at:
            status += f" (retired {r.retired_at.isoformat()[:10]})"
        elif r.stale:
            status += " (stale)"
        table.add_row(
            f"#{r.host_id}",
            r.address or "",
            r.name or "",
            r.fe_server or "",
            status,
            "" if r.port is None else str(r.port),
            r.build or "",
            (r.last_seen.isoformat() if r.last_seen else "")[:16],
            ", ".join(f"{k}={v}" for k, v in sorted(r.tags.items())),
        )
    Console(file=sys.stdout, width=160).print(table)


@hosts.command("show")
@click.argument("host")
@format_option("table", "json")
@db_option
def show(host: str, fmt: str, db_url: str | None) -> None:
    """Show one HOST (#id, address, DNS name or X-FEServer) across snapshots and hunts."""
    with existing_store(db_url) as store:
        doc = fleet.host_history(store, host)
    if fmt == "json":
        echo_json(doc.to_dict())
        return
    _print_history(doc, Console(file=sys.stdout, width=160))


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _print_history(doc: HostHistory, out: Console) -> None:
    out.print(
        f"host #{doc.host_id}: address {doc.address}, name {doc.name or '-'}, "
        f"X-FEServer {doc.fe_server or '-'}, certificate {doc.cert or '-'}"
    )
    if doc.tags:
        out.print("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(doc.tags.items())))
    if doc.retired_at:
        out.print(f"retired from {_iso(doc.retired_at)}")
    cur = doc.current
    if cur:
        out.print(
            f"in the fleet picture: {cur.status} (port {cur.port or '-'}, scan {cur.scan}, "
            f"seen {(_iso(cur.seen_at) or '')[:16]})"
        )
    table = Table(title="snapshots (each scan's services folded per host)", title_justify="left")
    waves = sorted({w for s in doc.snapshots for w in s.waves})
    for col in ("scan", "time", "status", "port", "address", "build", "source", "services", *waves):
        table.add_column(col, overflow="fold")
    for s in doc.snapshots:
        win = s.winner
        table.add_row(
            str(s.scan),
            (_iso(s.time) or "")[:16],
            s.status + (" (conflict)" if s.conflict else ""),
            "" if s.port is None else str(s.port),
            (win.address if win else None) or "",
            s.build or "",
            (win.build_source if win else None) or "",
            ", ".join(f"{x.port}:{x.status}" for x in s.services),
            *(s.waves.get(w, "") for w in waves),
        )
    out.print(table)
    windows = [("exposure", e) for e in doc.exposure] + [("exposed again", e) for e in doc.exposed_again]
    for label, e in windows:
        end = _iso(e.first_protected) or "still exposed"
        days = f" ({e.days} days)" if e.days else ""
        out.print(f"{label} {e.wave}: {_iso(e.first_vulnerable)} -> {end}{days}", highlight=False)
    for h in doc.hunts:
        out.print(
            f"hunt {h.hunt} at {h.time.isoformat()[:16]}: {h.verdict}, {h.findings} findings, "
            f"first {_iso(h.first_finding)}"
        )


@hosts.command("tag")
@click.argument("host")
@click.argument("tags", nargs=-1, required=True, metavar="KEY=VALUE...")
@db_option
def tag(host: str, tags: tuple[str, ...], db_url: str | None) -> None:
    """Tag HOST (#id, address, DNS name or X-FEServer) with KEY=VALUE (organisation, country, network, ...)."""
    pairs = []
    for text in tags:
        pair = fleet.parse_tag(text)
        if pair is None:
            raise InputError("a tag is KEY=VALUE")
        pairs.append(pair)
    with existing_store(db_url, profile="existing") as store:
        for key, value in pairs:
            host_id = store.tag_host(host, key, value)
    stderr_console().print(f"host #{host_id}: " + ", ".join(f"{k}={v}" for k, v in pairs))


@hosts.command("retire")
@click.argument("host")
@click.option(
    "--from",
    "from_text",
    default=None,
    metavar="DATE",
    help="Retired from this date or time (ISO 8601; default: the newest scan's time, so the current "
    "picture leaves it out).",
)
@db_option
def retire(host: str, from_text: str | None, db_url: str | None) -> None:
    """Retire HOST (decommissioned): from --from on it leaves the fleet picture and its denominator.

    The retirement is recorded; `exwatch hosts undo CHANGE` lifts it.
    """
    at = parse_time(from_text, "--from") if from_text else None
    with existing_store(db_url, profile="existing") as store:
        doc = fleet.retire(store, host, at=at)
    stderr_console().print(
        f"host #{doc['host_id']} retired from {doc['retired_at']} (change {doc['change']}; "
        f"`exwatch hosts undo {doc['change']}` reverses it)"
    )


@hosts.command("merge")
@click.argument("keep")
@click.argument("other")
@db_option
def merge(keep: str, other: str, db_url: str | None) -> None:
    """Merge host OTHER into host KEEP: one server that identity matching took for two.

    OTHER's observations, hunts and findings move to KEEP, and its identifiers name KEEP from now on.
    The merge is recorded; `exwatch hosts undo CHANGE` splits them again.
    """
    with existing_store(db_url, profile="existing") as store:
        doc = fleet.merge(store, keep, other)
    stderr_console().print(
        f"host #{doc['merged']} merged into #{doc['host_id']} ({doc['observations']} observations moved; "
        f"change {doc['change']}; `exwatch hosts undo {doc['change']}` reverses it)"
    )


@hosts.command("split")
@click.argument("host")
@click.option(
    "--address",
    "addresses",
    multiple=True,
    required=True,
    help="The address whose observations become a new host (repeat for more).",
)
@db_option
def split(host: str, addresses: tuple[str, ...], db_url: str | None) -> None:
    """Split HOST: its observations at --address become a new host (two servers taken for one).

    The split is recorded; `exwatch hosts undo CHANGE` merges them back.
    """
    with existing_store(db_url, profile="existing") as store:
        doc = fleet.split(store, host, list(addresses))
    stderr_console().print(
        f"host #{doc['host_id']}: {doc['observations']} observations split off into host #{doc['new_host_id']} "
        f"(change {doc['change']}; `exwatch hosts undo {doc['change']}` reverses it)"
    )


@hosts.command("changes")
@click.option("--host", "host", default=None, help="Only the changes of this host.")
@format_option("table", "json")
@db_option
def changes(host: str | None, fmt: str, db_url: str | None) -> None:
    """List the recorded host changes (retire, merge, split), newest first."""
    with existing_store(db_url) as store:
        rows = fleet.list_changes(store, host=host)
    if fmt == "json":
        echo_json(rows)
        return
    table = Table(title=f"{len(rows)} host changes", title_justify="left")
    for col in ("change", "kind", "host", "other", "effective", "made", "observations", "undone"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["change"]),
            r["kind"],
            f"#{r['host_id']}",
            "" if r["other_id"] is None else f"#{r['other_id']}",
            (r["effective_at"] or "")[:16],
            (r["created_at"] or "")[:16],
            str(r["observations"]),
            (r["undone_at"] or "")[:16],
        )
    Console(file=sys.stdout, width=160).print(table)


@hosts.command("undo")
@click.argument("change", type=click.IntRange(min=1))
@db_option
def undo(change: int, db_url: str | None) -> None:
    """Reverse the recorded host change CHANGE (from `exwatch hosts changes`)."""
    with existing_store(db_url, profile="existing") as store:
        doc = fleet.undo(store, change)
    stderr_console().print(f"change {doc['change']} ({doc['kind']}) undone")
