"""Ordinary use, as a new user would: a lab fleet on the default ports (443 and 80), real scans over
sockets, a real store (SQLite, and PostgreSQL with the ``postgres`` marker), and after each step the
report's JSON equals the counts computed independently from the lab manifest's truth.

Steps: scan a range twice, rescan one server, change a server and scan one shard, a typo, retire a
server.  (Issue 10: "no classified server" after a second scan; "100.0% of 1 classified servers" after
a rescan of one server.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.lab import draw_fleet, run_fleet_in_thread
from exwatch.lab.spec import ServerSpec
from exwatch.lab.truth import truth_passive

WAVES = ("proxylogon", "proxyshell", "proxynotshell")
STATES = ("vulnerable", "patched", "mitigated", "unknown", "not_affected")


def _fleet(base: str) -> Iterator[tuple[Any, list[ServerSpec]]]:
    specs = draw_fleet(
        24,
        seed=10,
        base_address=base,
        other_share=0.3,
        exchange_variants={"standard": 1.0},
        other_variants={"iis": 0.4, "nginx": 0.2, "refuse": 0.4},
    )
    try:
        with run_fleet_in_thread(specs) as fleet:
            yield fleet, specs
    except PermissionError:  # pragma: no cover - ports 443 and 80 need root or CAP_NET_BIND_SERVICE
        pytest.skip("binding ports 443 and 80 needs root")


def expected(specs: list[ServerSpec], retired: set[str]) -> dict[str, dict[str, int]]:
    """Per wave, hosts per state from the lab's truth (what a passive scan can rightly conclude)."""
    out: dict[str, dict[str, int]] = {}
    for wave in WAVES:
        counts: Counter[str] = Counter()
        for spec in specs:
            if not spec.is_exchange or spec.address in retired:
                continue
            counts[truth_passive(spec)[wave]] += 1
        out[wave] = {s: counts.get(s, 0) for s in STATES}
    return out


def run(runner: CliRunner, db: str, *args: str) -> Any:
    return runner.invoke(cli, ["--db", db, *args], catch_exceptions=False)


def report(runner: CliRunner, db: str) -> dict[str, Any]:
    result = run(runner, db, "report", "--format", "json")
    assert result.exit_code in (0, 1), result.output
    return dict(json.loads(result.stdout))


def check(doc: dict[str, Any], specs: list[ServerSpec], retired: set[str]) -> None:
    latest = doc["snapshots"][-1]
    want = expected(specs, retired)
    got = {w: {s: latest["waves"][w][s] for s in STATES} for w in WAVES}
    assert got == want
    exchange = sum(1 for s in specs if s.is_exchange and s.address not in retired)
    assert latest["statuses"] == {"exchange": exchange}
    assert latest["stale"] == 0
    pl = want["proxylogon"]
    classified = pl["vulnerable"] + pl["patched"] + pl["mitigated"]
    share = (pl["patched"] + pl["mitigated"]) / classified * 100
    assert doc["headline"].startswith(f"ProxyLogon: {share:.1f}% of {classified:,} classified servers")
    vulnerable = {(h["address"], h["wave"]) for h in doc["hosts_at_risk"]}
    assert vulnerable == {
        (s.address, w)
        for s in specs
        if s.is_exchange and s.address not in retired
        for w in WAVES
        if truth_passive(s)[w] == "vulnerable"
    }


def assert_ordinary_use(db: str, fleet: Any, specs: list[ServerSpec], prefix: str) -> None:
    runner = CliRunner()
    rng = f"{prefix}.0/27"
    exchange = [s for s in specs if s.is_exchange]
    assert len(exchange) >= 8 and any(not s.is_exchange for s in specs)
    # 1. scan the range with the default ports (443/https and 80/http)
    first = run(runner, db, "scan", rng, "--format", "json")
    assert first.exit_code in (0, 1, 3), first.output
    check(report(runner, db), specs, set())
    # 2. the same range again: a refused port 80 must not hide the port-443 Exchange verdict
    again = run(runner, db, "scan", rng, "--format", "json")
    assert again.exit_code == first.exit_code
    doc = report(runner, db)
    check(doc, specs, set())
    assert len(doc["snapshots"]) == 2
    listed = json.loads(run(runner, db, "hosts", "list", "--format", "json").stdout)
    assert {h["address"]: h["status"] for h in listed} == {s.address: "exchange" for s in exchange}
    assert {h["port"] for h in listed} == {443}
    # 3. rescan one server: the fleet stays the fleet
    one = exchange[0]
    assert run(runner, db, "scan", one.address, "--format", "json").exit_code in (0, 1)
    doc = report(runner, db)
    check(doc, specs, set())
    assert doc["snapshots"][-1]["scope"] == [one.address]
    # 4. patch a vulnerable server in the lab, scan only the shard it is in
    target = next(
        s for s in exchange if truth_passive(s)["proxylogon"] == "vulnerable" and s.address != one.address
    )
    from exwatch import kb

    cu_builds = kb.builds_for_cu(kb.parse_build(target.build or ""))
    patched = next(str(b) for b in cu_builds if kb.verdict(b).waves["proxylogon"].state == kb.State.PATCHED)
    fleet.update(target.name, build=patched)
    target.build = patched
    last = int(target.address.rsplit(".", 1)[1])
    shard = f"{prefix}.{last // 8 * 8}/29"
    assert run(runner, db, "scan", shard, "--format", "json").exit_code in (0, 1, 3)
    check(report(runner, db), specs, set())
    # 5. a typo: exit 2, nothing stored, the report unchanged
    before = report(runner, db)
    typo = run(runner, db, "scan", f"{prefix}.1100")
    assert typo.exit_code == 2 and "exwatch: error:" in typo.output
    after = report(runner, db)
    assert after["snapshots"] == before["snapshots"]
    # 6. retire a server: it leaves the denominator
    gone = exchange[-1]
    assert run(runner, db, "hosts", "retire", gone.address).exit_code == 0
    check(report(runner, db), specs, {gone.address})
    listed = json.loads(run(runner, db, "hosts", "list", "--format", "json").stdout)
    assert [h["address"] for h in listed if h["retired_at"]] == [gone.address]
    # and the retirement is reversible
    change = json.loads(run(runner, db, "hosts", "changes", "--format", "json").stdout)[0]["change"]
    assert run(runner, db, "hosts", "undo", str(change)).exit_code == 0
    check(report(runner, db), specs, set())


@pytest.fixture
def lab_sqlite() -> Iterator[tuple[Any, list[ServerSpec]]]:
    yield from _fleet("127.71.0.1")


@pytest.mark.integration
def test_ordinary_use_sqlite(lab_sqlite: tuple[Any, list[ServerSpec]], tmp_path: Path) -> None:
    fleet, specs = lab_sqlite
    assert_ordinary_use(f"sqlite:///{tmp_path / 'fleet.db'}", fleet, specs, "127.71.0")


@pytest.fixture
def lab_pg() -> Iterator[tuple[Any, list[ServerSpec]]]:
    yield from _fleet("127.72.0.1")


@pytest.mark.postgres
@pytest.mark.integration
def test_ordinary_use_postgres(lab_pg: tuple[Any, list[ServerSpec]], pg_url: str) -> None:
    from tests.fleet.conftest import fresh_pg_url

    fleet, specs = lab_pg
    for url in fresh_pg_url(pg_url):
        assert_ordinary_use(url, fleet, specs, "127.72.0")
