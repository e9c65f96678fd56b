"""Property: any split of a fleet's service observations into partial scans gives the same fleet picture
as one full scan, and that picture is the fold of every host's services (exwatch.scan.fold).

Records go to the store directly (no sockets).  Each host has at least one Exchange service (a host is
only known from an Exchange answer); its other services may be refused or plain web servers, and its
Exchange answers may disagree on the build (conflict) or on a wave's state.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from exwatch.fleet import Store, open_store, picture
from exwatch.fleet import queries as q
from exwatch.fleet import schema as t
from exwatch.scan.fold import fold_services

T0 = datetime(2021, 3, 9, 12, tzinfo=UTC)
WAVES = ("proxylogon", "proxyshell")
STATES = ("vulnerable", "patched", "mitigated", "unknown", "not_affected")
BUILDS = ("15.1.2176.2", "15.1.2176.9", "15.2.792.3")
PORTS = (443, 80, 8443)

service = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(("exact", "cu", "not_exchange", "unreachable")),
        "build": st.sampled_from(BUILDS),
        "states": st.tuples(*(st.sampled_from(STATES) for _ in WAVES)),
    }
)


@st.composite
def fleets(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Per host, its service records (ports distinct, at least one Exchange answer)."""
    hosts = []
    for h in range(draw(st.integers(1, 6))):
        ports = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True))
        services = [draw(service) for _ in ports]
        if not any(s["kind"] in ("exact", "cu") for s in services):
            services[0]["kind"] = "exact"
        records = []
        for port, svc in zip(ports, services, strict=True):
            address = f"127.74.0.{h + 1}"
            rec: dict[str, Any] = {
                "target": address,
                "key": f"{address}:{port}",
                "address": address,
                "port": port,
            }
            if svc["kind"] in ("exact", "cu"):
                build = svc["build"] if svc["kind"] == "exact" else ".".join(svc["build"].split(".")[:3])
                rec.update(
                    status="exchange",
                    build=build,
                    cu_only=svc["kind"] == "cu",
                    fe_server=f"EXCH{h:02d}",
                    waves={w: {"state": s} for w, s in zip(WAVES, svc["states"], strict=True)},
                )
            else:
                rec.update(status=svc["kind"], error=None if svc["kind"] == "not_exchange" else "refused")
            records.append(rec)
        hosts.append(records)
    return hosts


def scan(store: Store, when: datetime, records: list[dict[str, Any]]) -> None:
    sid = store.start_scan({"targets": sorted({r["address"] for r in records})}, started_at=when)
    stamped = [dict(r, time=when.isoformat()) for r in records]
    store.add_observations(sid, stamped)
    store.finish_scan(sid)


def current(store: Store) -> dict[str, tuple[str, bool, dict[str, str]]]:
    """address -> (status, conflict, per-wave states) of the current fleet picture."""
    h, hc, hs = t.hosts, t.host_current, t.host_states
    with store.connect() as conn:
        rows = conn.execute(
            select(h.c.address, hc.c.host_id, hc.c.status, hc.c.conflict).join(hc, hc.c.host_id == h.c.id)
        ).all()
        states: dict[int, dict[str, str]] = {}
        for host_id, wave, state in conn.execute(select(hs.c.host_id, hs.c.wave, hs.c.state)):
            states.setdefault(host_id, {})[wave] = state
    return {r.address: (r.status, bool(r.conflict), states.get(r.host_id, {})) for r in rows}


def oracle(fleet: list[list[dict[str, Any]]]) -> dict[str, tuple[str, bool, dict[str, str]]]:
    out = {}
    for records in fleet:
        host = fold_services(records)
        states = (
            {w: v["state"] for w, v in (host.get("waves") or {}).items()}
            if host["status"] == "exchange"
            else {}
        )
        out[records[0]["address"]] = (host["status"], bool(host["conflict"]), states)
    return out


def counts(store: Store) -> dict[str, dict[str, int]]:
    latest = q.fleet_series(store)[-1]
    return {w: {s: getattr(c, s) for s in STATES} for w, c in latest.waves.items()}


@settings(max_examples=30)
@given(fleet=fleets(), data=st.data())
def test_any_split_gives_the_full_scan_picture(
    fleet: list[list[dict[str, Any]]], data: st.DataObject
) -> None:
    records = [r for host in fleet for r in host]
    parts = data.draw(st.integers(1, 4), label="scans")
    assign = data.draw(st.lists(st.integers(0, parts - 1), min_size=len(records), max_size=len(records)))
    want = oracle(fleet)
    with tempfile.TemporaryDirectory() as tmp:
        with open_store(f"sqlite:///{Path(tmp) / 'full.db'}") as full:
            scan(full, T0, records)
            assert current(full) == want
            full_counts = counts(full)
        with open_store(f"sqlite:///{Path(tmp) / 'split.db'}") as split:
            # the partial scans in time order, an hour apart (an empty part is simply not run)
            for i in range(parts):
                part = [r for r, a in zip(records, assign, strict=True) if a == i]
                if part:
                    scan(split, T0 + timedelta(hours=i), part)
            assert current(split) == want
            assert counts(split) == full_counts
            # the incremental picture equals one rebuilt from the observations
            with split.engine.begin() as conn:
                before = sorted(conn.execute(select(t.picture_summary)).all())
                picture.rebuild(conn)
                after = sorted(conn.execute(select(t.picture_summary)).all())
            assert before == after
            assert current(split) == want
    expected = Counter(s for _, _, states in want.values() for s in states.values())
    assert sum(sum(c.values()) for c in full_counts.values()) == sum(expected.values())
