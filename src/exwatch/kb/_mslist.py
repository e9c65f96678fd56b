"""Microsoft's build list (``ExchangeBuildNumbers.csv``): parse and validate it into catalogue rows.

Columns ``Product Name,Build Number,Date,KB,Blog`` (microsoft/Get-ExchangeBuildNumber). Its quirks, all
met in the real copies of May 2025 and August 2026: zero-padded build parts (``15.01.2176.002``,
``8.3.083.6``), ``M/D/YYYY`` and ``MM/DD/YYYY`` dates, empty KB and Blog cells, re-releases named ``v2``/``v3``
(``Aug23SUv2``, ``SP3 RU8v2``), a year tag after the CU (``CU13 (2023H1)``), and 2013 CU4 called ``SP1``.
Pure: text in, rows and errors out.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date

from exwatch.errors import BuildError
from exwatch.kb._build import parse_build
from exwatch.kb._catalogue import CatalogueEntry, product_of

HEADER = ("Product Name", "Build Number", "Date", "KB", "Blog")

_NAME = re.compile(
    r"Exchange(?:\s+Server)?\s+(?P<ver>2000|2003|2007|2010|2013|2016|2019|SE)\b\s*(?P<rest>.*)", re.I
)
_SU = re.compile(r"(?P<su>[A-Z][a-z]{2}\d{2}(?:SU|HU)(?:v\d+)?)")
_LEVEL = re.compile(
    r"(?:(?P<sp>SP\d+)\s*)?(?:(?P<cu>CU\d+|RTM|Preview)\s*)?(?:(?P<ru>RU\d+(?:v\d+)?)\s*)?(?:\(\w+\)\s*)?",
    re.I,
)
_KB = re.compile(r"KB\d{6,8}", re.I)
_DATE = re.compile(r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})")


@dataclass
class ParsedList:
    """Rows read from a Microsoft list, and the bad rows by line number."""

    entries: list[CatalogueEntry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rows: int = 0


def parse_product_name(name: str) -> tuple[str, str, str, str]:
    """``Exchange 2019 CU9 Apr21SU`` -> (product, cu, kind, su_name); ValueError if not recognised."""
    m = _NAME.fullmatch(name.strip())
    if m is None:
        raise ValueError(f"product name {name!r} is not an Exchange product")
    ver = m.group("ver").upper() if m.group("ver").lower() == "se" else m.group("ver")
    product = f"Exchange {ver}"
    rest = m.group("rest").strip()
    su = ""
    su_match = _SU.search(rest)
    if su_match:
        su = su_match.group("su")
        rest = (rest[: su_match.start()] + rest[su_match.end() :]).strip()
    level = _LEVEL.fullmatch(rest)
    if level is None or (rest and not any(level.group(g) for g in ("sp", "cu", "ru"))):
        raise ValueError(f"product name {name!r}: update level {rest!r} not recognised")
    sp, cu, ru = level.group("sp"), level.group("cu"), level.group("ru")
    if cu and cu.upper() == "PREVIEW":
        cu = "Preview"
    if sp and cu and cu.upper() == "RTM":
        cu = None  # "Exchange 2010 SP1 RTM": the service pack's own release is named "SP1"
    label = " ".join(p for p in (sp, cu, ru) if p) or "RTM"
    if su:
        kind = "HU" if su.endswith("HU") or "HUv" in su else "SU"
    elif ru:
        kind = "RU"
    elif cu == "Preview":
        kind = "Preview"
    elif (cu and cu.upper().startswith("CU")) or (sp and product == "Exchange 2013"):
        kind = "CU"  # 2013 SP1 is CU4
    else:
        kind = "RTM"
    return product, label, kind, su


def _parse_date(text: str) -> date:
    text = text.strip()
    m = _DATE.fullmatch(text)
    if m:
        return date(int(m.group("y")), int(m.group("m")), int(m.group("d")))
    return date.fromisoformat(text)


def looks_like_ms_list(header: list[str] | None) -> bool:
    """True if a CSV header is Microsoft's (whitespace and case aside)."""
    if not header:
        return False
    cleaned = tuple(h.strip().lstrip("\ufeff").lower() for h in header)
    return cleaned[: len(HEADER)] == tuple(h.lower() for h in HEADER)


def parse_ms_list(text: str) -> ParsedList:
    """Validate every row; rows that fail are reported as ``line N: why`` and left out.

    The caller decides whether a list with bad rows is imported (the CLI refuses by default).
    Raises ValueError if the text is not Microsoft's CSV at all (wrong header, no rows).
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise ValueError("empty file, not Microsoft's build list") from exc
    if not looks_like_ms_list(header):
        shown = ",".join(header)[:80]
        raise ValueError(
            f"not Microsoft's build list: the header is {shown!r}, expected {','.join(HEADER)!r}"
        )
    out = ParsedList()
    seen: dict[tuple[int, int, int, int], int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            out.rows += 1
            if len(row) < 3 or len(row) > len(HEADER):
                out.errors.append(f"line {line}: {len(row)} columns, expected {len(HEADER)}")
                continue
            cells = [c.strip() for c in row] + [""] * (len(HEADER) - len(row))
            name, build_text, date_text, kb, _blog = cells[:5]
            try:
                product, cu, kind, su = parse_product_name(name)
                build = parse_build(build_text)
                if build.cu_only:
                    raise ValueError(f"build {build_text!r} has no revision")
                released = _parse_date(date_text)
                if kb and not _KB.fullmatch(kb):
                    raise ValueError(f"KB {kb!r} is not KBnnnnnnn")
                if product_of(build) != product:
                    raise ValueError(f"build {build} is {product_of(build)}, the row says {product}")
            except (ValueError, BuildError) as exc:
                out.errors.append(f"line {line}: {exc}")
                continue
            if build.sort_key in seen:
                out.errors.append(f"line {line}: build {build} already on line {seen[build.sort_key]}")
                continue
            seen[build.sort_key] = line
            out.entries.append(
                CatalogueEntry(
                    product=product,
                    cu=cu,
                    build=build,
                    release_date=released,
                    kind=kind,
                    fixes=(),
                    su_name=su,
                    kb=kb.upper(),
                    date_source="MS (imported)",
                    source="imported",
                )
            )
    except csv.Error as exc:
        raise ValueError(f"not a readable CSV (line {reader.line_num}: {exc})") from exc
    if out.rows == 0:
        raise ValueError("Microsoft's build list header but no rows")
    return out
