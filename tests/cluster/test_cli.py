"""``exwatch cluster scan`` and ``exwatch cluster hunt`` end to end, and the missing-extra message."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.lab import draw_fleet, run_fleet_in_thread
from exwatch.lab.triage import write_triage

pytestmark = [pytest.mark.integration]

PORT = 18843


def test_cluster_scan_local_workers_json(tmp_path: Path) -> None:
    specs = draw_fleet(12, seed=62, base_address="127.60.20.1", https_port=PORT, only_exchange=True)
    db = tmp_path / "s.db"
    with run_fleet_in_thread(specs) as fleet:
        manifest = fleet.manifest()
        res = CliRunner().invoke(
            cli,
            [
                "cluster",
                "scan",
                f"{specs[0].address}-{specs[-1].address}",
                "--exclude",
                specs[3].address,
                "--ports",
                f"{PORT}/https",
                "--local-workers",
                "1",
                "--shard-size",
                "5",
                "--timeout",
                "3",
                "--db",
                f"sqlite:///{db}",
                "--format",
                "json",
            ],
        )
    assert res.exit_code in (0, 1), res.output
    data = json.loads(res.stdout)
    assert data["summary"]["scanned"] == 12 and data["summary"]["cluster"]["shards"] == 3
    hosts = {h["address"]: h for h in data["hosts"]}
    assert hosts[specs[3].address]["error"] == "excluded"
    for srv in manifest["servers"]:
        if srv["address"] != specs[3].address:
            assert {w: v["state"] for w, v in hosts[srv["address"]]["waves"].items()} == srv["truth_passive"]
    assert res.exit_code == (1 if data["summary"]["vulnerable_hosts"] else 0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from scans").fetchone() == (1,)
        assert conn.execute("select count(distinct key), count(*) from observations").fetchone() == (12, 12)


def test_cluster_hunt_cli_on_a_running_scheduler(dask_client: Any, tmp_path: Path) -> None:
    write_triage(
        tmp_path / "pkgs" / "EXCH07", seed=7, size=200_000, scenarios=("proxyshell",), host="EXCH07", days=1
    )
    write_triage(
        tmp_path / "pkgs" / "EXCH08", seed=8, size=200_000, scenarios=("clean",), host="EXCH08", days=1
    )
    address = dask_client.scheduler.address
    db = tmp_path / "h.db"
    args = ["cluster", "hunt", str(tmp_path / "pkgs"), "--scheduler", address, "--db", f"sqlite:///{db}"]
    res = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)
    assert {h["host"]: h["verdict"] for h in data["hosts"]} == {"EXCH07": "compromised", "EXCH08": "clean"}
    assert any(f["wave"] == "proxyshell" for f in data["findings"])
    with sqlite3.connect(db) as conn:
        assert sorted(r[0] for r in conn.execute("select host from hunts")) == ["EXCH07", "EXCH08"]
    # --since after every log: nothing is found, the hunter's window is forwarded.
    late = CliRunner().invoke(cli, [*args, "--since", "2030-01-01", "--no-store", "--format", "json"])
    assert late.exit_code in (0, 3), late.output
    assert json.loads(late.stdout)["findings"] == []
    bad = CliRunner().invoke(cli, [*args, "--since", "yesterday"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    res = CliRunner().invoke(cli, ["cluster", "hunt", str(tmp_path), "--local-workers", "1"])
    assert res.exit_code == 2
    assert "pip install 'exwatch[cluster]'" in res.output


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["cluster", "scan", "--local-workers", "1"])
    assert res.exit_code == 2 and "no target" in res.output
    res = CliRunner().invoke(
        cli,
        [
            "cluster",
            "hunt",
            str(tmp_path / "missing"),
            "--scheduler",
            "tcp://127.0.0.1:1",
            "--local-workers",
            "1",
        ],
    )
    assert res.exit_code == 2 and "not both" in res.output


def test_store_inside_the_evidence_is_refused(tmp_path: Path) -> None:
    """Refused before any worker starts: nothing is created in the package."""
    package = tmp_path / "EXCH01"
    package.mkdir()
    db = f"sqlite:///{package / 'store.db'}"
    res = CliRunner().invoke(cli, ["cluster", "hunt", str(package), "--local-workers", "1", "--db", db])
    assert res.exit_code == 2 and "inside the evidence" in res.output
    assert list(package.iterdir()) == []
