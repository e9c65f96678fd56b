"""A lab fleet whose servers appear, change state and disappear between rounds: one alert per change,
on every sink (webhook, syslog UDP and TCP, JSONL file), the webhook's missed round delivered later."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import HTTPS_PORT, LabServers, Syslog, Webhook, wait_for  # noqa: E402
from exwatch.fleet import open_store  # noqa: E402
from exwatch.scan.engine import ScanOptions  # noqa: E402
from exwatch.scan.targets import parse_ports  # noqa: E402
from exwatch.watch.runner import WatchConfig, Watcher  # noqa: E402

pytestmark = pytest.mark.integration

A, B = "127.78.0.1", "127.78.0.2"
OPEN = "15.1.2176.2"  # Exchange 2016 CU19 before the March 2021 SU: ProxyLogon vulnerable (kb)


def key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["kind"], e["host"], e["wave"], e["previous"], e["state"])


def config(tmp_path: Path, sinks: tuple[str, ...]) -> WatchConfig:
    options = ScanOptions(ports=parse_ports(f"{HTTPS_PORT}/https"), probe=True, timeout=2.0, host_budget=10.0)
    return WatchConfig(
        targets=[A, B],
        options=options,
        store_url=f"sqlite:///{tmp_path / 'store.db'}",
        every=1.0,
        waves=("proxylogon",),
        sinks=sinks,
        spool_dir=tmp_path / "spool",
        retries=1,
        backoff=0.05,
    )


def test_each_change_gives_one_alert_on_every_sink(
    tmp_path: Path, lab: LabServers, webhook: Webhook, syslog_udp: Syslog, syslog_tcp: Syslog
) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    sinks = (webhook.url, syslog_udp.url, syslog_tcp.url, f"file://{jsonl}")
    cfg = config(tmp_path, sinks)
    lab.add("a", A, OPEN)
    lab.add("b", B, OPEN)
    lab.start("a")
    expected: list[tuple[Any, ...]] = []
    watcher = Watcher(cfg)
    watcher.open()
    try:
        # Round 1: A vulnerable, B not there yet.
        r = watcher.run_round()
        expected += [("exposed", A, "proxylogon", None, "vulnerable")]
        assert [key(a.to_dict()) for a in r.alerts] == expected[-1:]
        # Round 2: B appears (a host not reachable before), A gets the ProxyLogon rules; the webhook is down.
        lab.start("b")
        lab.update("a", mitigations=["proxylogon"])
        webhook.stop()
        r = watcher.run_round()
        new = [
            ("protected", A, "proxylogon", "vulnerable", "mitigated"),
            ("exposed", B, "proxylogon", None, "vulnerable"),
        ]
        expected += new
        assert [key(a.to_dict()) for a in r.alerts] == new
        hook_report = next(d for d in r.deliveries if d.sink == webhook.url)
        assert hook_report.error and hook_report.spooled == 2 and hook_report.sent == 0
        # Round 3: the webhook is back; A's rules are rolled back; B disappears (first round missing).
        webhook.start()
        lab.update("a", mitigations=[])
        lab.stop("b")
        r = watcher.run_round()
        new = [("protection_lost", A, "proxylogon", "mitigated", "vulnerable")]
        expected += new
        assert [key(a.to_dict()) for a in r.alerts] == new
        hook_report = next(d for d in r.deliveries if d.sink == webhook.url)
        assert hook_report.queued == 2 and hook_report.sent == 3 and hook_report.spooled == 0
        # Round 4: B missing for the second round: gone.  Round 5: nothing changed: nothing sent.
        r = watcher.run_round()
        assert [(a.kind, a.host) for a in r.alerts] == [("gone", B)]
        expected += [("gone", B, None, "exchange", "unreachable")]
        r = watcher.run_round()
        assert r.alerts == []
        # A hunt stores a likely finding for A: compromised, once (a second finding adds nothing).
        with open_store(cfg.store_url) as store:
            finding = {"rule": "proxylogon-ssrf-cookie", "wave": "proxylogon", "confidence": "likely"}
            store.add_hunt(A, verdict="compromised", coverage={}, findings=[finding])
        r = watcher.run_round()
        assert [(a.kind, a.host, a.wave) for a in r.alerts] == [("compromised", A, "proxylogon")]
        expected += [("compromised", A, "proxylogon", "vulnerable", "compromised")]
        with open_store(cfg.store_url) as store:
            store.add_hunt(A, verdict="compromised", coverage={}, findings=[finding])
        # Round 7: B comes back: back (its wave state did not change: nothing else).
        lab.start("b")
        r = watcher.run_round()
        assert [(a.kind, a.host) for a in r.alerts] == [("back", B)]
        expected += [("back", B, None, "unreachable", "exchange")]
    finally:
        watcher.close()
    assert wait_for(
        lambda: len(syslog_udp.messages) >= len(expected) and len(syslog_tcp.messages) >= len(expected)
    )
    file_events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for events in (webhook.events, syslog_udp.events(), syslog_tcp.events(), file_events):
        assert sorted(map(key, events)) == sorted(expected)
        assert len({e["id"] for e in events}) == len(expected)
    # Every event carries the fields; the scan is the stored snapshot of its round.
    for e in file_events:
        assert {
            "kind",
            "time",
            "host",
            "address",
            "port",
            "wave",
            "state",
            "previous",
            "build",
            "fix",
            "scan",
        } <= set(e)
    exposed = [e for e in file_events if e["kind"] == "exposed"]
    assert all(
        e["port"] == HTTPS_PORT and e["build"] == OPEN and "KB5000871" in (e["fix"] or "") for e in exposed
    )


def test_a_restarted_watch_resends_nothing_and_keeps_detecting(tmp_path: Path, lab: LabServers) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    cfg = config(tmp_path, (f"file://{jsonl}",))
    cfg.rounds = 2
    lab.add("a", A, OPEN)
    lab.start("a")
    Watcher(cfg).run()
    Watcher(cfg).run()  # a new process would load the same state from the store
    lab.update("a", mitigations=["proxylogon"])
    Watcher(cfg).run()
    kinds = [json.loads(line)["kind"] for line in jsonl.read_text().splitlines()]
    assert kinds == ["exposed", "protected"]


def test_one_exchange_port_outranks_a_refused_port(tmp_path: Path, lab: LabServers) -> None:
    """The per-service fold: the Exchange answer on 18443 decides, a refused port 18080 does not."""
    cfg = config(tmp_path, ())
    cfg.options = ScanOptions(
        ports=parse_ports(f"{HTTPS_PORT}/https,18080/http"), probe=True, timeout=2.0, host_budget=10.0
    )
    cfg.targets = [A]
    lab.add("a", A, OPEN)
    lab.start("a")
    watcher = Watcher(cfg)
    watcher.open()
    try:
        first = watcher.run_round()
        second = watcher.run_round()
        third = watcher.run_round()
    finally:
        watcher.close()
    assert [(a.kind, a.port) for a in first.alerts] == [("exposed", HTTPS_PORT)]
    assert second.alerts == [] and third.alerts == []  # never "gone" for the refused port
    assert third.vulnerable == 1 and third.exit_code == 1
