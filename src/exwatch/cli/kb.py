"""``exwatch kb``: verdicts for builds, the build catalogue, and importing Microsoft's newer build list."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from exwatch import kb as kbmod
from exwatch.cli.common import (
    EXIT_FOUND,
    EXIT_INCOMPLETE,
    EXIT_OK,
    echo_json,
    format_option,
    stderr_console,
    verbosity,
)
from exwatch.errors import BuildError, InputError

_STYLE = {
    "vulnerable": "bold red",
    "patched": "green",
    "not_affected": "dim",
    "unknown": "yellow",
    "mitigated": "cyan",
}


def _stdout() -> Console:
    console = Console()
    # Piped or captured output gets a wide page instead of rich's 80 columns, so tables stay readable.
    return console if console.is_terminal else Console(width=140)


@click.group()
def kb() -> None:
    """The knowledge base: Exchange builds, the three waves, and which update fixes what."""


@kb.command()
@click.argument("builds", nargs=-1, required=True, metavar="BUILD...")
@format_option("table", "json")
def verdict(builds: tuple[str, ...], fmt: str) -> None:
    """Say per wave whether each BUILD is vulnerable, patched, not affected or unknown, why, and the fix.

    BUILD may be spelled 15.1.2176.9, 15.01.2176.009, 15.1.2176 (CU only), "Version 15.1 (Build 2176.9)"
    or Exchange/15.02.0858.002; "-" reads builds from standard input, one per line (blank lines and
    lines starting with # are skipped). JSON: one object for one build, a list for several.

    Exit codes: 1 if any build is vulnerable to a wave; 3 if none is but some wave is unknown; 0 otherwise;
    2 for a string that is not a build.
    """
    parsed = []
    for text in builds:  # a bad string fails before any output (exit 2)
        if text != "-":
            parsed.append(kbmod.parse_build(text))
            continue
        for number, raw in enumerate(sys.stdin, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                parsed.append(kbmod.parse_build(line))
            except BuildError as exc:
                raise BuildError(f"stdin line {number}: {exc}") from exc
    if not parsed:
        raise InputError("no build given (standard input was empty)")
    verdicts = [kbmod.verdict(b) for b in parsed]
    if fmt == "json":
        docs = [v.to_dict() for v in verdicts]
        echo_json(docs[0] if len(docs) == 1 else docs)
    else:
        _verdict_table(verdicts)
    states = {w.state for v in verdicts for w in v.waves.values()}
    if kbmod.State.VULNERABLE in states:
        code = EXIT_FOUND
    elif kbmod.State.UNKNOWN in states:
        code = EXIT_INCOMPLETE
    else:
        code = EXIT_OK
    click.get_current_context().exit(code)


def _verdict_table(verdicts: list[kbmod.Verdict]) -> None:
    console = _stdout()
    if len(verdicts) > 1:
        summary = Table(title=f"{len(verdicts)} builds", title_justify="left")
        for col in ("build", "product", "CU"):
            summary.add_column(col, no_wrap=True)
        for w in kbmod.WAVES:
            summary.add_column(w.name, no_wrap=True)
        for v in verdicts:
            states = [v.waves[w.id].state.value for w in kbmod.WAVES]
            summary.add_row(
                str(v.build), v.product, v.cu or "?", *(f"[{_STYLE.get(s, '')}]{s}[/]" for s in states)
            )
        console.print(summary)
    for v in verdicts:
        title = f"{v.build}: {v.note}"
        if v.support == "out_of_support":
            title += " (out of support)"
        table = Table(title=title, title_justify="left", show_lines=True, expand=False)
        table.add_column("wave", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("why", overflow="fold", max_width=70)
        table.add_column("fix", overflow="fold", max_width=50)
        for wid, wv in v.waves.items():
            state = wv.state.value
            table.add_row(
                kbmod.wave(wid).name, f"[{_STYLE.get(state, '')}]{state}[/]", wv.reason, wv.fix.text
            )
        console.print(table)


def _product_filter(product: str | None) -> str | None:
    if product is None:
        return None
    wanted = product.strip().lower().removeprefix("exchange").strip()
    for p in kbmod.PRODUCTS:
        if p.lower().removeprefix("exchange").strip() == wanted:
            return p
    raise InputError(
        f"unknown product {product!r}; known: {', '.join(p.split()[-1] for p in kbmod.PRODUCTS)}"
    )


@kb.command()
@click.option("--product", "product", default=None, help="Only this product: 2010, 2013, 2016, 2019 or SE.")
@click.option(
    "--wave",
    "wave_id",
    default=None,
    type=click.Choice([w.id for w in kbmod.WAVES], case_sensitive=False),
    help="Only builds that fix at least one CVE of this wave, and only this wave's column.",
)
@format_option("table", "json", "csv")
def builds(product: str | None, wave_id: str | None, fmt: str) -> None:
    """List the build catalogue: product, CU, build, date, kind, update, KB and what each build fixes."""
    wanted = _product_filter(product)
    entries = [e for e in kbmod.catalogue() if wanted is None or e.product == wanted]
    waves = [kbmod.wave(wave_id)] if wave_id else list(kbmod.WAVES)
    if wave_id:
        cves = set(waves[0].cves)
        entries = [e for e in entries if cves & set(e.fixes)]
    states = {e.build: kbmod.verdict(e.build) for e in entries}
    if fmt == "json":
        echo_json(
            [
                {**e.to_dict(), "waves": {w.id: states[e.build].waves[w.id].state.value for w in waves}}
                for e in entries
            ]
        )
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(
            ["product", "cu", "build", "release_date", "kind", "su_name", "kb", "fixes"]
            + [w.id for w in waves]
        )
        for e in entries:
            writer.writerow(
                [
                    e.product,
                    e.cu,
                    str(e.build),
                    e.release_date.isoformat(),
                    e.kind,
                    e.su_name,
                    e.kb,
                    ";".join(e.fixes),
                ]
                + [states[e.build].waves[w.id].state.value for w in waves]
            )
        return
    title = f"{len(entries)} builds"
    meta = kbmod.imported_meta()
    if meta:
        title += f" (shipped catalogue + imported list of {meta.get('imported_at', '?')}, newest {meta.get('newest_date')})"
    table = Table(title=title, title_justify="left")
    for col in ("product", "cu", "build", "date", "kind", "update", "KB"):
        table.add_column(col, no_wrap=True)
    for w in waves:
        table.add_column(w.name, no_wrap=True)
    for e in entries:
        cells = [e.product, e.cu, str(e.build), e.release_date.isoformat(), e.kind, e.su_name, e.kb]
        for w in waves:
            state = states[e.build].waves[w.id].state.value
            cells.append(f"[{_STYLE.get(state, '')}]{state}[/]")
        table.add_row(*cells)
    _stdout().print(table)


@kb.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--skip-bad", is_flag=True, help="Import the valid rows even if some rows are bad (they are listed)."
)
@click.option("--check", "dry_run", is_flag=True, help="Validate and show what would change; write nothing.")
@format_option("table", "json")
def update(file: Path, skip_bad: bool, dry_run: bool, fmt: str) -> None:
    """Import a newer copy of Microsoft's build list (ExchangeBuildNumbers.csv) into your data directory.

    The file must have the columns Product Name,Build Number,Date,KB,Blog. It is validated first: a file
    that is not that CSV, or that has bad rows (named by line number), is refused with exit 2 and nothing
    is written. The shipped catalogue is left alone; the imported copy wins for lookups.
    """
    result = kbmod.import_ms_list(file, skip_bad=skip_bad, dry_run=dry_run)
    err = stderr_console()
    for problem in result.skipped:
        err.print(f"skipped {problem}")
    if result.older_than_shipped:
        err.print(
            "note: the newest build in this list is older than the shipped catalogue's; "
            "shipped builds it lacks stay known"
        )
    if fmt == "json":
        echo_json(result.to_dict())
        return
    console = _stdout()
    verb = "Imported" if result.written else "Would import (--check: nothing written)"
    console.print(
        f"{verb} {result.imported} of {result.rows} rows into {result.path}; "
        f"{len(result.added)} build(s) new to the catalogue, {len(result.changed)} with changed details."
    )
    if result.new_since_previous is not None:
        console.print(f"{len(result.new_since_previous)} build(s) were not in the previously imported list.")
        _entries_table(console, "New since the previous import", result.new_since_previous)
    if result.added:
        per_product: dict[str, int] = {}
        for e in result.added:
            per_product[e.product] = per_product.get(e.product, 0) + 1
        console.print("New to the catalogue: " + ", ".join(f"{p}: {n}" for p, n in per_product.items()))
        if len(result.added) <= 30 or verbosity() > 0:
            _entries_table(console, "New to the catalogue", result.added)
        else:
            console.print("(list them with -v, or with --format json)")
    if result.changed:
        table = Table(title="Changed builds (imported value wins)", title_justify="left")
        for col in ("build", "before", "after"):
            table.add_column(col)
        for before, after in result.changed:
            table.add_row(str(before.build), _describe(before), _describe(after))
        console.print(table)


def _entries_table(console: Console, title: str, entries: tuple[kbmod.CatalogueEntry, ...]) -> None:
    if not entries:
        return
    table = Table(title=title, title_justify="left")
    for col in ("product", "cu", "build", "date", "kind", "update", "KB"):
        table.add_column(col, no_wrap=True)
    for e in entries:
        table.add_row(e.product, e.cu, str(e.build), e.release_date.isoformat(), e.kind, e.su_name, e.kb)
    console.print(table)


def _describe(e: kbmod.CatalogueEntry) -> str:
    return f"{e.product} {e.cu} {e.su_name} {e.release_date} {e.kb}".replace("  ", " ")


@kb.command()
@format_option("table", "json")
def waves(fmt: str) -> None:
    """List the waves: their CVEs, the products each CVE affects, the fixing update, first exploitation."""
    docs = []
    for w in kbmod.WAVES:
        docs.append(
            {
                "id": w.id,
                "name": w.name,
                "first_exploited": w.first_exploited.isoformat(),
                "first_exploited_precision": w.first_exploited_precision,
                "first_exploited_source": w.first_exploited_source,
                "disclosed": w.disclosed.isoformat() if w.disclosed else None,
                "cves": [
                    {
                        "id": c.id,
                        "role": c.role,
                        "affected": list(c.affected),
                        "fixed_by": c.fixed_by,
                        "fixed_in_build": {p: str(f.build) for p, f in c.fixed_in_build.items()},
                    }
                    for c in (kbmod.cve(cid) for cid in w.cves)
                ],
            }
        )
    if fmt == "json":
        echo_json(docs)
        return
    table = Table(title=f"{len(docs)} waves", title_justify="left", show_lines=True)
    for col in ("wave", "first exploited", "CVE", "role", "affected", "fixed by"):
        table.add_column(col, overflow="fold")
    for w in kbmod.WAVES:
        first = w.first_exploited.isoformat()
        if w.first_exploited_precision == "month":
            first = f"{first[:7]} (month)"
        for i, cid in enumerate(w.cves):
            c = kbmod.cve(cid)
            fixed = c.fixed_by + "".join(f"; {p}: {f.build}" for p, f in c.fixed_in_build.items())
            affected = ", ".join(p.removeprefix("Exchange ") for p in c.affected)
            table.add_row(w.name if i == 0 else "", first if i == 0 else "", c.id, c.role, affected, fixed)
    _stdout().print(table)
