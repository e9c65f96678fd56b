"""``exwatch cluster``: the scan and the hunt spread over a Dask cluster (the ``cluster`` extra)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from exwatch.cli.common import (
    db_option,
    echo_json,
    format_option,
    parse_time,
    resolve_db,
    stderr_console,
    verbosity,
)
from exwatch.cli.hunt import window_options
from exwatch.errors import InputError
from exwatch.record import HostRecord, Observation


def _cluster_options(func: Any) -> Any:
    func = click.option(
        "--local-workers",
        type=int,
        default=None,
        metavar="N",
        help="Start a local Dask cluster of N worker processes (loopback only, no dashboard); default 2.",
    )(func)
    func = click.option(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (see `dask scheduler`).",
    )(func)
    return func


@click.group("cluster")
def cluster() -> None:
    """Scale out on Dask: a sharded scan of many targets, a hunt of many triage packages.

    Needs the cluster extra: pip install 'exwatch[cluster]'.
    """


@cluster.command(
    "scan",
    epilog="Exit codes as for `exwatch scan`: 0 nothing exposed; 1 a vulnerable host; 2 bad input; 3 none "
    "vulnerable but some targets unreachable or unknown (failed shards count here).",
)
@click.argument("targets", nargs=-1)
@click.option(
    "--targets-file",
    "targets_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File of targets, one a line; a lab manifest works too (read by the client, streamed).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="F",
    help="Address, CIDR, range, name, or a file of them, never to contact (checked before sharding and on the worker).",
)
@_cluster_options
@click.option("--shard-size", default=500, show_default=True, help="Targets per shard (one Dask task).")
@click.option(
    "--in-flight",
    type=int,
    default=None,
    help="Shards submitted at once (default: the cluster's worker threads, at least 2).",
)
@click.option(
    "--shard-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Give a shard up after this long (its targets recorded with error class budget); "
    "default: from the host budget and the rate.",
)
@click.option(
    "--ports", default="443,80", show_default=True, help="Ports to scan, e.g. 443,80 or 8443/https."
)
@click.option(
    "--probe",
    is_flag=True,
    help="Also send the behavioural probes (they leave traces in the logs; authorised targets only).",
)
@click.option("--concurrency", default=256, show_default=True, help="Targets scanned at once in each shard.")
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    help="Requests per second over the whole scan, split evenly over the shards in flight (0: no limit).",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per request (connect, send, read).")
@click.option("--yes-large", is_flag=True, help="Allow ranges larger than a /16.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag every host of this scan (repeatable).")
@format_option("table", "json")
@db_option
def scan(
    targets: tuple[str, ...],
    targets_files: tuple[Path, ...],
    exclude: tuple[str, ...],
    scheduler: str | None,
    local_workers: int | None,
    shard_size: int,
    in_flight: int | None,
    shard_timeout: float | None,
    ports: str,
    probe: bool,
    concurrency: int,
    rate: float,
    timeout: float,
    yes_large: bool,
    tags: tuple[str, ...],
    fmt: str,
    db_url: str | None,
) -> None:
    """Scan TARGETS on a Dask cluster: shards of targets run the scanner on the workers; the results
    form ONE scan in the store, as `exwatch scan` would write it. `-v` prints progress every 5 s.
    """
    from exwatch.cli.scan import parse_tags
    from exwatch.cluster import cluster_scan, open_client
    from exwatch.scan.options import ScanOptions
    from exwatch.scan.targets import parse_ports

    if not targets and not targets_files:
        raise InputError("no target: give TARGET arguments or --targets-file")
    options = ScanOptions(
        ports=parse_ports(ports),
        probe=probe,
        concurrency=concurrency,
        rate=rate,
        timeout=timeout,
        yes_large=yes_large,
        exclude=tuple(exclude),
        targets_files=tuple(str(f) for f in targets_files),
    )
    options.validate()
    url = resolve_db(db_url)
    shown = _ClusterProgress(fmt)
    with open_client(scheduler, local_workers) as client:
        result = cluster_scan(
            client,
            list(targets),
            options,
            url,
            shard_size=shard_size,
            in_flight=in_flight,
            shard_timeout=shard_timeout,
            tags=parse_tags(tags),
            on_record=shown.record,
            on_start=shown.start,
            on_host=shown.host,
        )
    shown.finish(result)
    click.get_current_context().exit(result.summary.exit_code)


class _ClusterProgress:
    """What `cluster scan` prints: a line every 5 s with -v, then the table or the JSON document."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.err = stderr_console()
        self.records: list[HostRecord] = []
        self.done = self.total = 0
        self.last = time.monotonic()

    def host(self, rec: HostRecord) -> None:
        if self.fmt == "json":
            self.records.append(rec)

    def record(self, rec: Observation) -> None:
        self.done += 1
        if verbosity() >= 1 and time.monotonic() - self.last >= 5.0:
            self.last = time.monotonic()
            click.echo(f"exwatch: cluster scan: {self.done:,}/{self.total:,} done", err=True)

    def start(self, scan_id: int, total: int, problems: list[str]) -> None:
        self.total = total
        for message in problems:
            self.err.print(f"exwatch: warning: skipped {message}", markup=False, highlight=False)
        if verbosity() >= 0:
            self.err.print(f"cluster scan {scan_id}: {total:,} target(s)", highlight=False)

    def finish(self, result: Any) -> None:
        from exwatch.cli.scan import render_table
        from exwatch.scan.observation import worst_state

        if self.fmt == "json":
            hosts = sorted(self.records, key=lambda r: (worst_state(r), r["key"]))
            echo_json({"summary": result.to_dict(), "hosts": hosts})
            return
        render_table(result.summary, Console(width=max(Console().width, 140)))
        failed = ", ".join(f"{k} {v}" for k, v in result.failed_targets.items())
        click.echo(
            f"cluster: {result.shards} shard(s) of up to {result.shard_size}, {result.in_flight} in flight, "
            f"{result.workers} worker thread(s); failed shards {result.failed_shards}"
            + (f" ({failed} targets)" if failed else "")
        )


