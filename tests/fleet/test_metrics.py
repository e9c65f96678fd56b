"""Metrics with known answers: pure formulas, and the same figures computed in SQL on hand-built snapshots."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from exwatch.errors import InputError
from exwatch.fleet import Store
from exwatch.fleet import queries as q
from exwatch.fleet import schema as t
from exwatch.fleet.metrics import WaveCounts, change, fit_doubling, nearest_earlier, t_quantile
from exwatch.fleet.store import rebuild_exposure

DAY0 = datetime(2021, 3, 10, tzinfo=UTC)


def test_share_and_bounds() -> None:
    c = WaveCounts(hosts=100, vulnerable=10, patched=60, mitigated=10, unknown=10, not_affected=10)
    assert c.classified == 80
    assert c.protected_share == pytest.approx(70 / 80)
    assert c.protected_bounds == pytest.approx((70 / 90, 80 / 90))
    low, high = c.protected_bounds or (0, 0)
    assert low <= (c.protected_share or 0) <= high
    assert WaveCounts().protected_share is None and WaveCounts().protected_bounds is None


def test_change_three_readings() -> None:
    # Microsoft's 2021-03-22 figures: V 32,000 now of 400,000, 56,140 a week earlier.
    before = WaveCounts(hosts=400_000, vulnerable=56_140, patched=343_860)
    now = WaveCounts(hosts=400_000, vulnerable=32_000, patched=368_000)
    c = change(now, before)
    assert c.unprotected_rel_change == pytest.approx(-0.43, abs=1e-4)
    assert c.delta_pp == pytest.approx((0.92 - 343_860 / 400_000) * 100)
    assert c.protected_share_rel_change == pytest.approx(0.92 / (343_860 / 400_000) - 1)
    assert c.universe_change == 0


def test_nearest_to_seven_days() -> None:
    at = DAY0 + timedelta(days=12)
    # the target is day 5: day 7 is 2 days off, day 1 is 4 days off
    assert nearest_earlier([DAY0 + timedelta(days=d) for d in (0, 1, 7, 12)], at) == 2
    times = [DAY0 + timedelta(days=d) for d in (0, 4, 6, 12)]
    assert (
        nearest_earlier(times, at) == 1
    )  # day 4 and day 6 are both 1 day off day 5: tie goes to the earlier
    times = [DAY0 + timedelta(days=d) for d in (11, 12)]
    assert nearest_earlier(times, at) is None  # one day back is not a week
    assert nearest_earlier([DAY0 + timedelta(days=d) for d in (5, 6)], at) == 0


def test_t_quantiles() -> None:
    # Standard table values of Student's t, 0.975 quantile.
    for df, value in [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423)]:
        assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-3)


def test_doubling_time_on_synthetic_exponential() -> None:
    rng = np.random.default_rng(7)
    hours = np.arange(24.0)
    true_doubling = 2.5
    expected = 20 * 2 ** (hours / true_doubling)
    counts = rng.poisson(expected)
    fit = fit_doubling(hours.tolist(), counts.tolist())
    assert fit.doubling_hours == pytest.approx(true_doubling, rel=0.05)
    low, high = fit.doubling_ci
    assert low is not None and high is not None and low < true_doubling < high
    assert fit.rate_per_hour == pytest.approx(math.log(2) / true_doubling, rel=0.05)
    exact = fit_doubling([0, 1, 2, 3], [1, 2, 4, 8])
    assert exact.doubling_hours == pytest.approx(1.0)
    with pytest.raises(InputError):
        fit_doubling([0, 1], [1, 2])


def rec(host: int, state: str, *, build: str = "15.1.2176.9", tags: dict[str, str] | None = None) -> dict:
    return {
        "target": f"127.40.1.{host}",
        "key": f"127.40.1.{host}",
        "address": f"127.40.1.{host}",
        "status": "exchange",
        "build": build,
        "waves": {"proxylogon": {"state": state, "reason": "r", "fix": {"text": f"fix-{build}"}}},
        "tags": tags or {},
    }


def scan(store: Store, day: float, states: dict[int, str], **kw: object) -> int:
    sid = store.start_scan({"day": day}, started_at=DAY0 + timedelta(days=day))
    store.add_observations(sid, [rec(h, s, **kw) for h, s in states.items()])  # type: ignore[arg-type]
    store.finish_scan(sid)
    return sid


def build_fleet(store: Store) -> list[int]:
    """Ten hosts over four snapshots (day 0, 6, 8, 13) with known counts."""
    day0 = {
        1: "vulnerable",
        2: "vulnerable",
        3: "vulnerable",
        4: "vulnerable",
        5: "patched",
        6: "patched",
        7: "unknown",
        8: "not_affected",
        9: "vulnerable",
        10: "mitigated",
    }
    day6 = {**day0, 1: "patched", 2: "mitigated"}
    day8 = {**day6, 3: "patched"}
    day13 = {**day8, 4: "patched", 7: "patched"}
    return [scan(store, d, s) for d, s in ((0, day0), (6, day6), (8, day8), (13, day13))]


def test_snapshot_counts_and_change(store: Store) -> None:
    ids = build_fleet(store)
    snaps = q.snapshots(store)
    assert [s.scan_id for s in snaps] == ids
    first, last = snaps[0].waves["proxylogon"], snaps[-1].waves["proxylogon"]
    assert (first.vulnerable, first.patched, first.mitigated, first.unknown, first.not_affected) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert first.protected_share == pytest.approx(3 / 8)
    assert first.protected_bounds == pytest.approx((3 / 9, 4 / 9))
    assert (last.vulnerable, last.patched, last.mitigated, last.unknown) == (1, 6, 2, 0)
    assert last.protected_share == pytest.approx(8 / 9)
    assert snaps[0].statuses == {"exchange": 10}
    # the snapshot nearest to day 13 - 7 = day 6 is day 6 (day 8 is 2 days off)
    idx = nearest_earlier([s.time for s in snaps], snaps[-1].time)
    assert idx is not None and snaps[idx].scan_id == ids[1]
    c = change(last, snaps[idx].waves["proxylogon"])
    assert c.vulnerable_before == 3 and c.vulnerable_now == 1
    assert c.unprotected_rel_change == pytest.approx(-2 / 3)
    assert c.delta_pp == pytest.approx((8 / 9 - 5 / 8) * 100)


def test_exposure_windows_incremental_equals_rebuild(store: Store) -> None:
    build_fleet(store)
    windows = {w.host_id: w for w in q.exposure_windows(store, wave="proxylogon")}
    hosts = {h: store.find_hosts(f"127.40.1.{h}")[0] for h in range(1, 11)}
    assert set(windows) == {hosts[h] for h in (1, 2, 3, 4, 9)}
    assert windows[hosts[1]].days == pytest.approx(6)
    assert windows[hosts[3]].days == pytest.approx(8)
    assert windows[hosts[4]].days == pytest.approx(13)
    assert windows[hosts[9]].first_protected is None
    with store.engine.begin() as conn:
        before = sorted(conn.execute(select(t.host_exposure)).all())
        rebuild_exposure(conn)
        after = sorted(conn.execute(select(t.host_exposure)).all())
    assert before == after


def test_out_of_order_snapshot_rebuilds(store: Store) -> None:
    scan(store, 5, {1: "patched"})
    scan(store, 0, {1: "vulnerable"})  # finished later, but earlier in time
    (window,) = q.exposure_windows(store)
    assert window.days == pytest.approx(5)


def test_hosts_at_risk_worst_first(store: Store) -> None:
    build_fleet(store)
    scan(store, 14, {11: "vulnerable", 9: "vulnerable"}, build="15.2.858.5")
    at_risk = q.hosts_at_risk(store)
    assert [r.address for r in at_risk] == ["127.40.1.9", "127.40.1.11"]
    assert at_risk[0].exposed_days == pytest.approx(14)
    assert at_risk[0].fix == "fix-15.2.858.5"


def test_compromised_before_protected(store: Store) -> None:
    build_fleet(store)

    def hunt(host: int, when: datetime, confidence: str = "confirmed") -> None:
        store.add_hunt(
            f"127.40.1.{host}",
            verdict="compromised",
            coverage={},
            findings=[
                {
                    "rule": "proxylogon.ssrf_cookie",
                    "wave": "proxylogon",
                    "confidence": confidence,
                    "time": when.isoformat(),
                    "host": f"127.40.1.{host}",
                }
            ],
        )

    hunt(1, DAY0 + timedelta(days=2))  # before its patch on day 6: flagged
    hunt(3, DAY0 + timedelta(days=9))  # after its patch on day 8: not flagged
    hunt(9, DAY0 + timedelta(days=1))  # never protected: flagged
    hunt(5, DAY0 - timedelta(days=3))  # patched when first seen (day 0), compromised before: flagged
    hunt(6, DAY0 + timedelta(days=1), "review")  # weak evidence does not count
    rows = {r.address: r for r in q.compromise(store)}
    assert set(rows) == {"127.40.1.1", "127.40.1.3", "127.40.1.9", "127.40.1.5"}
    flagged = sorted(a for a, r in rows.items() if r.compromised_before_protected)
    assert flagged == ["127.40.1.1", "127.40.1.5", "127.40.1.9"]
    assert rows["127.40.1.1"].protected_at == DAY0 + timedelta(days=6)
    assert rows["127.40.1.9"].protected_at is None


def test_tag_filter_and_breakdowns(store: Store) -> None:
    sid = scan(store, 0, {1: "vulnerable", 2: "patched"}, tags={"country": "NL"})
    store.add_observations(sid, [])
    sid2 = scan(
        store, 1, {3: "vulnerable", 4: "vulnerable", 5: "patched"}, build="15.2.858.5", tags={"country": "BE"}
    )
    nl = q.snapshots(store, tag=("country", "NL"))
    assert [s.waves.get("proxylogon", WaveCounts()).vulnerable for s in nl] == [1, 0]
    assert nl[0].statuses == {"exchange": 2}
    del sid2
    # breakdowns are of the fleet picture: the NL hosts of the first scan are still in the fleet
    by_cu = q.breakdown(store, "proxylogon", by="cu")
    assert by_cu["15.2.858"].vulnerable == 2 and by_cu["15.2.858"].patched == 1
    by_country = q.breakdown(store, "proxylogon", by="tag:country")
    assert set(by_country) == {"BE", "NL"} and by_country["BE"].classified == 3
    assert by_country["NL"].classified == 2
    with pytest.raises(InputError):
        q.parse_tag("country")


def test_attempts_per_hour(store: Store) -> None:
    scan(store, 0, {1: "vulnerable", 2: "vulnerable"})
    base = DAY0.replace(hour=4)
    findings = [
        {
            "rule": "r",
            "wave": "proxylogon",
            "confidence": "likely",
            "time": (base + timedelta(minutes=m)).isoformat(),
        }
        for m in (0, 10, 70, 75, 80, 200)
    ]
    store.add_hunt("127.40.1.1", verdict="attempted", coverage={}, findings=findings[:3])
    store.add_hunt("127.40.1.2", verdict="attempted", coverage={}, findings=findings[3:])
    rows = q.attempts_per_hour(store)
    assert [(h.hour, n) for h, n in rows] == [(4, 2), (5, 3), (7, 1)]


def test_host_history(store: Store) -> None:
    build_fleet(store)
    store.tag_host("127.40.1.1", "organisation", "Acme")
    history = q.host_history(store, "127.40.1.1")
    assert [s.waves["proxylogon"] for s in history.snapshots] == [
        "vulnerable",
        "patched",
        "patched",
        "patched",
    ]
    assert history.tags == {"organisation": "Acme"}
    assert history.exposure[0].days == pytest.approx(6)
    with pytest.raises(InputError):
        q.host_history(store, "127.40.9.9")


def test_numpy_is_loaded_only_for_a_fit(tmp_path: Path) -> None:
    """A scan's start (opening the store) never imports NumPy (0.1 s of every command); a fit does."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom exwatch.fleet import open_store\nfrom exwatch.fleet import metrics\n"
        "with open_store(sys.argv[1]) as s:\n    s.start_scan({})\n"
        "before = 'numpy' in sys.modules\n"
        "metrics.fit_doubling([0, 1, 2, 3], [1, 2, 4, 8])\n"
        "print(before, 'numpy' in sys.modules)\n"
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
