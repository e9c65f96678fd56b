"""``exwatch report``: the fleet's progress from the store (table, JSON, Markdown, HTML) and STIX export."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from exwatch.cli.common import (
    EXIT_FOUND,
    EXIT_OK,
    db_option,
    echo_json,
    format_option,
    stderr_console,
)
from exwatch.cli.readstore import existing_store
from exwatch.errors import InputError
from exwatch.fleet import check_tag, parse_tag


def check_wave(wave: str | None) -> None:
    """An InputError naming the valid wave ids (from the knowledge base) for an unknown one."""
    if wave is None:
        return
    from exwatch.kb import WAVES

    ids = [w.id for w in WAVES]
    if wave not in ids:
        raise InputError(f"unknown wave {wave!r}: use one of {', '.join(ids)}")


class _When(click.ParamType):
    """An ISO 8601 date or time (UTC when no zone is given)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"not an ISO 8601 date or time: {value!r}", param, ctx)
        return when if when.tzinfo else when.replace(tzinfo=UTC)


WHEN = _When()


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror}") from exc
    stderr_console().print(f"report written to {out}")


@click.group(invoke_without_command=True)
@click.option("--since", type=WHEN, default=None, help="Only snapshots from this date or time on (ISO 8601).")
@click.option("--wave", default=None, help="Only this wave (an id from `exwatch kb waves`).")
@click.option("--tag", "tag_text", default=None, metavar="KEY=VALUE", help="Only hosts with this tag.")
@click.option("--fit-since", type=WHEN, default=None, help="Start of the window of the attempts fit.")
@click.option("--fit-until", type=WHEN, default=None, help="End of the window of the attempts fit.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many hosts at risk.")
@click.option(
    "--max-age",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    metavar="DAYS",
    help="A host not re-seen within this many days is stale: shown apart, left out of the share.",
)
@click.option(
    "--by-build", is_flag=True, help="Add the breakdown per exact build (besides per CU and per tag)."
)
@format_option("table", "json", "md", "html", "stix")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write to FILE.")
@db_option
@click.pass_context
def report(
    ctx: click.Context,
    since: datetime | None,
    wave: str | None,
    tag_text: str | None,
    fit_since: datetime | None,
    fit_until: datetime | None,
    limit: int | None,
    max_age: int,
    by_build: bool,
    fmt: str,
    out: Path | None,
    db_url: str | None,
) -> None:
    """Report the fleet's progress: the headline, the trend, exposed servers and compromise.

    Every figure is computed over the fleet picture: at each scan's time, every known host's latest
    verdict (a rescan of one server or one shard updates those hosts only). The headline gives the
    patched-or-mitigated share of classified servers, its change in percentage points and the
    relative fall of the vulnerable count against the picture nearest to 7 days earlier. Hosts not
    re-seen within --max-age days are stale (counted apart); retired hosts leave the fleet. --format html writes one self-contained file with charts; --format stix exports the hunt
    findings as STIX 2.1 (as `exwatch report stix` does).

    Exit codes: 1 if servers are exposed in the current fleet picture or were compromised before they
    were protected; 0 otherwise; 2 for no store, an unknown wave or tag.
    """
    if ctx.invoked_subcommand is not None:
        return
    from datetime import timedelta

    from exwatch.report import ReportOptions, build_report

    check_wave(wave)
    tag = parse_tag(tag_text)
    with existing_store(db_url) as store:
        check_tag(store, tag)
        if fmt == "stix":
            from exwatch.report import bundle_json, findings_bundle

            _write(bundle_json(findings_bundle(store, since=since)) + "\n", out)
            ctx.exit(EXIT_OK)
        options = ReportOptions(
            since=since,
            wave=wave,
            tag=tag,
            limit=limit,
            max_age=timedelta(days=max_age),
            fit_since=fit_since,
            fit_until=fit_until,
            by_build=by_build,
        )
        doc = build_report(store, options)
    if fmt == "json":
        if out is None:
            echo_json(doc.to_dict())
        else:
            _write(json.dumps(doc.to_dict(), indent=2, default=str) + "\n", out)
    elif fmt == "md":
        from exwatch.report import render_markdown

        _write(render_markdown(doc), out)
    elif fmt == "html":
        from exwatch.report import render_html

        _write(render_html(doc), out)
    else:
        from exwatch.report import render_table

        _write(render_table(doc), out)
    ctx.exit(EXIT_FOUND if doc.exposed else EXIT_OK)


@report.command("stix")
@click.option("--since", type=WHEN, default=None, help="Only findings from this time on.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write to FILE.")
@db_option
def stix(since: datetime | None, out: Path | None, db_url: str | None) -> None:
    """Export the hunt findings as a STIX 2.1 bundle (indicators, observed data, sightings, host identities)."""
    from exwatch.report import bundle_json, findings_bundle

    with existing_store(db_url) as store:
        bundle = findings_bundle(store, since=since)
    _write(bundle_json(bundle) + "\n", out)
