"""The JSON API on a store filled like scans and hunts fill it: the report's numbers, paging, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from webfill import (
    DAYS,
    HOST5_CONFIRMED,
    HOST5_REVIEW,
    HOSTILE_BUILD,
    HOSTS,
    WAVES,
    Client,
    expected_counts,
    plan_state,
)

from exwatch.cli.main import cli


def report_json(url: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["report", "--db", url, "--format", "json"])
    assert result.exit_code == 1, result.output  # exposed servers: something found
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_health(client: Client, web_db: str) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["latest_scan"] == 3
    assert body["dialect"] == ("sqlite" if web_db.startswith("sqlite") else "postgresql")


def test_summary_and_snapshots_equal_report_json(client: Client, web_db: str) -> None:
    doc = report_json(web_db)
    summary = client.get("/api/summary").json()
    assert summary["headline"] == doc["headline"]
    assert summary["wave"] == doc["wave"] == "proxylogon"
    assert summary["latest"] == doc["snapshots"][-1]
    assert summary["change_7d"] == doc["change_7d"]
    assert summary["compromised_before_protected"] == doc["compromised_before_protected"]
    assert summary["snapshots"] == len(doc["snapshots"]) == len(DAYS)
    assert client.get("/api/snapshots").json()["snapshots"] == doc["snapshots"]
    # the exposed hosts: the report's list, item for item
    hosts = client.get("/api/hosts", params={"limit": 1000}).json()
    assert [{k: v for k, v in h.items() if k != "state"} for h in hosts["items"]] == doc["hosts_at_risk"]
    assert hosts["total"] == len(doc["hosts_at_risk"])


def test_counts_are_the_known_ones(client: Client) -> None:
    snaps = client.get("/api/snapshots").json()["snapshots"]
    assert [s["time"][:10] for s in snaps] == ["2021-03-08", "2021-03-15", "2021-03-22"]
    for day, snap in zip(DAYS, snaps, strict=True):
        # what the scan saw; the fleet picture counts hosts (a dead address is no host)
        assert snap["scan_statuses"] == {"exchange": 13, "unreachable": 1, "not_exchange": 1}
        assert snap["statuses"] == {"exchange": 13}
        for wave in WAVES:
            counts = snap["waves"][wave]
            want = expected_counts(day)[wave]
            for state in ("vulnerable", "patched", "mitigated", "unknown", "not_affected"):
                assert counts[state] == want.get(state, 0), (day, wave, state)
    latest = client.get("/api/summary").json()["latest"]["waves"]["proxylogon"]
    # day 14: hosts 1, 2 and the hostile one vulnerable; 3 unknown; 4-12 patched
    assert (latest["vulnerable"], latest["patched"], latest["unknown"], latest["classified"]) == (3, 9, 1, 12)
    assert latest["protected_share"] == pytest.approx(9 / 12)
    summary = client.get("/api/summary").json()
    assert summary["headline"].startswith("ProxyLogon: 75.0% of 12 classified servers patched or mitigated")
    # ProxyLogon on day 7: 5 vulnerable (1-4 and hostile); now 3: -40 %
    assert summary["change_7d"]["waves"]["proxylogon"]["unprotected_rel_change"] == pytest.approx(-0.4)
    comp = summary["compromised_before_protected"]
    assert [(c["address"], c["wave"], c["findings"]) for c in comp] == [
        ("127.60.0.5", "proxylogon", HOST5_CONFIRMED),
        ("127.60.0.13", "proxylogon", 1),
    ]


def test_hosts_paging_and_filters(client: Client) -> None:
    everything = client.get("/api/hosts", params={"limit": 1000}).json()
    # latest snapshot: ProxyLogon 1, 2, 13; ProxyShell 1-5; ProxyNotShell 1-4
    assert everything["total"] == 3 + 5 + 4 == len(everything["items"])
    assert everything["scan"] == 3 and everything["state"] == "vulnerable"
    since = [h["exposed_since"] for h in everything["items"]]
    assert since == sorted(since)  # longest exposed first
    assert all(h["fix"] for h in everything["items"])
    pages: list[dict[str, Any]] = []
    for offset in range(0, 14, 3):
        page = client.get("/api/hosts", params={"limit": 3, "offset": offset}).json()
        assert page["total"] == 12 and page["offset"] == offset and page["limit"] == 3
        assert len(page["items"]) == min(3, 12 - offset)
        pages.extend(page["items"])
    assert pages == everything["items"]
    assert client.get("/api/hosts", params={"offset": 50}).json()["items"] == []
    shell = client.get("/api/hosts", params={"wave": "proxyshell"}).json()
    assert sorted(h["address"] for h in shell["items"]) == [f"127.60.0.{h}" for h in range(1, 6)]
    assert shell["total"] == 5
    nl = client.get("/api/hosts", params={"tag": "country=NL", "wave": "proxyshell"}).json()
    assert sorted(h["address"] for h in nl["items"]) == ["127.60.0.1", "127.60.0.3", "127.60.0.5"]
    found = client.get("/api/hosts", params={"q": "<IMG"}).json()
    assert [(h["host_id"], h["build"]) for h in found["items"]] == [(13, HOSTILE_BUILD)]
    patched = client.get("/api/hosts", params={"state": "patched", "wave": "proxylogon", "limit": 4}).json()
    assert patched["total"] == 9 and len(patched["items"]) == 4
    assert [h["address"] for h in patched["items"]] == [f"127.60.0.{h}" for h in (4, 5, 6, 7)]
    rest = client.get("/api/hosts", params={"state": "patched", "wave": "proxylogon", "offset": 4}).json()
    assert [h["address"] for h in rest["items"]] == [f"127.60.0.{h}" for h in range(8, 13)]
    unknown = client.get("/api/hosts", params={"state": "unknown", "q": "127.60.0.3"}).json()
    assert [(h["address"], h["wave"], h["fix"]) for h in unknown["items"]] == [
        ("127.60.0.3", "proxylogon", "install KB5000871 (15.1.2176.9) or CU21")
    ]


def test_host_history(client: Client) -> None:
    body = client.get("/api/hosts/5").json()
    assert body["address"] == "127.60.0.5" and body["tags"] == {"country": "NL"}
    assert [s["waves"]["proxylogon"] for s in body["snapshots"]] == [
        plan_state("proxylogon", d, 5) for d in DAYS
    ]
    assert [s["waves"]["proxyshell"] for s in body["snapshots"]] == [
        plan_state("proxyshell", d, 5) for d in DAYS
    ]
    assert [(h["verdict"], h["findings"]) for h in body["hunts"]] == [
        ("compromised", HOST5_CONFIRMED + HOST5_REVIEW)
    ]
    logon = next(e for e in body["exposure"] if e["wave"] == "proxylogon")
    assert (logon["first_vulnerable"][:10], logon["first_protected"][:10]) == ("2021-03-08", "2021-03-15")
    assert body["verdicts"]["proxyshell"]["state"] == "vulnerable"
    assert body["verdicts"]["proxyshell"]["fix"] == "install KB5000871 (15.1.2176.9) or CU21"


def test_findings_filters_and_paging(client: Client) -> None:
    everything = client.get("/api/findings", params={"limit": 1000}).json()
    assert everything["total"] == HOST5_CONFIRMED + HOST5_REVIEW + 1 == len(everything["items"])
    times = [f["time"] for f in everything["items"]]
    assert times == sorted(times)
    host5 = client.get("/api/findings", params={"host": "127.60.0.5"}).json()
    assert host5["total"] == HOST5_CONFIRMED + HOST5_REVIEW
    assert {f["host_id"] for f in host5["items"]} == {5}
    assert client.get("/api/findings", params={"host": "#5", "confidence": "review"}).json()["total"] == 1
    assert client.get("/api/findings", params={"host": "EXCH05"}).json()["total"] == 15
    assert client.get("/api/findings", params={"wave": "proxyshell"}).json()["total"] == 0
    assert client.get("/api/findings", params={"host": "127.60.9.9"}).json()["total"] == 0
    first = client.get("/api/findings", params={"limit": 5, "offset": 10}).json()
    assert first["items"] == everything["items"][10:15]
    ev = host5["items"][0]["evidence"]
    assert ev["file"].endswith(".LOG") and ev["sha256"] == "ab" * 32 and ev["line"] == 100


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/hosts/9999", {}, 404),
        ("/api/hosts/abc", {}, 422),
        ("/api/hosts", {"state": "exposed"}, 422),
        ("/api/hosts", {"wave": "heartbleed"}, 422),
        ("/api/hosts", {"limit": 0}, 422),
        ("/api/hosts", {"limit": 5000}, 422),
        ("/api/hosts", {"offset": -1}, 422),
        ("/api/hosts", {"tag": "no-equals-sign"}, 422),
        ("/api/snapshots", {"tag": "=x"}, 422),
        ("/api/findings", {"confidence": "maybe"}, 422),
        ("/api/findings", {"limit": "ten"}, 422),
        ("/api/nothing-here", {}, 404),
    ],
)
def test_errors_are_json_with_status(client: Client, path: str, params: dict[str, Any], status: int) -> None:
    r = client.get(path, params=params)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"]


def test_unknown_host_404_message(client: Client) -> None:
    r = client.get("/api/hosts/9999")
    assert r.json() == {"detail": "no host #9999 in the store"}


def test_openapi_and_headers(client: Client) -> None:
    spec = client.get("/api/openapi.json").json()
    assert {
        "/api/summary",
        "/api/snapshots",
        "/api/hosts",
        "/api/hosts/{host_id}",
        "/api/findings",
        "/api/health",
    } <= set(spec["paths"])
    assert "/" not in spec["paths"]
    assert client.get("/api/docs").status_code == 404  # Swagger UI would load its script from a CDN
    r = client.get("/api/health")
    assert "script-src" not in r.headers["content-security-policy"]
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_loopback_host_check(web_db: str) -> None:
    """Bound to loopback, only loopback Host headers are answered (no DNS rebinding)."""
    from exwatch.cli.serve import LOOPBACK_NAMES
    from exwatch.web import create_app

    app = create_app(web_db, allowed_hosts=[*LOOPBACK_NAMES, "127.0.0.1"])
    try:
        assert Client(app, host="127.0.0.1:8000").get("/api/health").status_code == 200
        assert Client(app, host="localhost").get("/api/health").status_code == 200
        assert Client(app, host="[::1]:8000").get("/api/health").status_code == 200
        refused = Client(app, host="attacker.example").get("/api/health")
        assert refused.status_code == 400 and "loopback" in refused.json()["detail"]
        assert Client(app, host="127.0.0.1.attacker.example").get("/").status_code == 400
    finally:
        app.state.store.close()


def test_empty_store(tmp_path: Any) -> None:
    from exwatch.web import create_app

    app = create_app(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        c = Client(app)
        assert c.get("/api/summary").json()["latest"] is None
        assert c.get("/api/hosts").json()["total"] == 0
        page = c.get("/")
        assert page.status_code == 200 and "No finished scan in the store yet" in page.text
    finally:
        app.state.store.close()


def test_hosts_all_vulnerable_pairs_listed(client: Client) -> None:
    listed = {
        (h["host_id"], h["wave"]) for h in client.get("/api/hosts", params={"limit": 1000}).json()["items"]
    }
    want = {(h, w) for h in HOSTS for w in WAVES if plan_state(w, 14, h) == "vulnerable"} | {
        (13, "proxylogon")
    }
    assert listed == want
