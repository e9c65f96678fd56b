"""Write a synthetic ``shodan download`` file of N banners (for the import rate): python make_shodan.py N OUT.

Banners as in the fixture: X-OWA-Version 401s, OWA logon pages with the asset path, nginx pages, and
one line in a thousand broken; addresses from 10.0.0.0/8 over seven days of March 2021.
"""

from __future__ import annotations

import json
import random
import sys

BUILDS = ["15.1.2176.2", "15.1.2176.9", "15.2.792.3", "15.2.792.10", "15.0.1497.2", "15.2.858.5"]


def banner(i: int, rng: random.Random) -> str:
    if i % 1000 == 999:
        return '{"ip_str": "10.0.0.1", "port": 443, "timestamp": '
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    day = 1 + i % 7
    stamp = f"2021-03-{day:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00.000000"
    kind = rng.random()
    if kind < 0.6:
        data = f"HTTP/1.1 401 Unauthorized\r\nServer: Microsoft-IIS/10.0\r\nX-OWA-Version: {rng.choice(BUILDS)}\r\nX-FEServer: EX{i}\r\n\r\n"
        http = {"status": 401, "title": None, "html": ""}
    elif kind < 0.9:
        cu = ".".join(rng.choice(BUILDS).split(".")[:3])
        data = "HTTP/1.1 200 OK\r\nServer: Microsoft-IIS/10.0\r\n\r\n"
        http = {
            "status": 200,
            "title": "Outlook",
            "html": f'<link href="/owa/auth/{cu}/themes/resources/x.css">' + "x" * 2000,
        }
    else:
        data = "HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n"
        http = {"status": 200, "title": "Welcome to nginx!", "html": "<title>Welcome to nginx!</title>"}
    doc = {
        "ip_str": ip,
        "port": 443,
        "transport": "tcp",
        "timestamp": stamp,
        "ssl": {},
        "data": data,
        "http": http,
        "location": {"country_code": rng.choice(["NL", "BE", "DE"])},
    }
    return json.dumps(doc)


def main() -> None:
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(14)
    with open(out, "w") as fh:
        for i in range(n):
            fh.write(banner(i, rng) + "\n")


if __name__ == "__main__":
    main()