@cluster.command(
    "hunt",
    epilog="Exit codes as for `exwatch hunt`: 0 clean; 1 a likely or confirmed finding; 2 bad input; "
    "3 nothing above review but some files or packages could not be hunted.",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_cluster_options
@window_options
@click.option("--no-store", is_flag=True, help="Do not write the findings to the store.")
@format_option("table", "json")
@db_option
def hunt(
    paths: tuple[Path, ...],
    scheduler: str | None,
    local_workers: int | None,
    since: str | None,
    until: str | None,
    no_store: bool,
    fmt: str,
    db_url: str | None,
) -> None:
    """Hunt many triage packages on a Dask cluster (each PATH a package, or a folder of packages; one host
    each). The workers must see the packages at the same paths (local workers or a shared file system).
    """
    from exwatch.cli.hunt_output import print_notes, render_hunt
    from exwatch.cluster import cluster_hunt, open_client
    from exwatch.cluster.hunt import store_hunt
    from exwatch.hunt import HuntOptions, refuse_store_in_evidence

    options = HuntOptions(
        since=parse_time(since, "--since") if since else None,
        until=parse_time(until, "--until") if until else None,
    )
    console = stderr_console()
    store_url = None if no_store else resolve_db(db_url)
    if store_url is not None:
        refuse_store_in_evidence(store_url, list(paths))
    started = datetime.now(UTC)
    with open_client(scheduler, local_workers) as client:
        result = cluster_hunt(client, list(paths), options)
    if store_url is not None:
        store_hunt(result, store_url, started)
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        render_hunt(result)
    print_notes(result, console)  # evidence names as text: never read as markup
    raise SystemExit(result.exit_code)
