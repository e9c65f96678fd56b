"""``exwatch lab serve``: run a fleet of emulated Exchange servers on loopback addresses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import click

from exwatch.cli.common import stderr_console
from exwatch.errors import InputError
from exwatch.lab import (
    DEFAULT_EXCHANGE_VARIANTS,
    DEFAULT_OTHER_SHARE,
    DEFAULT_OTHER_VARIANTS,
    VARIANTS,
    LabFleet,
    ServerSpec,
    draw_fleet,
    load_specs,
    mitigation_web_config,
)


def _shares(values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        name, eq, share = item.partition("=")
        if not eq or name not in VARIANTS:
            raise InputError(f"--share expects VARIANT=SHARE with a known variant, not {item!r}")
        try:
            out[name] = float(share)
        except ValueError as exc:
            raise InputError(f"--share {item!r}: {share!r} is not a number") from exc
        if out[name] < 0:
            raise InputError(f"--share {item!r}: shares cannot be negative")
    return out


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written manifest


@click.command()
@click.option(
    "--fleet", "fleet_size", type=int, default=None, help="Draw a fleet of N servers (March 2021 builds)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the drawn fleet.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON list of server specs to serve exactly.",
)
@click.option(
    "--base-address", default="127.1.0.1", show_default=True, help="First loopback address of a drawn fleet."
)
@click.option("--https-port", type=int, default=None, help="HTTPS port (default 443 as root, else 8443).")
@click.option("--http-port", type=int, default=None, help="HTTP port (default 80 as root, else 8080).")
@click.option(
    "--http-share", type=float, default=0.0, show_default=True, help="Share of drawn servers on plain HTTP."
)
@click.option(
    "--only-exchange",
    is_flag=True,
    help="Draw only Exchange servers (no other, unreachable or hostile ones).",
)
@click.option(
    "--other-share",
    type=float,
    default=DEFAULT_OTHER_SHARE,
    show_default=True,
    help="Share of non-Exchange, unreachable and hostile servers.",
)
@click.option(
    "--patched-share",
    type=float,
    default=0.45,
    show_default=True,
    help="Share of Exchange servers on their CU's newest build.",
)
@click.option(
    "--mitigated-share",
    type=float,
    default=0.12,
    show_default=True,
    help="Share of Exchange servers with the ProxyLogon rules.",
)
@click.option(
    "--share",
    "shares",
    multiple=True,
    metavar="VARIANT=W",
    help="Weight of a variant among its kind (repeatable).",
)
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the ground truth here once every listener accepts.",
)
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write each server's HttpProxy logs under DIR/<name>/.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep each Exchange server's web.config in DIR/<name>/web.config (re-read on change).",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: until SIGINT/SIGTERM).",
)
def serve(
    fleet_size: int | None,
    seed: int,
    spec_file: Path | None,
    base_address: str,
    https_port: int | None,
    http_port: int | None,
    http_share: float,
    only_exchange: bool,
    other_share: float,
    patched_share: float,
    mitigated_share: float,
    shares: tuple[str, ...],
    manifest_file: Path | None,
    log_dir: Path | None,
    state_dir: Path | None,
    duration: float | None,
) -> None:
    """Serve a fleet of emulated Exchange servers (and others) on loopback addresses.

    Each server listens on its own 127.x address; the manifest holds the ground truth.
    """
    if (fleet_size is None) == (spec_file is None):
        raise InputError("give exactly one of --fleet N or --spec FILE")
    root = os.geteuid() == 0
    https_port = https_port if https_port is not None else (443 if root else 8443)
    http_port = http_port if http_port is not None else (80 if root else 8080)
    if spec_file is not None:
        specs = load_specs(spec_file)
    else:
        assert fleet_size is not None
        extra = _shares(shares)
        ex = {
            **DEFAULT_EXCHANGE_VARIANTS,
            **{k: v for k, v in extra.items() if k in DEFAULT_EXCHANGE_VARIANTS},
        }
        other = {
            **DEFAULT_OTHER_VARIANTS,
            **{k: v for k, v in extra.items() if k not in DEFAULT_EXCHANGE_VARIANTS},
        }
        specs = draw_fleet(
            fleet_size,
            seed,
            base_address,
            https_port=https_port,
            http_port=http_port,
            http_share=http_share,
            only_exchange=only_exchange,
            other_share=other_share,
            exchange_variants=ex,
            other_variants=other,
            patched_share=patched_share,
            mitigated_share=mitigated_share,
        )
    if state_dir is not None:
        _prepare_state_dir(specs, state_dir)
    asyncio.run(_run(specs, manifest_file, log_dir, duration))


def _prepare_state_dir(specs: list[ServerSpec], state_dir: Path) -> None:
    """Give each Exchange server a web.config holding its mitigations; an existing file is kept as is."""
    for spec in specs:
        if not spec.is_exchange or spec.web_config is not None:
            continue
        path = state_dir / spec.name / "web.config"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(mitigation_web_config(spec.mitigations), encoding="utf-8")
        spec.web_config = path


async def _run(
    specs: list[ServerSpec], manifest_file: Path | None, log_dir: Path | None, duration: float | None
) -> None:
    console = stderr_console()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.perf_counter()
    async with LabFleet(specs, log_dir) as fleet:
        listening = sum(1 for s in specs if s.variant != "refuse")
        console.print(
            f"lab: {len(specs)} servers ({listening} listening) up in {time.perf_counter() - t0:.2f} s; CA {fleet.ca_path}"
        )
        if manifest_file is not None:
            _write_json(manifest_file, fleet.manifest())
            console.print(f"lab: manifest written to {manifest_file}")
        try:
            await asyncio.wait_for(stop.wait(), duration)
        except TimeoutError:
            pass
        if manifest_file is not None:
            _write_json(manifest_file, fleet.manifest())  # the truth as it stands at the end
    console.print("lab: stopped")
