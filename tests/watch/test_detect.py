"""Change detection without sockets: one alert per change, none for an unchanged state."""

from __future__ import annotations

from typing import Any

import pytest

from exwatch.watch.detect import detect, new_state
from exwatch.watch.model import HostSeen, NewFinding, WatchState, parse_duration


def host(*states: str, status: str = "exchange") -> HostSeen:
    waves = ("proxylogon", "proxyshell")
    return HostSeen.from_record(
        {
            "status": status,
            "address": "192.0.2.1",
            "port": 443,
            "build": "15.1.2176.2",
            "waves": {
                w: {"state": s, "fix": {"text": f"fix {w}"}} for w, s in zip(waves, states, strict=False)
            },
        }
    )


def run(rounds: list[dict[str, HostSeen]], **kw: Any) -> list[list[tuple[Any, ...]]]:
    state = new_state()
    out = []
    for n, hosts in enumerate(rounds, 1):
        alerts, state = detect(state, hosts, scan_id=n, time="2021-03-03T00:00:00+00:00", **kw)
        out.append([(a.kind, a.host, a.wave, a.previous, a.state) for a in alerts])
    return out


H = "mail.example"


@pytest.mark.parametrize(
    ("rounds", "expected"),
    [
        # first seen vulnerable, then unchanged: one alert
        ([{H: host("vulnerable")}] * 3, [[("exposed", H, "proxylogon", None, "vulnerable")], [], []]),
        # first seen patched: nothing; then vulnerable: protection lost (not "exposed")
        (
            [{H: host("patched")}, {H: host("vulnerable")}],
            [[], [("protection_lost", H, "proxylogon", "patched", "vulnerable")]],
        ),
        # vulnerable -> mitigated -> patched (no change of protection) -> vulnerable
        (
            [{H: host("vulnerable")}, {H: host("mitigated")}, {H: host("patched")}, {H: host("vulnerable")}],
            [
                [("exposed", H, "proxylogon", None, "vulnerable")],
                [("protected", H, "proxylogon", "vulnerable", "mitigated")],
                [],
                [("protection_lost", H, "proxylogon", "patched", "vulnerable")],
            ],
        ),
        # an unknown round changes nothing
        (
            [{H: host("vulnerable")}, {H: host("unknown")}, {H: host("vulnerable")}],
            [[("exposed", H, "proxylogon", None, "vulnerable")], [], []],
        ),
        # not reachable first, then vulnerable: exposed
        (
            [{H: host(status="unreachable")}, {H: host("vulnerable")}],
            [[], [("exposed", H, "proxylogon", None, "vulnerable")]],
        ),
        # one round unreachable is nothing; two are "gone" once; seen again is "back"
        (
            [
                {H: host("patched")},
                {H: host(status="unreachable")},
                {H: host("patched")},
                {H: host(status="unreachable")},
                {H: host(status="unreachable")},
                {H: host(status="unreachable")},
                {H: host("patched")},
            ],
            [
                [],
                [],
                [],
                [],
                [("gone", H, None, "exchange", "unreachable")],
                [],
                [("back", H, None, "unreachable", "exchange")],
            ],
        ),
    ],
)
def test_one_alert_per_change(
    rounds: list[dict[str, HostSeen]], expected: list[list[tuple[Any, ...]]]
) -> None:
    assert run(rounds) == expected


def test_each_wave_is_its_own_change_and_the_wave_filter_holds() -> None:
    rounds = [{H: host("vulnerable", "vulnerable")}, {H: host("patched", "vulnerable")}]
    assert [len(r) for r in run(rounds)] == [2, 1]
    assert run(rounds, waves=["proxyshell"]) == [[("exposed", H, "proxyshell", None, "vulnerable")], []]


def test_compromised_once_per_host_and_wave() -> None:
    state = new_state()
    finding = NewFinding(host=H, wave="proxylogon", confidence="likely", rule="r1")
    alerts, state = detect(state, {H: host("vulnerable")}, scan_id=1, time="t", findings=[finding])
    assert [a.kind for a in alerts] == ["exposed", "compromised"]
    alerts, state = detect(state, {H: host("vulnerable")}, scan_id=2, time="t", findings=[finding, finding])
    assert alerts == []


def test_alert_ids_are_stable_and_distinct() -> None:
    a1, _ = detect(new_state(), {H: host("vulnerable", "vulnerable")}, scan_id=1, time="t", watch="w")
    a2, _ = detect(new_state(), {H: host("vulnerable", "vulnerable")}, scan_id=1, time="t", watch="w")
    assert [a.id for a in a1] == [a.id for a in a2] and len({a.id for a in a1}) == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("6h", 21600), ("1d", 86400), ("2", 2)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1s", "5 weeks", "h"])
def test_bad_durations(text: str) -> None:
    from exwatch.errors import InputError

    with pytest.raises(InputError):
        parse_duration(text)


def test_the_state_survives_its_json_form() -> None:
    """A watch restarted from the stored JSON goes on where it was: the same alerts (none repeated)."""
    import json

    finding = NewFinding(host=H, wave="proxylogon", confidence="likely", rule="r1")
    _, state = detect(new_state(), {H: host("vulnerable")}, scan_id=1, time="t", findings=[finding])
    _, state = detect(state, {H: host(status="unreachable")}, scan_id=2, time="t")
    state.hosts[H].host_id = 7
    stored = json.loads(json.dumps(state.to_dict(), sort_keys=True))
    assert WatchState.from_dict(stored) == state
    again = WatchState.from_dict(stored)
    alerts, _ = detect(again, {H: host(status="unreachable")}, scan_id=3, time="t", findings=[finding])
    assert [a.kind for a in alerts] == ["gone"]  # compromised was sent already; second round missing


def test_a_state_stored_by_the_dict_version_loads() -> None:
    """The JSON the watch stored before the state was typed (keys absent until first needed)."""
    old = {
        "hosts": {
            H: {
                "waves": {"proxylogon": "patched"},
                "ever_vulnerable": [],
                "missing": 1,
                "gone": False,
                "address": "192.0.2.1",
                "port": 443,
                "build": "15.1.2176.2",
                "host_id": 3,
            },
            "other": {"waves": {}, "ever_vulnerable": [], "missing": 0, "gone": False, "compromised": [""]},
        },
        "rounds": 4,
        "last_scan": 9,
        "findings_after": 12,
        "sinks": {"abc": {"since": 5, "url": "file:///tmp/x.jsonl"}},
        "started": "2021-03-03T00:00:00+00:00",
    }
    state = WatchState.from_dict(old)
    assert state.rounds == 4 and state.findings_after == 12 and state.sinks["abc"].since == 5
    assert state.hosts[H].host_id == 3 and state.hosts["other"].compromised == [""]
    alerts, nxt = detect(state, {H: host("vulnerable")}, scan_id=10, time="t")
    assert [(a.kind, a.previous, a.address) for a in alerts] == [("protection_lost", "patched", "192.0.2.1")]
    assert nxt.rounds == 5 and nxt.last_scan == 10 and state.rounds == 4  # the given state is left alone
    assert WatchState.from_dict(new_state().to_dict()) == new_state() == WatchState.from_dict({})
