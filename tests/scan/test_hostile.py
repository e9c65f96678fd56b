"""Hostile and broken servers: no crash, no hang past the budget, a verdict or an error class for each."""

from __future__ import annotations

from typing import Any

import pytest

from exwatch.lab import HOSTILE_VARIANTS, OTHER_VARIANTS, run_fleet_in_thread
from exwatch.lab.spec import ServerSpec
from exwatch.scan.engine import ScanOptions, run_scan
from exwatch.scan.targets import parse_ports

ERROR_CLASSES = {"refused", "timeout", "tls", "reset", "protocol", "budget"}


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_hostile_servers(scheme: str) -> None:
    port = 18443 if scheme == "https" else 18080
    variants = [v for v in [*HOSTILE_VARIANTS, *OTHER_VARIANTS] if not (scheme == "http" and v == "bad_tls")]
    specs = [
        ServerSpec(f"h{i}", f"127.20.4.{10 + i}", port, scheme, build=None, variant=v)
        for i, v in enumerate(variants)
    ]
    budget = 8.0
    records: dict[str, dict[str, Any]] = {}
    with run_fleet_in_thread(specs) as fleet:
        manifest = fleet.manifest()
        options = ScanOptions(
            ports=parse_ports(f"{port}/{scheme}"),
            timeout=3.0,
            host_budget=budget,
            probe=True,
            max_body=64 * 1024,
        )
        summary = run_scan(
            [s.address for s in specs],
            options,
            "memory:",
            on_record=lambda r: records.__setitem__(r["address"], r),
        )
    assert summary.scanned == len(specs)
    for srv in manifest["servers"]:
        rec = records[srv["address"]]
        got = {w: v["state"] for w, v in rec["waves"].items()}
        assert got == srv["truth_passive"] == srv["truth"], (srv["variant"], rec)
        if rec["status"] == "unreachable":
            assert rec["error"] in ERROR_CLASSES, (srv["variant"], rec["error"])
        # The budget holds whatever the server does (slack for a loaded event loop).
        assert rec["elapsed"] <= budget + 2.0, (srv["variant"], rec["elapsed"])
    by_variant = {s["variant"]: records[s["address"]] for s in manifest["servers"]}
    assert by_variant["refuse"]["error"] == "refused"
    assert by_variant["silent"]["error"] == "timeout"
    assert by_variant["tarpit"]["error"] == "timeout"
    # Over TLS the reset lands before or during the handshake (a race on loopback): either class is right.
    assert by_variant["reset"]["error"] in (("tls", "reset") if scheme == "https" else ("reset",))
    assert by_variant["garbage"]["error"] == "protocol"
    if scheme == "https":
        assert by_variant["bad_tls"]["error"] == "tls"
    # Oversized answers were cut, not swallowed whole.
    assert any("cut at" in n for n in by_variant["endless_body"]["notes"])
    assert any("header line(s) over the cap" in n for n in by_variant["many_headers"]["notes"])


@pytest.mark.integration
def test_host_budget_stops_a_trickling_server() -> None:
    # The per-request timeout is longer than the budget: only the wall-clock budget can free the slot.
    specs = [ServerSpec("tar", "127.20.4.90", 18443, "https", build=None, variant="tarpit")]
    records: list[dict[str, Any]] = []
    with run_fleet_in_thread(specs):
        options = ScanOptions(ports=parse_ports("18443/https"), timeout=30.0, host_budget=2.0)
        run_scan(["127.20.4.90"], options, "memory:", on_record=records.append)
    assert [(r["status"], r["error"]) for r in records] == [("unreachable", "budget")]
    assert records[0]["elapsed"] <= 4.0
