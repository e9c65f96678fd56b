"""Services, then hosts: the fold's precedence, conflicts and per-wave states (pure, a table)."""

from __future__ import annotations

from typing import Any

import pytest

from exwatch.scan.fold import builds_disagree, fold_services, host_of, most_exposed, service_rank


def svc(
    port: int,
    status: str,
    build: str | None = None,
    *,
    cu_only: bool = False,
    waves: dict[str, str] | None = None,
    error: str | None = None,
    time: str = "2024-01-01T00:00:00+00:00",
) -> dict[str, Any]:
    scheme = "http" if port == 80 else "https"
    return {
        "key": f"{scheme}://10.0.0.1:{port}",
        "address": "10.0.0.1",
        "name": None,
        "port": port,
        "scheme": scheme,
        "status": status,
        "error": error,
        "build": build,
        "cu_only": cu_only if build else None,
        "waves": {w: {"state": s, "reason": f"{s} on {port}"} for w, s in (waves or {}).items()},
        "conflicts": [],
        "time": time,
    }


@pytest.mark.parametrize(
    ("record", "rank"),
    [
        (svc(443, "exchange", "15.2.1118.7"), 4),
        (svc(443, "exchange", "15.2.1118", cu_only=True), 3),
        (svc(443, "exchange"), 3),
        (svc(80, "not_exchange"), 2),
        (svc(80, "unreachable", error="refused"), 1),
        (svc(80, "unreachable", error="timeout"), 1),
        (svc(80, "unreachable", error="tls"), 1),
        (svc(80, "unreachable", error="excluded"), 1),
    ],
)
def test_service_rank(record: dict[str, Any], rank: int) -> None:
    assert service_rank(record) == rank


def test_refused_port_80_does_not_hide_the_exchange_answer_on_443() -> None:
    refused = svc(80, "unreachable", error="refused", waves={"proxylogon": "unreachable"})
    exchange = svc(443, "exchange", "15.1.2176.2", waves={"proxylogon": "vulnerable"})
    for order in ([refused, exchange], [exchange, refused]):
        host = fold_services(order)
        assert host["status"] == "exchange"
        assert host["port"] == 443
        assert host["build"] == "15.1.2176.2"
        assert host["conflict"] is False
        assert host["waves"]["proxylogon"]["state"] == "vulnerable"
        assert [(s["port"], s["status"], s["error"]) for s in host["services"]] == [
            (80, "unreachable", "refused"),
            (443, "exchange", None),
        ]


def test_not_exchange_outranks_unreachable_and_exact_build_outranks_cu() -> None:
    host = fold_services([svc(443, "unreachable", error="timeout"), svc(80, "not_exchange")])
    assert (host["status"], host["port"]) == ("not_exchange", 80)
    host = fold_services(
        [
            svc(443, "exchange", "15.2.858", cu_only=True, waves={"proxyshell": "unknown"}),
            svc(8443, "exchange", "15.2.858.5", waves={"proxyshell": "patched"}),
        ]
    )
    assert (host["port"], host["build"], host["conflict"]) == (8443, "15.2.858.5", False)
    assert host["waves"]["proxyshell"]["state"] == "patched"  # the exact build's knowledge wins


def test_equal_ranks_most_exposed_state_and_port_named() -> None:
    host = fold_services(
        [
            svc(443, "exchange", "15.2.1118.7", waves={"proxynotshell": "mitigated"}),
            svc(8443, "exchange", "15.2.1118.7", waves={"proxynotshell": "vulnerable"}),
        ]
    )
    assert host["port"] == 443  # same rank and time: the lower port
    assert host["conflict"] is False
    assert host["waves"]["proxynotshell"]["state"] == "vulnerable"
    assert host["waves"]["proxynotshell"]["port"] == 8443


def test_disagreeing_builds_set_conflict_and_take_the_most_exposed_state() -> None:
    host = fold_services(
        [
            svc(443, "exchange", "15.2.1118.7", waves={"proxylogon": "patched", "proxyshell": "patched"}),
            svc(
                8443,
                "exchange",
                "15.1.2176",
                cu_only=True,
                waves={"proxylogon": "patched", "proxyshell": "unknown"},
            ),
        ]
    )
    assert host["conflict"] is True
    assert host["port"] == 443
    assert host["waves"]["proxylogon"]["state"] == "patched"
    assert host["waves"]["proxyshell"]["state"] == "unknown"
    assert any("disagree" in c for c in host["conflicts"])


def test_newer_observation_wins_between_equal_ranks() -> None:
    old = svc(443, "exchange", "15.2.1118.7", time="2024-01-01T00:00:00+00:00")
    new = svc(8443, "exchange", "15.2.1118.7", time="2024-02-01T00:00:00+00:00")
    assert fold_services([old, new])["port"] == 8443


def test_helpers() -> None:
    assert not builds_disagree("15.2.858", "15.2.858.5")
    assert builds_disagree("15.2.858.5", "15.2.858.10")
    assert not builds_disagree(None, "15.2.858.5")
    assert most_exposed(["patched", "unknown", "mitigated"]) == "unknown"
    assert most_exposed([]) is None
    assert host_of({"key": "https://[::1]:443"}) == "::1"
    assert host_of({"key": "http://mail.example.org:80", "name": "mail.example.org"}) == "mail.example.org"
    with pytest.raises(ValueError):
        fold_services([])
