"""A scan's folds do not depend on how its records are cut into add_observations batches.

One-service hosts are folded in SQL from their stored row, others in Python (exwatch.fleet.hostfold);
a host whose services arrive in different batches goes from the first path to the second.  Whatever
the cut, scan_hosts and observation_states must be those of the whole scan in one batch.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from exwatch.fleet import open_store
from exwatch.fleet import schema as t

T0 = datetime(2021, 3, 2, 9, tzinfo=UTC)
BUILDS = ("15.1.2176.2", "15.1.2176.9", "15.2.792.3")
STATES = ("vulnerable", "patched", "mitigated", "unknown")


def _records(seed: int) -> list[dict[str, Any]]:
    """Services of 40 hosts: one to three ports each, Exchange answers (exact build or CU only) that
    may disagree, refused and non-Exchange ports, times that decide between equal ranks."""
    rng = random.Random(seed)
    out = []
    for host in range(1, 41):
        address = f"192.0.2.{host}"
        for port in rng.sample([443, 80, 8443], rng.randint(1, 3)):
            status = rng.choice(("exchange", "exchange", "refused", "not_exchange"))
            rec: dict[str, Any] = {
                "address": address,
                "key": f"{address}:{port}",
                "port": port,
                "status": status,
                # scanner-shaped times, some with microseconds and some without
                "time": (
                    T0 + timedelta(seconds=rng.randint(0, 3), microseconds=rng.choice((0, 250_000)))
                ).isoformat(),
            }
            if status == "exchange":
                rec["build"] = rng.choice(BUILDS)
                rec["cu_only"] = rng.random() < 0.2
                rec["waves"] = {
                    "proxylogon": {"state": rng.choice(STATES), "reason": "r"},
                    "proxyshell": rng.choice(STATES),
                }
            out.append(rec)
    rng.shuffle(out)
    return out


@contextlib.contextmanager
def _fresh_pg(base: str) -> Iterator[str]:
    """Another empty database on the test server, dropped afterwards."""
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


def _folds(url: str, batches: list[list[dict[str, Any]]]) -> tuple[set[Any], set[Any]]:
    with open_store(url) as store:
        # the hosts first (one Exchange answer each), so that every batch cut meets known hosts
        first = store.start_scan({"targets": []}, started_at=T0 - timedelta(days=1))
        store.add_observations(
            first,
            [
                {"address": f"192.0.2.{h}", "port": 443, "status": "exchange", "build": BUILDS[0]}
                for h in range(1, 41)
            ],
        )
        store.finish_scan(first)
        scan = store.start_scan({"targets": []}, started_at=T0)
        for batch in batches:
            store.add_observations(scan, batch)
        store.finish_scan(scan)
        sh, s, h = t.scan_hosts, t.observation_states, t.hosts
        with store.connect() as conn:
            hosts = set(
                conn.execute(
                    select(h.c.address, sh.c.status, sh.c.rank, sh.c.port, sh.c.build, sh.c.conflict)
                    .join(h, h.c.id == sh.c.host_id)
                    .where(sh.c.scan_id == scan)
                ).all()
            )
            states = set(
                conn.execute(
                    select(h.c.address, s.c.wave, s.c.state, s.c.cu)
                    .join(h, h.c.id == s.c.host_id)
                    .where(s.c.scan_id == scan)
                ).all()
            )
    return hosts, states


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folds_do_not_depend_on_batches(
    store_url: str, tmp_path: Path, request: pytest.FixtureRequest, seed: int
) -> None:
    records = _records(seed)
    whole = _folds(store_url, [records])
    assert len(whole[0]) == 40
    for size in (1, 3):
        cut = [records[i : i + size] for i in range(0, len(records), size)]
        if store_url.startswith("postgresql"):
            with _fresh_pg(request.getfixturevalue("pg_url")) as url:
                assert _folds(url, cut) == whole, f"batches of {size}"
        else:
            assert _folds(f"sqlite:///{tmp_path}/cut{size}.db", cut) == whole, f"batches of {size}"
