"""A small demo run, checked against the lab's ground truth by counting independently of exwatch.fleet."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from exwatch.demo import PUBLISHED, DemoOptions, DemoResult, published_share, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = (date(2021, 3, 10), date(2021, 3, 11), date(2021, 3, 17))


def test_published_curve_interpolates() -> None:
    assert published_share(date(2021, 3, 10)) == pytest.approx(1 - 92_072 / 400_000)
    assert published_share(date(2021, 3, 22)) == pytest.approx(0.92)
    # halfway between 2021-03-14 and 2021-03-22
    assert published_share(date(2021, 3, 18)) == pytest.approx((1 - 69_548 / 400_000 + 0.92) / 2)
    assert published_share(date(2021, 3, 1)) == PUBLISHED[0][1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoResult, list[str]]:
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    result = run_demo(
        DemoOptions(servers=200, out=out, days=DAYS, hunts=4, base_address="127.40.128.1", seed=7),
        echo=lines.append,
    )
    return out, result, lines


def test_counts_equal_manifest_truth_host_for_host(demo_run: tuple[Path, DemoResult, list[str]]) -> None:
    out, result, _ = demo_run
    report = result.report.to_dict()  # the JSON report, as report.json holds it
    manifests = sorted((out / "manifests").glob("*.json"))
    assert [m.stem for m in manifests] == [d.isoformat() for d in DAYS]
    db = sqlite3.connect(result.db_url.removeprefix("sqlite:///"))
    scans = db.execute("SELECT id, substr(started_at, 1, 10) FROM scans ORDER BY started_at").fetchall()
    assert [day for _, day in scans] == [d.isoformat() for d in DAYS]
    for (scan_id, _), path, snap in zip(scans, manifests, report["snapshots"], strict=True):
        servers = json.loads(path.read_text())["servers"]
        truth = {s["address"]: s["truth"]["proxylogon"] for s in servers}
        expected = Counter(v for v in truth.values() if v not in ("unreachable", "not_exchange"))
        counts = snap["waves"]["proxylogon"]
        for state in ("vulnerable", "patched", "mitigated", "unknown", "not_affected"):
            assert counts[state] == expected.get(state, 0), (path.stem, state)
        stored = dict(
            db.execute(
                "SELECT h.address, s.state FROM observation_states s JOIN hosts h ON h.id = s.host_id "
                "WHERE s.scan_id = ? AND s.wave = 'proxylogon'",
                (scan_id,),
            ).fetchall()
        )
        exchange = {a: v for a, v in truth.items() if v not in ("unreachable", "not_exchange")}
        assert stored == exchange
    # the simulated share follows the published curve within one server's rounding
    for snap, day in zip(report["snapshots"], DAYS, strict=True):
        classified = snap["waves"]["proxylogon"]["classified"]
        assert snap["waves"]["proxylogon"]["protected_share"] == pytest.approx(
            published_share(day), abs=1.5 / classified
        )


def test_hunts_and_outputs(demo_run: tuple[Path, DemoResult, list[str]]) -> None:
    out, result, lines = demo_run
    report = result.report.to_dict()  # the JSON report, as report.json holds it
    hunted = result.hunted
    flagged = {row["address"] for row in report["compromised_before_protected"]}
    manifest = json.loads(sorted((out / "manifests").glob("*.json"))[-1].read_text())
    address = {s["name"]: s["address"] for s in manifest["servers"]}
    assert flagged == {address[n] for n, kind in hunted.items() if kind == "compromised"}
    assert not flagged & {address[n] for n, kind in hunted.items() if kind == "clean"}
    assert any("SIMULATED" in line for line in lines)
    html = result.html.read_text()
    assert "SIMULATED DATA" in html and html.count("<svg") == 3
    assert json.loads(result.json.read_text())["headline"] == report["headline"]
    assert json.loads(result.stix.read_text())["type"] == "bundle"
