"""Shodan exports: the JSON lines of ``shodan download`` (one banner per line, gzip or plain).

Fields read (Shodan banner specification, https://datapedia.shodan.io/ ; the same fields in the
banner schema of the REST and streaming APIs): ``ip_str`` (or the integer ``ip``), ``port``,
``timestamp`` (ISO 8601, UTC without a zone), ``data`` (the raw banner: for HTTP the status line and
headers, sometimes the body), ``http`` (``html``: the body, ``title``), ``ssl`` (present on TLS
services), ``location.country_code``.  A banner that is not HTTP still becomes an observation (``not
Exchange``); a line that is not JSON, or lacks the address, port or time, is counted as malformed.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from exwatch.importers.base import ImportResult, Malformed, Seen, fingerprint, parse_port, parse_time


def split_banner(data: str) -> tuple[int | None, dict[str, str], bytes]:
    """The status, headers and body of a raw HTTP banner (``HTTP/1.1 401 ...\\r\\nName: value...``)."""
    head, sep, body = data.partition("\r\n\r\n")
    if not sep:
        head, sep, body = data.partition("\n\n")
    lines = head.replace("\r\n", "\n").split("\n")
    status: int | None = None
    first = lines[0].strip() if lines else ""
    if first.startswith("HTTP/"):
        parts = first.split(None, 2)
        if len(parts) >= 2 and parts[1].isdigit():
            status = int(parts[1])
    headers: dict[str, str] = {}
    if status is not None:
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon and name.strip() and name.strip().lower() not in (k.lower() for k in headers):
                headers[name.strip()] = value.strip()
    return status, headers, body.encode("utf-8", "surrogateescape") if body else b""


# A banner is one line of Shodan's export, parsed JSON: free-form (every key checked as it is read).
def _address(banner: Mapping[str, Any]) -> str:
    value = banner.get("ip_str")
    if value is None and isinstance(banner.get("ip"), int):
        value = str(ipaddress.ip_address(banner["ip"]))
    if not isinstance(value, str):
        raise Malformed("no ip_str")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError as exc:
        raise Malformed("bad ip_str") from exc


def parse_banner(banner: Any) -> Seen:
    """One banner as an observation; Malformed when it lacks what an observation needs."""
    if not isinstance(banner, dict):
        raise Malformed("not a JSON object")
    address = _address(banner)
    port = parse_port(banner.get("port"))
    when = parse_time(banner.get("timestamp"))
    data = banner.get("data")
    if not isinstance(data, str):
        raise Malformed("no data banner")
    http = banner.get("http") if isinstance(banner.get("http"), dict) else {}
    status, headers, body = split_banner(data)
    html = http.get("html") if isinstance(http, dict) else None
    bodies = [html.encode("utf-8", "replace")] if isinstance(html, str) and html else []
    bodies.append(body)
    fp = fingerprint(status, headers, bodies)
    if isinstance(http, dict) and isinstance(http.get("title"), str):
        fp.title = http["title"][:200]
    shodan_meta = banner.get("_shodan") if isinstance(banner.get("_shodan"), dict) else {}
    module = str((shodan_meta or {}).get("module") or "")
    scheme = "https" if "ssl" in banner or module.startswith("https") else "http"
    location = banner.get("location") if isinstance(banner.get("location"), dict) else {}
    country = (location or {}).get("country_code")
    return Seen(when, address, port, scheme, fp, country if isinstance(country, str) and country else None)


def _open(path: Path) -> IO[str]:
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":  # `shodan download` writes .json.gz
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def read(path: Path, result: ImportResult) -> Iterator[Seen]:
    """The observations of a Shodan JSON-lines export; bad lines are counted in ``result``."""
    with _open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            result.lines += 1
            try:
                banner = json.loads(line)
            except ValueError:
                result.bad(number, "not JSON")
                continue
            try:
                yield parse_banner(banner)
            except Malformed as exc:
                result.bad(number, str(exc))
