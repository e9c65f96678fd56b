"""Censys exports: host records from a search export (a JSON array, or JSON lines).

Fields read (Censys host data definitions, https://docs.censys.com/docs/ls-hosts , and the
observation timestamps explained at
https://support.censys.io/hc/en-us/articles/4407300349588-Search-2-0-Troubleshooting-Q-A ):
``ip``; ``services[]`` with ``port``, ``service_name``/``extended_service_name`` (``HTTP``/``HTTPS``),
``observed_at`` (when that service was scanned; the host's ``last_updated_at`` if missing) and
``http.response`` (``status_code``, ``headers``, ``body``, ``html_title``); ``location.country_code``.
Response headers are a map from the header name (Censys writes ``-`` as ``_``: ``X_Owa_Version``) to
``{"headers": [values]}`` (the form its query language filters on as ``value.headers``); a plain
string or list of strings is read too.  Each HTTP service is one observation; a host record without
one is skipped (counted, not malformed).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exwatch.importers.base import ImportResult, Malformed, Seen, fingerprint, parse_port, parse_time


def headers_of(raw: Any) -> dict[str, str]:
    """Censys's header map as plain ``Name: value`` pairs (``X_Owa_Version`` -> ``X-Owa-Version``)."""
    out: dict[str, str] = {}
    if isinstance(raw, list):  # [{"key": ..., "value": ...}] in some exports
        raw = {str(h.get("key")): h.get("value") for h in raw if isinstance(h, dict) and h.get("key")}
    if not isinstance(raw, dict):
        return out
    for name, value in raw.items():
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if isinstance(value, dict):
            value = value.get("headers")
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str)), None)
        if isinstance(value, str):
            out[name.replace("_", "-")] = value
    return out


def parse_host(host: Any) -> tuple[list[Seen], int]:
    """The HTTP services of one host record as observations, and how many services were malformed."""
    if not isinstance(host, dict):
        raise Malformed("not a JSON object")
    value = host.get("ip")
    if not isinstance(value, str):
        raise Malformed("no ip")
    try:
        address = str(ipaddress.ip_address(value.strip()))
    except ValueError as exc:
        raise Malformed("bad ip") from exc
    services = host.get("services")
    if not isinstance(services, list):
        raise Malformed("no services")
    location = host.get("location") if isinstance(host.get("location"), dict) else {}
    country = (location or {}).get("country_code")
    country = country if isinstance(country, str) and country else None
    out: list[Seen] = []
    bad = 0
    for service in services:
        if not isinstance(service, dict):
            bad += 1
            continue
        http = service.get("http")
        name = str(service.get("extended_service_name") or service.get("service_name") or "").upper()
        if not isinstance(http, dict) and name not in ("HTTP", "HTTPS"):
            continue
        try:
            port = parse_port(service.get("port"))
            when = parse_time(service.get("observed_at") or host.get("last_updated_at"))
        except Malformed:
            bad += 1
            continue
        response = (http or {}).get("response") if isinstance(http, dict) else None
        response = response if isinstance(response, dict) else {}
        status = response.get("status_code")
        body = response.get("body")
        fp = fingerprint(
            status if isinstance(status, int) else None,
            headers_of(response.get("headers")),
            [body.encode("utf-8", "replace")] if isinstance(body, str) else [],
        )
        if isinstance(response.get("html_title"), str):
            fp.title = response["html_title"][:200]
        tls = name == "HTTPS" or isinstance(service.get("tls"), dict)
        out.append(Seen(when, address, port, "https" if tls else "http", fp, country))
    return out, bad


def _items(text: str, result: ImportResult) -> Iterator[tuple[int, Any]]:
    """(line number, decoded item) of a JSON array or of JSON lines; undecodable items are counted."""
    decoder = json.JSONDecoder()
    stripped = text.lstrip()
    if not stripped.startswith("["):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError:
                result.lines += 1
                result.bad(number, "not JSON")
        return
    # A JSON array, read item by item so that one broken item does not lose the others.
    pos = text.index("[") + 1
    end = len(text)
    while pos < end:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end or text[pos] == "]":
            return
        number = text.count("\n", 0, pos) + 1
        try:
            item, pos = decoder.raw_decode(text, pos)
        except ValueError:
            result.lines += 1
            result.bad(number, "not JSON")
            # The next item starts on a new line at the broken item's own indentation.
            indent = pos - (text.rfind("\n", 0, pos) + 1)
            found = re.compile(r"\n" + " " * indent + r"\{").search(text, pos + 1)
            if found is None:
                return
            pos = found.end() - 1
            continue
        yield number, item


def read(path: Path, result: ImportResult) -> Iterator[Seen]:
    """The HTTP observations of a Censys export; bad items are counted in ``result``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, item in _items(text, result):
        result.lines += 1
        try:
            seen, bad = parse_host(item)
        except Malformed as exc:
            result.bad(number, str(exc))
            continue
        for _ in range(bad):
            result.bad(number, "malformed service")
        if not seen:
            result.skipped += 1
        yield from seen
