"""The store contract on SQLite and PostgreSQL: scans, resume keys, host identity, hunts, tags."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from exwatch.errors import ConfigError, InputError
from exwatch.fleet import Store, open_store
from exwatch.fleet import schema as t

T0 = datetime(2021, 3, 10, tzinfo=UTC)


def obs(key: str, address: str, state: str = "vulnerable", **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "target": key,
        "key": key,
        "address": address,
        "port": 443,
        "status": "exchange",
        "build": "15.1.2176.9",
        "build_source": "x-owa-version",
        "cu_only": False,
        "waves": {"proxylogon": {"state": state, "reason": "r", "fix": {"text": "install SU"}}},
    }
    record.update(extra)
    return record


def test_scan_lifecycle(store: Store) -> None:
    assert store.latest_scan_id() is None
    scan = store.start_scan({"targets": ["127.40.0.1"]}, started_at=T0)
    store.add_observations(scan, [obs("a", "127.40.0.1"), obs("b", "127.40.0.2", "patched")])
    store.add_observations(
        scan, [{"target": "c", "key": "c", "address": "127.40.0.3", "status": "unreachable"}]
    )
    assert store.scan_done_keys(scan) == {"a", "b", "c"}
    assert store.scan_params(scan) == {"targets": ["127.40.0.1"]}
    assert store.latest_scan_id() == scan
    store.finish_scan(scan)
    with store.connect() as conn:
        rows = conn.execute(select(t.scan_summary.c.wave, t.scan_summary.c.state, t.scan_summary.c.n)).all()
        hosts = conn.execute(select(t.hosts.c.id)).all()
    assert sorted(rows) == [
        ("*", "exchange", 2),
        ("*", "unreachable", 1),
        ("proxylogon", "patched", 1),
        ("proxylogon", "vulnerable", 1),
    ]
    assert len(hosts) == 2  # an unreachable address is not a server


def test_unknown_scan_is_input_error(store: Store) -> None:
    with pytest.raises(InputError):
        store.scan_params(99)


def test_host_identity_across_scans(store: Store) -> None:
    s1 = store.start_scan({}, started_at=T0)
    store.add_observations(
        s1,
        [
            obs("a", "127.40.0.1", fe_server="EXCH01", cert_names=["mail.a.example"]),
            obs("b", "127.40.0.2", fe_server="EXCH01", cert_names=["mail.b.example"]),
            obs("n", "127.40.0.9", name="owa.n.example"),
        ],
    )
    store.finish_scan(s1)
    s2 = store.start_scan({}, started_at=T0.replace(day=11))
    store.add_observations(
        s2,
        [
            # a moved to a new address: same X-FEServer and certificate
            obs("a", "127.40.0.5", fe_server="EXCH01", cert_names=["mail.a.example"]),
            # b's address now answers with another server entirely
            obs("b", "127.40.0.2", fe_server="EXCH07", cert_names=["mail.z.example"]),
            # n changed address, same DNS name
            obs("n", "127.40.0.10", name="owa.n.example"),
        ],
    )
    store.finish_scan(s2)
    with store.connect() as conn:
        rows = conn.execute(
            select(t.observations.c.scan_id, t.observations.c.key, t.observations.c.host_id)
        ).all()
    by = {(r.scan_id, r.key): r.host_id for r in rows}
    assert by[(s1, "a")] == by[(s2, "a")]
    assert by[(s1, "n")] == by[(s2, "n")]
    assert by[(s1, "b")] != by[(s2, "b")]
    assert len({*by.values()}) == 4
    # the moved host is found by its new address
    assert store.find_hosts("127.40.0.5") == [by[(s1, "a")]]


def test_duplicate_host_in_one_scan_counts_once(store: Store) -> None:
    scan = store.start_scan({}, started_at=T0)
    store.add_observations(scan, [obs("x", "127.40.0.1", name="mail.x.example")])
    store.add_observations(scan, [obs("mail.x.example", "127.40.0.1", "patched", name="mail.x.example")])
    store.finish_scan(scan)
    with store.connect() as conn:
        rows = conn.execute(
            select(t.scan_summary.c.state, t.scan_summary.c.n).where(t.scan_summary.c.wave == "proxylogon")
        ).all()
    assert rows == [("vulnerable", 1)]


def test_tags_from_records_and_command(store: Store) -> None:
    scan = store.start_scan({}, started_at=T0)
    store.add_observations(scan, [obs("a", "127.40.0.1", tags={"organisation": "Acme", "country": "NL"})])
    store.finish_scan(scan)
    host = store.tag_host("127.40.0.1", "country", "BE")
    with store.connect() as conn:
        rows = dict(conn.execute(select(t.tags.c.key, t.tags.c.value).where(t.tags.c.host_id == host)).all())
    assert rows == {"organisation": "Acme", "country": "BE"}
    with pytest.raises(InputError):
        store.tag_host("127.40.9.9", "country", "NL")


def test_hunt_links_to_host(store: Store) -> None:
    scan = store.start_scan({}, started_at=T0)
    store.add_observations(scan, [obs("a", "127.40.0.1", fe_server="EXCH01")])
    store.finish_scan(scan)
    finding = {
        "rule": "proxylogon.ssrf_cookie",
        "wave": "proxylogon",
        "cve": "CVE-2021-26855",
        "confidence": "confirmed",
        "time": "2021-03-03T04:05:06Z",
        "title": "t",
        "description": "d",
        "host": "EXCH01",
        "evidence": {"file": "x.log", "line": 3},
    }
    hunt = store.add_hunt("exch01", verdict="compromised", coverage={"iis": True}, findings=[finding])
    with store.connect() as conn:
        row = conn.execute(select(t.findings.c.host_id, t.findings.c.time, t.findings.c.rule)).one()
        hunt_host = conn.execute(select(t.hunts.c.host_id).where(t.hunts.c.id == hunt)).scalar()
    assert row.rule == "proxylogon.ssrf_cookie"
    assert row.host_id == hunt_host == store.find_hosts("127.40.0.1")[0]
    assert row.time == datetime(2021, 3, 3, 4, 5, 6)


def test_reopen_keeps_data(store_url: str) -> None:
    with open_store(store_url) as first:
        scan = first.start_scan({"x": 1})
    with open_store(store_url) as second:
        assert second.latest_scan_id() == scan


def test_password_masked_in_repr() -> None:
    with pytest.raises(ConfigError) as info:
        open_store("mysql://admin:s3cret@127.0.0.1/x")
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


def test_bad_url_is_config_error() -> None:
    with pytest.raises(ConfigError):
        open_store("not a url")


def test_missing_postgres_extra_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="postgres"):
        open_store("postgresql://exwatch:pw@127.0.0.1/exwatch")


def test_unreachable_postgres_masks_password() -> None:
    from exwatch.errors import StoreError

    with pytest.raises(StoreError) as info:
        open_store("postgresql://exwatch:s3cret@127.0.0.1:1/exwatch")
    assert "s3cret" not in str(info.value) and "127.0.0.1" in str(info.value)
    with pytest.raises(ConfigError):  # not a database this store knows
        open_store("mongodb://127.0.0.1/x")


def test_store_repr_masks_password(tmp_path: Path) -> None:
    store = Store.__new__(Store)
    store.url = "postgresql://exwatch:s3cret@127.0.0.1/exwatch"
    assert "s3cret" not in repr(store) and "***" in repr(store)
