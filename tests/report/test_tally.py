"""The report's breakdowns read from the store's tally (exwatch.fleet.tally) equal the exact pass over
the fleet picture, through rescans, tag changes, hosts with two services, a deleted scan, a retired
host, a merge, stale hosts for several max ages, and an unfinished scan (where the tally is refused)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from exwatch.fleet import Store, open_store, tally
from exwatch.fleet import lifecycle as lc
from exwatch.fleet import queries as q
from exwatch.fleet import schema as t
from exwatch.report import ReportOptions, build_report

DAY0 = datetime(2021, 3, 2, tzinfo=UTC)
WAVES = ("proxylogon", "proxyshell")
AGES = (None, timedelta(days=30), timedelta(days=10), timedelta(days=3))
BUILDS = ("15.1.2176.2", "15.2.792.3", None)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.integration])]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tally.db'}"
        return
    base = request.getfixturevalue("pg_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def address(i: int) -> str:
    return f"127.61.{i // 200}.{i % 200 + 1}"


def record(i: int, day: int, *, port: int = 443, org: str | None = None) -> dict[str, Any]:
    """Host i on a day: its state moves with the day, its build and tags with i."""
    build = BUILDS[i % 3]
    state = ("vulnerable", "patched", "mitigated", "unknown")[(i + day) % 4]
    tags = {"country": ("NL", "BE", "DE")[i % 3], "organisation": org or f"org{i % 5}"}
    if i % 7 == 0:
        tags = {}  # untagged
    elif i % 4 == 0:
        tags["network"] = f"net{i % 2}"
    rec: dict[str, Any] = {
        "target": address(i),
        "key": f"{address(i)}:{port}",
        "address": address(i),
        "port": port,
        "status": "exchange" if build or i % 2 else "not_exchange",
        "build": build,
        "waves": {
            "proxylogon": {"state": state, "reason": "r", "fix": {"text": "KB5000871"}},
            "proxyshell": {"state": "not_affected" if i % 5 == 0 else "patched", "reason": "r", "fix": {}},
        },
        "fe_server": f"EXCH{i:03d}",
        "tags": tags,
        "time": (DAY0 + timedelta(days=day, seconds=i)).isoformat(),
    }
    return rec


def scan(store: Store, day: int, hosts: range | list[int], **extra: Any) -> int:
    sid = store.start_scan({"day": day}, started_at=DAY0 + timedelta(days=day))
    recs = [record(i, day, **extra) for i in hosts]
    # hosts divisible by 6 answer on a second port too (a refused port 80)
    recs += [
        dict(record(i, day), port=80, key=f"x{i}", status="refused", build=None, waves={})
        for i in hosts
        if i % 6 == 0
    ]
    store.add_observations(sid, recs)
    store.finish_scan(sid)
    return sid


def assert_tally_exact(store: Store, *, used: bool = True) -> None:
    """Every breakdown of every wave and max age: the tally's answer is the exact pass's."""
    with store.connect() as conn:
        answered = tally.read(conn, WAVES[0], tally.BREAKDOWNS, None) is not None
        # only the headline wave (the first with a classified host) is tallied
        assert tally.read(conn, WAVES[1], tally.BREAKDOWNS, None) is None
    assert answered is used
    for wave in WAVES:
        for age in AGES:
            fast = q.breakdowns(store, wave, tally.BREAKDOWNS, max_age=age)
            exact = q.breakdowns(store, wave, tally.BREAKDOWNS, max_age=age, tallied=False)
            assert fast == exact, (wave, age)
        assert q.breakdowns(store, wave, ["cu"], max_age=None)["cu"]


def test_tally_equals_the_exact_breakdowns(url: str) -> None:
    with open_store(url) as store:
        assert q.breakdowns(store, "proxylogon", ["cu"]) == {"cu": {}}
        first = scan(store, 0, range(60))
        assert_tally_exact(store)
        scan(store, 3, range(0, 60, 2))  # a rescan of half the fleet
        scan(store, 8, range(40, 90))  # a shard, with new hosts
        assert_tally_exact(store)
        # tags change in a rescan: organisation "moved" for hosts 40..49
        scan(store, 12, range(40, 50), org="moved")
        assert_tally_exact(store)
        # stale: hosts 1, 3, 5.. below 40 not re-seen since day 3 or 0; 30, 10 and 3 days tested
        scan(store, 20, range(50, 90))
        assert_tally_exact(store)
        # a scan out of time order (a rebuild), then deleted
        late = scan(store, 10, range(0, 20))
        assert_tally_exact(store)
        lc.delete_scan(store, late)
        assert_tally_exact(store)
        # a retired host leaves the picture; a merge
        lc.retire(store, address(42))
        assert_tally_exact(store)
        lc.merge(store, address(51), address(52))
        assert_tally_exact(store)
        # the first scan deleted: its hosts seen only then leave the store
        lc.delete_scan(store, first)
        assert_tally_exact(store)
        # a scan started, its tags written, not finished: the tally is refused, the exact pass used
        sid = store.start_scan({"day": 21}, started_at=DAY0 + timedelta(days=21))
        store.add_observations(sid, [record(i, 21, org="running") for i in range(50, 60)])
        assert_tally_exact(store, used=False)
        fast_report = build_report(store, ReportOptions(limit=5)).to_dict()
        store.finish_scan(sid)
        assert_tally_exact(store)
        assert fast_report["breakdown"] != build_report(store, ReportOptions(limit=5)).to_dict()["breakdown"]


def test_a_store_without_a_tally_gets_one_on_open(url: str) -> None:
    """A store from before revision 0008 (its tally empty) is counted on open; the report's figures
    are the same either way."""
    with open_store(url) as store:
        for day in (0, 4, 9):
            scan(store, day, range(day, 40 + day))
        before = build_report(store, ReportOptions(limit=5, by_build=True)).to_dict()
        with store.engine.begin() as conn:
            conn.execute(t.picture_tally.delete())
        assert_tally_exact(store, used=False)
    with open_store(url) as store:
        assert_tally_exact(store)
        with store.connect() as conn:
            assert conn.execute(select(t.picture_tally.c.n)).first() is not None
        after = build_report(store, ReportOptions(limit=5, by_build=True)).to_dict()
    for doc in (before, after):
        doc.pop("generated_at")
    assert after == before
    assert set(after["breakdown"]) == {"cu", "build", "tag:organisation", "tag:country", "tag:network"}


def test_a_tag_filter_and_other_keys_use_the_exact_pass(url: str) -> None:
    with open_store(url) as store:
        scan(store, 0, range(30))
        scan(store, 2, range(10, 40))
        with store.connect() as conn:
            assert tally.read(conn, "proxylogon", ["tag:other"], None) is None
        for tag in (("country", "NL"), ("organisation", "org1")):
            got = q.breakdowns(store, "proxylogon", tally.BREAKDOWNS, tag=tag)
            assert got == q.breakdowns(store, "proxylogon", tally.BREAKDOWNS, tag=tag, tallied=False)
            assert sum(c.hosts for c in got["cu"].values()) < sum(
                c.hosts for c in q.breakdowns(store, "proxylogon", ["cu"])["cu"].values()
            )


def test_a_tag_key_no_host_carries(url: str) -> None:
    """No host has a network tag (odd hosts only): the tally counts every host untagged there."""
    with open_store(url) as store:
        scan(store, 0, range(1, 40, 2))
        scan(store, 5, range(21, 60, 2))
        assert "network" not in q.tag_values(store)
        assert_tally_exact(store)
        got = q.breakdowns(store, "proxylogon", ["tag:network", "cu"], max_age=None)
        assert list(got["tag:network"]) == ["(untagged)"]
        assert got["tag:network"]["(untagged)"].hosts == sum(c.hosts for c in got["cu"].values())


def test_history_states_from_detail_bodies_equal_the_stored_folds(url: str) -> None:
    """One host's per-scan wave states in its history (read from the detail body when the host
    answered once in a scan) are the stored folds (observation_states) for every host and scan:
    two services, refused ports, a merge, a split-off address, a deleted scan."""
    from exwatch.fleet.queries import _host_states

    with open_store(url) as store:
        first = scan(store, 0, range(40))
        scan(store, 3, range(0, 40, 2))
        scan(store, 6, range(20, 60))
        lc.merge(store, address(21), address(22))
        lc.delete_scan(store, first)
        ids = [r.host_id for r in q.list_hosts(store, max_age=None)]
        assert len(ids) > 30
        several = 0
        for host_id in ids:
            history = q.host_history(store, f"#{host_id}")
            with store.connect() as conn:
                stored: dict[int, dict[str, str]] = {}
                for row in _host_states(conn, host_id):
                    stored.setdefault(row.scan_id, {})[row.wave] = row.state
            assert {s.scan: dict(s.waves) for s in history.snapshots if s.waves} == stored, host_id
            several += sum(1 for s in history.snapshots if len(s.services) > 1)
        assert several > 5  # scans where the host answered on two ports (read from the stored folds)


def test_tagged_series_equals_the_picture_at_each_scan(url: str) -> None:
    """The series for a tag (one pass over the tagged hosts' observations in time order) equals the
    picture computed from the observations at each scan, through rescans, two services, a retirement
    between scans, a merge, a deleted scan and a tag value that moved."""
    from exwatch.fleet.queries import _tagged_picture_counts, _tagged_series_rows

    with open_store(url) as store:
        first = scan(store, 0, range(50))
        scan(store, 3, range(0, 50, 2))
        scan(store, 6, range(30, 70), org="moved")
        lc.retire(store, address(34), at=DAY0 + timedelta(days=4))
        lc.retire(store, address(3), at=DAY0 + timedelta(days=1))
        scan(store, 9, range(60, 80))
        scan(store, 8, range(10, 20))  # out of time order
        lc.merge(store, address(12), address(13))
        lc.delete_scan(store, first)
        scan(store, 12, range(0, 80, 5))
        with store.connect() as conn:
            sc = t.scans
            when = {
                int(i): w
                for i, w in conn.execute(
                    select(sc.c.id, sc.c.started_at)
                    .where(sc.c.finished_at.is_not(None))
                    .order_by(sc.c.started_at)
                )
            }
            assert len(when) == 5
            for tag in (
                ("country", "NL"),
                ("organisation", "moved"),
                ("organisation", "org1"),
                ("network", "net0"),
            ):
                fast = sorted(_tagged_series_rows(conn, when, tag))
                exact = sorted(r for i, w in when.items() for r in _tagged_picture_counts(conn, i, w, tag))
                assert fast == exact, tag
                assert fast
            # a window of the series (the scans before it still count)
            later = dict(list(when.items())[2:])
            assert sorted(_tagged_series_rows(conn, later, ("country", "BE"))) == sorted(
                r for i, w in later.items() for r in _tagged_picture_counts(conn, i, w, ("country", "BE"))
            )
