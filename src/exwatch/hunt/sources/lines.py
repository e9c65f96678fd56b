"""Pure parsers for one line of Exchange and IIS text logs: headers, CSV and W3C fields, ECP items, times."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime

from exwatch.logformats import HTTPPROXY_FIELDS as _HTTPPROXY_FIELDS

# Sigma's standard webserver field names, mapped to IIS W3C and to HttpProxy fields (log_formats.md 2.3, 6).
W3C_ALIASES = {
    "cs(User-Agent)": "c-useragent",
    "cs(Referer)": "cs-referrer",
    "cs(Cookie)": "cs-cookie",
    "cs-host": "cs-host",
}
HTTPPROXY_WEB_ALIASES = {
    "UrlStem": "cs-uri-stem",
    "UrlQuery": "cs-uri-query",
    "HttpStatus": "sc-status",
    "Method": "cs-method",
    "UserAgent": "c-useragent",
    "ClientIpAddress": "c-ip",
    "AuthenticatedUser": "cs-username",
    "UrlHost": "cs-host",
}

# The 74 HttpProxy fields of Exchange 2016 CU22 (log_formats.md 2.3), used only when a file has no
# ``#Fields:`` line before its data (a truncated or rotated copy).
HTTPPROXY_FIELDS = list(_HTTPPROXY_FIELDS)

_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?")


def parse_fields_header(line: str) -> list[str]:
    """Field names from a ``#Fields:`` line: comma-separated (Exchange) or space-separated (IIS)."""
    body = line.split(":", 1)[1].strip() if ":" in line else ""
    if "," in body:
        return [f.strip() for f in body.split(",")]
    return body.split()


def split_csv(line: str) -> list[str]:
    """Split one Exchange CSV log line; double-quoted values with doubled inner quotes are accepted."""
    if '"' not in line:
        return line.split(",")
    try:
        return next(csv.reader([line], strict=False))
    except (csv.Error, StopIteration):
        return line.split(",")


def split_w3c(line: str) -> list[str]:
    """Split one IIS W3C line; ``-`` marks an empty value."""
    return ["" if v == "-" else v for v in line.split(" ")]


def parse_ecp_eventdata(text: str) -> dict[str, str]:
    """The ``;``-separated ``S:KEY=value`` items of an ECP log's EventData.

    A value may hold single-quoted strings (inner quotes doubled) that contain ``;``; a whole item may
    itself be wrapped in single quotes (log_formats.md 3).
    """
    items: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        if text[i] == "'":
            # A quoted item: read to the closing quote, undoubling inner quotes.
            j = i + 1
            buf: list[str] = []
            while j < n:
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            item = "".join(buf)
            i = j + 1
            while i < n and text[i] != ";":
                i += 1
            i += 1
        else:
            j = i
            quoted = False
            while j < n:
                c = text[j]
                if c == "'":
                    quoted = not quoted
                elif c == ";" and not quoted:
                    break
                j += 1
            item = text[i:j]
            i = j + 1
        key, sep, value = item.partition("=")
        if sep and key.strip():
            items[key.strip()] = value
    return items


def parse_time(text: str) -> datetime | None:
    """The first ISO-8601-like time in ``text``, as an aware UTC datetime (logs write UTC)."""
    m = _ISO.search(text)
    if not m:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        micro = int((frac or "0").ljust(6, "0")[:6])
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo=UTC)
    except ValueError:
        return None


def build_record(family: str, fields: list[str], line: str) -> dict[str, str]:
    """A record (field name -> value) for one data line of a text log of ``family``."""
    if family == "iis":
        values = split_w3c(line)
        rec = dict(zip(fields, values, strict=False))
        for src, dst in W3C_ALIASES.items():
            if src in rec:
                rec[dst] = rec[src].replace("+", " ") if dst == "c-useragent" else rec[src]
        stem, query = rec.get("cs-uri-stem", ""), rec.get("cs-uri-query", "")
        rec["cs-uri"] = f"{stem}?{query}" if query else stem
        return rec
    if family == "oabgenerator":
        rec = {"Message": line}
        m = re.search(r"temporary file\s+'([^']*)'", line, re.IGNORECASE) or re.search(
            r"temporary file\s+(\S+)", line, re.IGNORECASE
        )
        if m:
            rec["TempFilePath"] = m.group(1)
        return rec
    values = split_csv(line)
    rec = dict(zip(fields, values, strict=False))
    if family == "httpproxy":
        for src, dst in HTTPPROXY_WEB_ALIASES.items():
            if src in rec:
                rec[dst] = rec[src]
        q = rec.get("cs-uri-query", "")
        if q.startswith("?"):
            rec["cs-uri-query"] = q[1:]
        stem, query = rec.get("cs-uri-stem", ""), rec.get("cs-uri-query", "")
        rec["cs-uri"] = f"{stem}?{query}" if query else stem
    elif family == "ecp" and "EventData" in rec:
        rec.update(parse_ecp_eventdata(rec["EventData"]))
    return rec


def record_time(family: str, rec: dict[str, str], line: str) -> datetime | None:
    """The time of a record: ``date``+``time`` for IIS, ``DateTime``/``TimeStamp`` for Exchange logs."""
    if family == "iis" and "date" in rec and "time" in rec:
        return parse_time(f"{rec['date']}T{rec['time']}")
    for key in ("DateTime", "TimeStamp", "date-time"):
        if rec.get(key):
            t = parse_time(rec[key])
            if t:
                return t
    return parse_time(line[:200])


def keyword_text(rec: dict[str, str]) -> str:
    """The text Sigma keywords are searched in: every value, space-separated."""
    return " ".join(rec.values())
