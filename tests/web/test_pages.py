"""The HTML pages: what a person reads, self-contained, and nothing from a scanned server injected."""

from __future__ import annotations

import re

import markupsafe
from lxml import html as lhtml
from webfill import (
    FIX,
    HOSTILE_BUILD,
    HOSTILE_EXCERPT,
    HOSTILE_FE,
    HOSTILE_NAME,
    HOSTILE_TAG,
    HOSTILE_TITLE,
    Client,
    plan_state,
)

EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//|url\(\s*["']?(?:[a-z]+:)?//|@import""", re.I
)


def _rows(page: str, table_id: str) -> list[list[str]]:
    doc = lhtml.fromstring(page)
    return [
        [" ".join(td.text_content().split()) for td in tr.findall("td")]
        for tr in doc.get_element_by_id(table_id).iter("tr")
        if tr.findall("td")
    ]


def test_dashboard_shows_headline_tables_and_chart(client: Client) -> None:
    summary = client.get("/api/summary").json()
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    doc = lhtml.fromstring(r.text)
    assert doc.get_element_by_id("headline").text_content() == summary["headline"]
    waves = _rows(r.text, "waves")
    assert [w[0] for w in waves] == ["ProxyLogon", "ProxyShell", "ProxyNotShell"]
    # ProxyLogon: 13 hosts, 3 vulnerable, 9 patched, 0 mitigated, 1 unknown, 0 not affected, 12 classified, 75.0%
    assert waves[0][1:9] == ["13", "3", "9", "0", "1", "0", "12", "75.0%"]
    assert r.text.count("<svg") == 1 and "id='chart-share'" in r.text
    exposed = _rows(r.text, "hosts")
    api = client.get("/api/hosts", params={"limit": 100}).json()["items"]
    assert [row[0] for row in exposed] == [f"#{h['host_id']}" for h in api]
    assert [row[1] for row in exposed] == [h["address"] for h in api]
    assert exposed[0][-1] in (FIX, "<u>fix</u>")
    compromised = _rows(r.text, "compromised")
    assert [(c[1], c[6]) for c in compromised] == [("127.60.0.5", "14"), ("127.60.0.13", "1")]
    assert "<script" not in r.text.lower()
    assert EXTERNAL.findall(r.text) == []
    assert "script-src" not in r.headers["content-security-policy"]


def test_dashboard_filters_and_paging(client: Client) -> None:
    rows = _rows(client.get("/", params={"wave": "proxyshell"}).text, "hosts")
    assert sorted(r[1] for r in rows) == [f"127.60.0.{h}" for h in range(1, 6)]
    rows = _rows(client.get("/", params={"state": "patched", "wave": "proxylogon"}).text, "hosts")
    assert [r[1] for r in rows] == [f"127.60.0.{h}" for h in range(4, 13)]
    rows = _rows(client.get("/", params={"q": "exch02"}).text, "hosts")
    assert {r[1] for r in rows} == {"127.60.0.2"} and len(rows) == 3  # vulnerable to three waves
    page = client.get("/", params={"offset": "10"}).text
    assert len(_rows(page, "hosts")) == 2 and "11–12 of 12" in page and "previous" in page
    bad = client.get("/", params={"state": "exposed"})
    assert bad.status_code == 422 and "unknown state" in bad.text
    bad = client.get("/", params={"offset": "x"})
    assert bad.status_code == 422


def test_host_page(client: Client) -> None:
    r = client.get("/hosts/5")
    assert r.status_code == 200
    doc = lhtml.fromstring(r.text)
    assert "127.60.0.5" in doc.findtext(".//h1")
    verdicts = _rows(r.text, "verdicts")
    assert [v[:2] for v in verdicts] == [
        [name, plan_state(wave, 14, 5)]
        for name, wave in (
            ("ProxyLogon", "proxylogon"),
            ("ProxyShell", "proxyshell"),
            ("ProxyNotShell", "proxynotshell"),
        )
    ]
    assert verdicts[1][3] == FIX
    snaps = _rows(r.text, "snapshots")
    assert [s[6] for s in snaps] == ["vulnerable", "mitigated", "patched"]  # ProxyLogon column
    assert len(_rows(r.text, "findings")) == 15
    assert [h[2] for h in _rows(r.text, "hunts")] == ["compromised"]
    missing = client.get("/hosts/4242")
    assert missing.status_code == 404 and "no host #4242" in missing.text
    assert missing.headers["content-type"].startswith("text/html")


def test_hostile_values_are_escaped(client: Client) -> None:
    """A server's header, name, certificate, tag and a log excerpt that carry markup stay text."""
    pages = {
        "/": client.get("/").text,
        "/?q=evil": client.get("/", params={"q": "evil"}).text,
        "/hosts/13": client.get("/hosts/13").text,
    }
    for path, page in pages.items():
        lowered = page.lower()
        assert "<script" not in lowered, path
        assert "<img" not in lowered and "onerror=alert" not in lowered.replace("onerror=alert(1)&gt;", ""), (
            path
        )
        assert "<svg onload" not in lowered and "<b>bold" not in lowered and "<i>evil" not in lowered, path
        assert "<u>fix" not in lowered, path
    host = pages["/hosts/13"]
    doc = lhtml.fromstring(host)
    text = doc.text_content()
    # the values are shown to the reader as the text they were
    for value in (HOSTILE_FE.lower(), HOSTILE_NAME.lower(), HOSTILE_TAG, HOSTILE_EXCERPT, HOSTILE_TITLE):
        assert value in text, value
    assert HOSTILE_BUILD in text
    assert str(markupsafe.escape(HOSTILE_EXCERPT)) in host
    # parsed as HTML, no element or attribute came from the store
    assert doc.findall(".//script") == [] and doc.findall(".//img") == []
    assert not [
        el for el in doc.iter() if isinstance(el.tag, str) and any(a.startswith("on") for a in el.attrib)
    ]
    dash = lhtml.fromstring(pages["/"])
    assert HOSTILE_BUILD in dash.text_content()
    assert not [
        el for el in dash.iter() if isinstance(el.tag, str) and any(a.startswith("on") for a in el.attrib)
    ]
