"""``exwatch scan`` from the command line: formats, exit codes, bad input, the store."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.errors import InputError
from exwatch.fleet import open_store
from exwatch.lab import run_fleet_in_thread
from exwatch.lab.spec import ServerSpec

pytestmark = pytest.mark.integration
PORT = 18443
VULNERABLE = "127.20.6.1"  # Exchange 2019 CU9 RTM: open to ProxyShell and ProxyNotShell
PATCHED = "127.20.6.2"  # Exchange 2019 CU14 Apr24HU: fixed for all three waves
NOT_EXCHANGE = "127.20.6.3"
NOBODY = "127.20.6.9"  # no listener: refused


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    specs = [
        ServerSpec("vuln", VULNERABLE, PORT, "https", "Exchange 2019", "15.2.858.5"),
        ServerSpec("done", PATCHED, PORT, "https", "Exchange 2019", "15.2.1544.11"),
        ServerSpec("web", NOT_EXCHANGE, PORT, "https", "", None, variant="nginx"),
    ]
    with run_fleet_in_thread(specs) as fleet:
        yield fleet


def _run(*args: str, db: Path) -> Any:
    return CliRunner().invoke(
        cli, ["scan", *args, "--ports", f"{PORT}/https", "--timeout", "2", "--db", f"sqlite:///{db}"]
    )


def test_exit_codes(lab: Any, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert _run(PATCHED, "--format", "json", db=db).exit_code == 0
    assert _run(PATCHED, NOT_EXCHANGE, NOBODY, "--format", "json", db=db).exit_code == 3
    assert _run(PATCHED, VULNERABLE, NOBODY, "--format", "json", db=db).exit_code == 1


def test_json_and_store(lab: Any, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    result = _run(VULNERABLE, PATCHED, NOT_EXCHANGE, NOBODY, "--tag", "org=ACME", "--format", "json", db=db)
    doc = json.loads(result.stdout)
    hosts = {h["address"]: h for h in doc["hosts"]}
    assert doc["hosts"][0]["address"] == VULNERABLE  # worst first
    assert hosts[VULNERABLE]["waves"]["proxyshell"]["state"] == "vulnerable"
    assert hosts[VULNERABLE]["waves"]["proxyshell"]["fix"]["cumulative_update"]
    assert hosts[PATCHED]["build"] == "15.2.1544.11" and hosts[PATCHED]["build_source"] == "x-owa-version"
    assert {w["state"] for w in hosts[PATCHED]["waves"].values()} == {"patched"}
    assert hosts[NOT_EXCHANGE]["status"] == "not_exchange"
    assert (hosts[NOBODY]["status"], hosts[NOBODY]["error"]) == ("unreachable", "refused")
    assert hosts[VULNERABLE]["tags"] == {"org": "ACME"} and hosts[VULNERABLE]["fe_server"]
    assert hosts[VULNERABLE]["cert_names"]  # read from the TLS peer certificate
    assert doc["summary"]["statuses"] == {"exchange": 2, "not_exchange": 1, "unreachable": 1}
    with open_store(f"sqlite:///{db}") as store:
        scan_id = store.latest_scan_id()
        assert scan_id is not None
        assert store.scan_done_keys(scan_id) == {
            f"https://{a}:{PORT}" for a in (VULNERABLE, PATCHED, NOT_EXCHANGE, NOBODY)
        }
        assert store.scan_params(scan_id)["options"]["ports"] == [f"{PORT}/https"]


def test_csv_jsonl_and_table(lab: Any, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    rows = list(csv.DictReader(io.StringIO(_run(VULNERABLE, PATCHED, "--format", "csv", db=db).stdout)))
    assert {r["address"]: r["proxyshell"] for r in rows} == {VULNERABLE: "vulnerable", PATCHED: "patched"}
    lines = _run(VULNERABLE, PATCHED, "--format", "jsonl", db=db).stdout.splitlines()
    assert sorted(json.loads(x)["address"] for x in lines) == [VULNERABLE, PATCHED]
    table = _run(VULNERABLE, PATCHED, db=db).stdout
    assert "Exposed hosts" in table and VULNERABLE in table and "15.2.858.5" in table
    assert PATCHED not in table.split("Exposed hosts")[1]


def test_bad_lines_are_reported_and_the_rest_scanned(lab: Any, tmp_path: Path) -> None:
    f = tmp_path / "targets.txt"
    f.write_text(
        f"# two good, two bad\n{PATCHED} org=A\nexchange!!\n{VULNERABLE}\n10.0.0.1-10.0.0.0\n",
        encoding="utf-8",
    )
    result = _run("--targets-file", str(f), "--format", "jsonl", db=tmp_path / "s.db")
    assert result.exit_code == 1
    assert f"{f}:3:" in result.stderr and f"{f}:5:" in result.stderr
    assert sorted(json.loads(x)["address"] for x in result.stdout.splitlines()) == sorted(
        [PATCHED, VULNERABLE]
    )


def test_non_text_targets_file(tmp_path: Path) -> None:
    f = tmp_path / "targets.txt"
    f.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" * 20)
    result = _run("--targets-file", str(f), db=tmp_path / "s.db")
    assert result.exit_code == 2
    assert "exwatch: error:" in result.stderr and "not a text file" in result.stderr


def test_usage_errors(tmp_path: Path) -> None:
    assert _run(db=tmp_path / "s.db").exit_code == 2
    result = _run("127.20.6.1", "--tag", "novalue", db=tmp_path / "s.db")
    assert result.exit_code == 2 and "key=value" in result.stderr
    assert _run("127.20.6.1", "--concurrency", "0", db=tmp_path / "s.db").exit_code == 2
    help_text = CliRunner().invoke(cli, ["scan", "--help"]).output
    assert "--probe" in help_text and "traces" in help_text


def _interrupted_scan(db: Path, stored: str, left: str) -> int:
    """A scan of ``stored`` and ``left`` whose first run stored only ``stored`` (as a killed run leaves it)."""
    from exwatch.scan.engine import ScanOptions, run_scan
    from exwatch.scan.sink import open_sink
    from exwatch.scan.targets import parse_ports

    options = ScanOptions(ports=parse_ports(f"{PORT}/https"), timeout=2.0)
    first: list[dict[str, Any]] = []
    run_scan([stored], options, "null:", on_record=first.append)
    sink = open_sink(f"sqlite:///{db}")
    try:
        params = {"targets": [stored, left], "options": options.to_params(), "tags": {}, "scan_time": None}
        scan_id = sink.start(params, None)
        sink.add(scan_id, first)
    finally:
        sink.close()
    return scan_id


def test_resume_summary_and_exit_code_cover_the_whole_scan(lab: Any, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    scan_id = _interrupted_scan(db, VULNERABLE, PATCHED)
    result = CliRunner().invoke(
        cli, ["scan", "--resume", str(scan_id), "--db", f"sqlite:///{db}", "--format", "json"]
    )
    doc = json.loads(result.stdout)
    # This run saw only the patched host; the vulnerable one was stored by the first run.
    assert [h["address"] for h in doc["hosts"]] == [PATCHED]
    assert doc["summary"]["vulnerable_hosts"] == 0 and doc["summary"]["skipped"] == 1
    whole = doc["summary"]["whole_scan"]
    assert whole["statuses"] == {"exchange": 2}
    assert whole["waves"]["proxyshell"] == {"vulnerable": 1, "patched": 1}
    assert result.exit_code == 1  # the vulnerable host of the first run counts
    table = CliRunner().invoke(
        cli, ["scan", "--resume", str(_interrupted_scan(db, NOBODY, PATCHED)), "--db", f"sqlite:///{db}"]
    )
    assert "whole scan" in table.stdout and "unreachable 1" in table.stdout
    assert table.exit_code == 3  # the unreachable host of the first run leaves the scan incomplete


def test_parse_tags() -> None:
    from exwatch.cli.scan import _parse_tags, parse_tags

    assert parse_tags(("org=ACME", " site = Paris ")) == {"org": "ACME", "site": "Paris"}
    assert _parse_tags is parse_tags
    with pytest.raises(InputError, match="expected key=value"):
        parse_tags(("orphan",))


def test_csv_cells_of_a_hostile_server_never_run_as_formulas(
    lab: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a server answers (X-FEServer, the notes and conflicts built from it) reaches the CSV; a cell that a
    spreadsheet would run as a formula is written with a leading apostrophe (OWASP CSV injection)."""
    from exwatch.cli.scan import HostOutput

    lines = _run(VULNERABLE, "--format", "jsonl", db=tmp_path / "s.db").stdout.splitlines()
    rec = json.loads(lines[0])
    rec["fe_server"] = '=HYPERLINK("http://evil.example","x")'
    rec["conflicts"] = ["@SUM(1+1)"]
    HostOutput("csv").host(rec)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    assert rows[0]["fe_server"] == "'" + rec["fe_server"] and rows[0]["conflicts"] == "'@SUM(1+1)"
    assert rows[0]["address"] == VULNERABLE and rows[0]["proxyshell"] == "vulnerable"
