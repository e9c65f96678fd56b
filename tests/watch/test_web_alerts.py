"""/api/alerts and the alerts page over a store filled by the alert log: filters, escaping, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from exwatch.fleet import open_store
from exwatch.watch.detect import new_state
from exwatch.watch.log import AlertLog
from exwatch.watch.model import Alert

HOSTILE = "<script>alert(1)</script>.example"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    with open_store(url) as store:
        scan = store.start_scan({"targets": []})
        recs = [
            {
                "key": f"https://192.0.2.{i}:443",
                "address": f"192.0.2.{i}",
                "port": 443,
                "status": "exchange",
                "build": "15.1.2176.2",
                "waves": {"proxylogon": {"state": "vulnerable"}},
                "tags": {"country": "NL" if i == 1 else "BE"},
            }
            for i in (1, 2)
        ]
        store.add_observations(scan, recs)
        store.finish_scan(scan)
        ids = {
            f"192.0.2.{i}": hid
            for i, hid in ((1, store.find_hosts("192.0.2.1")[0]), (2, store.find_hosts("192.0.2.2")[0]))
        }

        def alert(kind: str, host: str, wave: str | None, minute: int) -> Alert:
            return Alert(
                kind,
                f"2021-03-03T06:{minute:02d}:00+00:00",
                host,
                host,
                443,
                wave,
                "vulnerable",
                None,
                "15.1.2176.2",
                "install KB5000871",
                scan,
                watch="w",
            )

        log = AlertLog(store)
        log.commit_round(
            "w",
            new_state(),
            [
                alert("exposed", "192.0.2.1", "proxylogon", 1),
                alert("exposed", "192.0.2.2", "proxyshell", 2),
                alert("gone", "192.0.2.2", None, 3),
                alert("protected", HOSTILE, "proxylogon", 4),
            ],
            ids,
        )
    from exwatch.web import create_app

    app = create_app(url)
    with TestClient(app) as c:
        yield c


def test_api_alerts_filters(client: TestClient) -> None:
    every = client.get("/api/alerts").json()
    assert every["total"] == 4
    assert [a["kind"] for a in every["items"]] == ["protected", "gone", "exposed", "exposed"]  # newest first
    assert {
        k
        for k in (
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
        )
    } <= set(every["items"][0])
    assert [a["host"] for a in client.get("/api/alerts?kind=exposed").json()["items"]] == [
        "192.0.2.2",
        "192.0.2.1",
    ]
    assert [a["host"] for a in client.get("/api/alerts?wave=proxyshell").json()["items"]] == ["192.0.2.2"]
    assert [a["host"] for a in client.get("/api/alerts?tag=country=NL").json()["items"]] == ["192.0.2.1"]
    assert [a["kind"] for a in client.get("/api/alerts?tag=country=BE").json()["items"]] == [
        "gone",
        "exposed",
    ]
    assert client.get("/api/alerts?kind=exposed&limit=1&offset=1").json()["items"][0]["host"] == "192.0.2.1"
    assert client.get("/api/alerts?kind=nonsense").status_code == 422
    assert client.get("/api/alerts?tag=country").status_code == 422


def test_alerts_page(client: TestClient) -> None:
    page = client.get("/alerts?kind=gone")
    assert page.status_code == 200
    assert "192.0.2.2" in page.text and "1 alert(s)" in page.text
    everything = client.get("/alerts").text
    assert HOSTILE not in everything and "&lt;script&gt;" in everything
    assert client.get("/alerts?tag=oops").status_code == 422
