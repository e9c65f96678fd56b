"""The web tests' store, filled the way scans and hunts fill it: known counts and one hostile server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from exwatch.fleet import Store

DAY0 = datetime(2021, 3, 8, tzinfo=UTC)
DAYS = (0, 7, 14)
HOSTS = range(1, 13)  # twelve ordinary Exchange servers, 127.60.0.1-12 (data only, never contacted)
HOSTILE = 13
HOSTILE_FE = "<script>alert('fe')</script>"
HOSTILE_BUILD = "15.1.2176.2'\"><img src=x onerror=alert(1)>"
HOSTILE_NAME = "evil<b>bold</b>.example"
HOSTILE_TAG = "<i>Evil</i> & Co"
HOSTILE_EXCERPT = "GET /owa/</pre><script>alert('excerpt')</script> X-AnonResource-Backend=localhost~1942"
HOSTILE_TITLE = "<svg onload=alert('title')>"
FIX = "install KB5000871 (15.1.2176.9) or CU21"


def plan_state(wave: str, day: int, host: int) -> str:
    """The state each ordinary host has per wave and day (the expected values of every test)."""
    if wave == "proxylogon":
        if day == 0:
            return "vulnerable" if host <= 8 else "patched"
        if day == 7:
            return "vulnerable" if host <= 4 else "mitigated" if host <= 6 else "patched"
        return "vulnerable" if host <= 2 else "unknown" if host == 3 else "patched"
    if wave == "proxyshell":
        return "vulnerable" if host <= (7 if day < 14 else 5) else "patched"
    return "not_affected" if host >= 10 else "vulnerable" if host <= 6 - day // 7 else "mitigated"


WAVES = ("proxylogon", "proxyshell", "proxynotshell")


def expected_counts(day: int) -> dict[str, dict[str, int]]:
    """Per wave, the states of the ordinary hosts plus the hostile one (vulnerable to ProxyLogon only)."""
    out: dict[str, dict[str, int]] = {}
    for wave in WAVES:
        counts: dict[str, int] = {}
        for h in HOSTS:
            s = plan_state(wave, day, h)
            counts[s] = counts.get(s, 0) + 1
        hostile = "vulnerable" if wave == "proxylogon" else "not_affected"
        counts[hostile] = counts.get(hostile, 0) + 1
        out[wave] = counts
    return out


def _verdict(state: str, wave: str) -> dict[str, Any]:
    return {
        "state": state,
        "reason": f"{wave}: by build",
        "fix": {"security_update": ["15.1.2176.9"], "cumulative_update": "15.1.2242.4", "text": FIX},
    }


def observation(host: int, day: int) -> dict[str, Any]:
    """One observation record as the scanner writes it."""
    address = f"127.60.0.{host}"
    return {
        "target": address,
        "key": f"{address}:443",
        "address": address,
        "port": 443,
        "status": "exchange",
        "error": None,
        "build": "15.1.2176.2" if host % 2 else "15.2.792.3",
        "build_source": "x-owa-version",
        "cu_only": False,
        "probes": {},
        "fe_server": f"EXCH{host:02d}",
        "cert_names": [f"mail{host}.example.org"],
        "tags": {"country": "NL" if host % 2 else "BE"},
        "time": (DAY0 + timedelta(days=day, minutes=host)).isoformat(),
        "waves": {w: _verdict(plan_state(w, day, host), w) for w in WAVES},
    }


def hostile_observation(day: int) -> dict[str, Any]:
    """A server whose answers try to inject markup into whoever renders them."""
    return {
        "target": "127.60.0.13",
        "key": "127.60.0.13:443",
        "address": "127.60.0.13",
        "port": 443,
        "status": "exchange",
        "build": HOSTILE_BUILD,
        "build_source": "x-owa-version",
        "name": HOSTILE_NAME,
        "fe_server": HOSTILE_FE,
        "cert_names": ["<script>alert('cert')</script>"],
        "tags": {"organisation": HOSTILE_TAG},
        "time": (DAY0 + timedelta(days=day, minutes=30)).isoformat(),
        "waves": {
            "proxylogon": {"state": "vulnerable", "reason": "<b>reason</b>", "fix": {"text": "<u>fix</u>"}},
            "proxyshell": _verdict("not_affected", "proxyshell"),
            "proxynotshell": _verdict("not_affected", "proxynotshell"),
        },
    }


def dead_targets(day: int) -> list[dict[str, Any]]:
    return [
        {"target": "127.60.1.1", "key": "127.60.1.1:443", "address": "127.60.1.1", "port": 443,
         "status": "unreachable", "error": "timeout", "time": (DAY0 + timedelta(days=day)).isoformat()},
        {"target": "127.60.1.2", "key": "127.60.1.2:443", "address": "127.60.1.2", "port": 443,
         "status": "not_exchange", "error": None, "time": (DAY0 + timedelta(days=day)).isoformat()},
    ]  # fmt: skip


def finding(hour: int, i: int, *, host: str, excerpt: str = "X-AnonResource-Backend=localhost~1942062522",
            title: str = "ProxyLogon SSRF cookie", confidence: str = "confirmed") -> dict[str, Any]:  # fmt: skip
    return {
        "rule": "proxylogon.ssrf_cookie",
        "wave": "proxylogon",
        "cve": "CVE-2021-26855",
        "confidence": confidence,
        "time": (DAY0 + timedelta(days=1, hours=hour, seconds=i)).isoformat(),
        "title": title,
        "description": "X-AnonResource-Backend cookie in an HttpProxy log",
        "host": host,
        "evidence": {
            "file": "Logging/HttpProxy/Ecp/HttpProxy_2021030909-1.LOG",
            "line": 100 + i,
            "offset": 4096 * i,
            "excerpt": excerpt,
            "sha256": "ab" * 32,
        },
    }


# Host 5 (127.60.0.5): 2 + 4 + 8 confirmed findings over three hours, one "review" finding.
HOST5_CONFIRMED = 14
HOST5_REVIEW = 1


def fill(store: Store) -> None:
    """Three daily scans a week apart, then two hunts, through the store's public API."""
    for day in DAYS:
        scan_id = store.start_scan(
            {"targets": ["127.60.0.0/24"], "day": day}, started_at=DAY0 + timedelta(days=day)
        )
        records = [observation(h, day) for h in HOSTS]
        store.add_observations(scan_id, records[:6])  # in two batches, as a scan writes them
        store.add_observations(scan_id, [*records[6:], hostile_observation(day), *dead_targets(day)])
        store.finish_scan(scan_id, finished_at=DAY0 + timedelta(days=day, hours=1))
    found = [finding(hour, i, host="127.60.0.5") for hour in range(3) for i in range(2 ** (hour + 1))]
    found.append(finding(5, 0, host="127.60.0.5", confidence="review"))
    store.add_hunt(
        "127.60.0.5",
        verdict="compromised",
        coverage={"httpproxy": {"files": 3}},
        findings=found,
        started_at=DAY0 + timedelta(days=15),
    )
    store.add_hunt(
        "127.60.0.13",
        verdict="compromised",
        coverage={},
        findings=[finding(2, 0, host="127.60.0.13", excerpt=HOSTILE_EXCERPT, title=HOSTILE_TITLE)],
        started_at=DAY0 + timedelta(days=15),
    )


class Client:
    """A synchronous face over httpx's AsyncClient on the app's ASGI interface (no server, no socket).

    Cookies set by the app are kept between requests (as a browser keeps them); redirects are not
    followed unless asked; ``address`` is the client address the app sees."""

    def __init__(self, app: Any, host: str = "testserver", address: str = "127.0.0.1") -> None:
        self.app = app
        self.base = f"http://{host}"
        self.address = address
        self.cookies = httpx.Cookies()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(self.address, 50000))
            async with httpx.AsyncClient(
                transport=transport, base_url=self.base, cookies=self.cookies
            ) as client:
                response = await client.request(method, path, **kwargs)
                self.cookies = httpx.Cookies(client.cookies)
                return response

        return asyncio.run(run())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)
