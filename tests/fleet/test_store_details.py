"""Detail bodies are stored once per distinct text, across batches and across store instances."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from exwatch.fleet import open_store
from exwatch.fleet import schema as t
from exwatch.fleet.store import Store
from exwatch.fleet.timeutil import from_db


def _record(address: str, state: str) -> dict[str, Any]:
    return {
        "target": address,
        "key": address,
        "address": address,
        "port": 443,
        "status": "exchange",
        "build": "15.1.2176.9",
        "waves": {"proxylogon": {"state": state, "reason": "build", "fix": {"text": "é update"}}},
        "probes": {"proxylogon": state},
        "time": "2021-03-02T10:00:00+00:00",
    }


def _details(store: Store) -> dict[int, str]:
    with store.connect() as conn:
        return {row.id: row.body for row in conn.execute(select(t.details.c.id, t.details.c.body))}


def _detail_ids(store: Store, scan_id: int) -> dict[str, int]:
    o = t.observations
    with store.connect() as conn:
        rows = conn.execute(select(o.c.key, o.c.detail_id).where(o.c.scan_id == scan_id))
        return {row.key: row.detail_id for row in rows}


def test_bodies_are_deduplicated_within_and_across_stores(store: Store, store_url: str) -> None:
    scan = store.start_scan({}, started_at=datetime(2021, 3, 2, tzinfo=UTC))
    store.add_observations(scan, [_record("10.0.0.1", "vulnerable"), _record("10.0.0.2", "patched")])
    store.add_observations(scan, [_record("10.0.0.3", "vulnerable"), _record("10.0.0.4", "vulnerable")])
    assert gc.isenabled()
    with store.connect() as conn:
        seen = conn.execute(select(t.hosts.c.first_seen).where(t.hosts.c.address == "10.0.0.1")).scalar()
    assert from_db(seen) == datetime(2021, 3, 2, 10, tzinfo=UTC)
    ids = _detail_ids(store, scan)
    assert ids["10.0.0.1"] == ids["10.0.0.3"] == ids["10.0.0.4"] != ids["10.0.0.2"]
    bodies = _details(store)
    assert len(bodies) == 2
    assert json.loads(bodies[ids["10.0.0.2"]]) == {
        "probes": {"proxylogon": "patched"},
        "waves": {"proxylogon": {"state": "patched", "reason": "build", "fix": {"text": "é update"}}},
    }
    # A second store instance (empty caches) finds the stored body by its digest.
    with open_store(store_url) as other:
        scan2 = other.start_scan({}, started_at=datetime(2021, 3, 3, tzinfo=UTC))
        other.add_observations(scan2, [_record("10.0.0.5", "patched"), _record("10.0.0.6", "mitigated")])
        ids2 = _detail_ids(other, scan2)
        assert ids2["10.0.0.5"] == ids["10.0.0.2"]
        assert len(_details(other)) == 3
        assert ids2["10.0.0.6"] not in ids.values()
