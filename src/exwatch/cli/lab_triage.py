"""``exwatch lab triage``: write a triage package (one server's logs, events and web folders) with its truth."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import click

from exwatch.cli.common import echo_json, format_option, parse_time, stderr_console
from exwatch.errors import InputError
from exwatch.lab import SCENARIOS, write_triage

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """``2GB``, ``500MB``, ``1.5GiB`` or a plain byte count."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?I?B?)\s*", text.upper())
    if not m or m.group(2) not in _UNITS:
        raise InputError(f"--size {text!r} is not a size (examples: 20MB, 2GB, 1.5GiB, 3000000)")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value > 10**13:
        raise InputError(f"--size {text!r} is too large (at most 10 TB)")
    return int(value)


def _folder_bytes(path: Path) -> tuple[int, int]:
    total = files = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
            files += 1
    return total, files


@click.command()
@click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="New or empty folder to write."
)
@click.option(
    "--size", "size_text", default="20MB", show_default=True, help="Target package size (e.g. 20MB, 2GB)."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed: the same seed writes the same package."
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(list(SCENARIOS), case_sensitive=False),
    help="What to plant (repeatable; default all = proxylogon, proxyshell, proxynotshell, lookalikes).",
)
@click.option("--host", default="EXCH01", show_default=True, help="Server name written in the logs.")
@click.option(
    "--start",
    "start_text",
    default=None,
    help="Start of the window, ISO 8601 UTC (default 2021-03-01T00:00Z).",
)
@click.option("--days", type=int, default=3, show_default=True, help="Days of logs.")
@click.option(
    "--attack-time",
    "attack_text",
    default=None,
    help="When the ProxyLogon chain starts (default 06:49:42Z on the last day); ProxyShell +3 h, ProxyNotShell +5 h.",
)
@click.option(
    "--scenario-time",
    "scenario_time_texts",
    multiple=True,
    metavar="WAVE=ISO",
    help="Start of one wave's traces, e.g. proxyshell=2021-03-02T10:00Z (repeatable; overrides the offsets).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Processes writing log files (default: CPUs for large packages).",
)
@format_option("table", "json")
def triage(
    out: Path,
    size_text: str,
    seed: int,
    scenarios: tuple[str, ...],
    host: str,
    start_text: str | None,
    days: int,
    attack_text: str | None,
    scenario_time_texts: tuple[str, ...],
    workers: int | None,
    fmt: str,
) -> None:
    """Write a triage package: Exchange, IIS and event logs plus web folders of one server, with truth.json.

    Example: exwatch lab triage --out /tmp/pkg --size 2GB --seed 7
    """
    size = parse_size(size_text)
    start = parse_time(start_text, "--start") if start_text else None
    attack = parse_time(attack_text, "--attack-time") if attack_text else None
    scenario_times = {}
    for text in scenario_time_texts:
        name, eq, when = text.partition("=")
        if not eq:
            raise InputError(f"--scenario-time expects WAVE=ISO, not {text!r}")
        scenario_times[name.strip().lower()] = parse_time(when, "--scenario-time")
    if workers is not None and workers < 1:
        raise InputError("--workers must be at least 1")
    console = stderr_console()
    t0 = time.perf_counter()
    truth = write_triage(
        out,
        seed=seed,
        size=size,
        scenarios=scenarios or ("all",),
        host=host,
        start=start,
        days=days,
        attack_time=attack,
        workers=workers,
        scenario_times=scenario_times,
    )
    seconds = time.perf_counter() - t0
    total, files = _folder_bytes(out)
    if fmt == "json":
        echo_json(
            {"out": str(out), "bytes": total, "files": files, "seconds": round(seconds, 2), "truth": truth}
        )
        return
    counts = Counter((it["kind"], it["wave"]) for it in truth["items"])
    console.print(f"wrote {out}: {files} files, {total / 1e6:.1f} MB in {seconds:.1f} s")
    click.echo(
        f"host {truth['host']}  window {truth['start']} .. {truth['end']}  scenarios {', '.join(truth['scenarios'])}"
    )
    for (kind, wave), n in sorted(counts.items()):
        click.echo(f"  {kind:9} {wave:14} {n:4} truth items")
    click.echo(f"truth: {out / 'truth.json'}")
