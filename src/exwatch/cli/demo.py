"""``exwatch demo``: the whole story on a simulated lab fleet (scans per simulated day, hunts, report)."""

from __future__ import annotations

from pathlib import Path

import click

from exwatch.cli.common import EXIT_OK, db_option
from exwatch.config import data_dir


@click.command()
@click.option(
    "--servers",
    type=click.IntRange(min=10, max=60_000),
    default=2000,
    show_default=True,
    help="Servers in the lab fleet (loopback addresses from 127.40.0.1).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the store, manifests, triage packages and reports (default: DATA_DIR/demo).",
)
@click.option(
    "--hunts",
    type=click.IntRange(min=1, max=200),
    default=16,
    show_default=True,
    help="Servers whose triage packages are hunted.",
)
@click.option("--seed", type=int, default=2021, show_default=True, help="Seed of the simulation.")
@db_option
def demo(servers: int, out: Path | None, hunts: int, seed: int, db_url: str | None) -> None:
    """Run the whole story on SIMULATED data: a lab fleet patched day by day along the published
    March 2021 ProxyLogon curve, one scan per simulated day, hunts of triage packages, then the report
    in the terminal and as HTML (its path is printed). --db defaults to a fresh SQLite file under --out.
    """
    from exwatch.demo import DemoOptions, run_demo

    folder = out or data_dir() / "demo"
    run_demo(DemoOptions(servers=servers, out=folder, db_url=db_url, seed=seed, hunts=hunts), echo=click.echo)
    click.get_current_context().exit(EXIT_OK)
