"""A small hand-built store for the report tests: known snapshots, hunts and tags."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exwatch.fleet import Store, open_store

DAY0 = datetime(2021, 3, 8, tzinfo=UTC)


def record(host: int, state: str, build: str = "15.1.2176.2") -> dict[str, object]:
    return {
        "target": f"127.40.2.{host}",
        "key": f"127.40.2.{host}",
        "address": f"127.40.2.{host}",
        "status": "exchange",
        "build": build,
        "fe_server": f"EXCH{host:02d}",
        "waves": {"proxylogon": {"state": state, "reason": "by build", "fix": {"text": "install KB5000871"}}},
        "tags": {"country": "NL" if host % 2 else "BE"},
    }


def fill(store: Store) -> None:
    """Day 0: 6 of 10 vulnerable; day 7: 3 vulnerable; day 14: 1 vulnerable; hunts on two hosts."""
    plan = {
        0: {h: ("vulnerable" if h <= 6 else "patched") for h in range(1, 11)},
        7: {h: ("vulnerable" if h <= 3 else "mitigated" if h <= 5 else "patched") for h in range(1, 11)},
        14: {h: ("vulnerable" if h == 1 else "unknown" if h == 2 else "patched") for h in range(1, 11)},
    }
    for day, states in plan.items():
        sid = store.start_scan({"day": day}, started_at=DAY0 + timedelta(days=day))
        store.add_observations(sid, [record(h, s) for h, s in states.items()])
        store.finish_scan(sid)
    base = DAY0 + timedelta(days=1)
    findings = []
    # attempts doubling every hour over 6 hours on host 3 (compromised before its patch on day 14)
    for hour in range(6):
        for i in range(2**hour):
            findings.append(
                {
                    "rule": "proxylogon.ssrf_cookie",
                    "wave": "proxylogon",
                    "cve": "CVE-2021-26855",
                    "confidence": "confirmed",
                    "time": (base + timedelta(hours=hour, seconds=i)).isoformat(),
                    "title": "ProxyLogon SSRF cookie",
                    "description": "X-AnonResource-Backend cookie in HttpProxy log",
                    "host": "EXCH03",
                    "evidence": {
                        "file": "HttpProxy/Ecp/x.log",
                        "line": 10 + i,
                        "offset": 0,
                        "excerpt": "X-AnonResource-Backend=localhost~1942062522",
                        "sha256": "ab" * 32,
                    },
                }
            )
    store.add_hunt("EXCH03", verdict="compromised", coverage={"httpproxy": True}, findings=findings)
    # host 8 was patched before the evidence: not compromised before protected
    late = dict(findings[0], time=(DAY0 + timedelta(days=20)).isoformat(), host="EXCH08")
    store.add_hunt("EXCH08", verdict="compromised", coverage={}, findings=[late])


@pytest.fixture
def report_db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    with open_store(url) as store:
        fill(store)
    yield url
