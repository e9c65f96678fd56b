"""Scope: nothing reaches an excluded address (counted by the lab), the /16 guard, names checked after DNS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.errors import ScopeError
from exwatch.lab import draw_fleet, run_fleet_in_thread
from exwatch.scan.engine import ScanOptions, run_scan
from exwatch.scan.targets import TargetSet, parse_ports

PORT = 18443


@pytest.mark.integration
def test_excluded_addresses_receive_nothing(tmp_path: Path) -> None:
    specs = draw_fleet(40, seed=5, base_address="127.20.3.1", https_port=PORT, only_exchange=True)
    addresses = [s.address for s in specs]
    excluded_range = set(addresses[8:16])
    excluded_file_addr = addresses[20]
    exclude_file = tmp_path / "optouts.txt"
    exclude_file.write_text(f"# opt-outs\n{excluded_file_addr}  # asked on 2021-03-10\n", encoding="utf-8")
    records: dict[str, dict[str, Any]] = {}
    with run_fleet_in_thread(specs) as fleet:
        options = ScanOptions(
            ports=parse_ports(f"{PORT}/https"),
            timeout=2.0,
            host_budget=6.0,
            exclude=(f"{addresses[8]}-{addresses[15]}", str(exclude_file)),
        )
        summary = run_scan(
            [f"{addresses[0]}-{addresses[-1]}"],
            options,
            "memory:",
            on_record=lambda r: records.__setitem__(r["address"], r),
        )
        counts = fleet.request_counts()
    excluded = excluded_range | {excluded_file_addr}
    assert len(excluded) == 9
    for addr in excluded:
        assert counts.get(addr, 0) == 0, f"{addr} was contacted"
        assert records[addr]["status"] == "unreachable" and records[addr]["error"] == "excluded"
    scanned = [a for a in addresses if a not in excluded]
    assert all(counts.get(a, 0) > 0 for a in scanned)
    assert summary.scanned == len(addresses)
    assert summary.errors["excluded"] == 9
    # Nothing outside the fleet's range in the lab's counters either.
    assert set(counts) <= set(addresses)


@pytest.mark.integration
def test_name_resolving_to_an_excluded_address_is_not_contacted() -> None:
    # "localhost" resolves to 127.0.0.1 (and maybe ::1): both excluded, so no connection is made.
    records: list[dict[str, Any]] = []
    options = ScanOptions(ports=parse_ports("18999/http"), timeout=1.0, exclude=("127.0.0.1", "::1"))
    run_scan(["localhost"], options, "memory:", on_record=records.append)
    assert [r["error"] for r in records] == ["excluded"]
    assert records[0]["address"] in ("127.0.0.1", "::1")


def test_large_range_needs_yes_large() -> None:
    tset = TargetSet(("127.20.0.0/15",), (), parse_ports("443"))
    with pytest.raises(ScopeError, match="--yes-large"):
        tset.check(yes_large=False)
    total, problems = tset.check(yes_large=True)
    assert total == 131072 and problems == []
    # A /16 exactly is allowed.
    assert TargetSet(("127.20.0.0/16",), (), parse_ports("443")).check(False)[0] == 65536


def test_large_range_cli_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["scan", "127.16.0.0/12", "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2
    assert "more than a /16" in result.output and "--yes-large" in result.output
    # The guard fires before a scan is even recorded.
    assert "scan 1" not in result.output
