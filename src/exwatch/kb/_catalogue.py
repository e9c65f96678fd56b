"""The build catalogue: shipped rows merged with the user's imported Microsoft list, indexed for lookups."""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from importlib import resources

from exwatch.errors import ConfigError
from exwatch.kb._build import Build, parse_build

PRODUCTS = (
    "Exchange 2000",
    "Exchange 2003",
    "Exchange 2007",
    "Exchange 2010",
    "Exchange 2013",
    "Exchange 2016",
    "Exchange 2019",
    "Exchange SE",
)
UNKNOWN_PRODUCT = "Unknown"

# builds.md section 1: 15.2 builds from 2562 on are Exchange SE (the rule of CSS-Exchange's
# Get-ExchangeBuildVersionInformation.ps1); SE RTM is 15.2.2562.17.
SE_FIRST_BUILD = 2562


def product_of(b: Build) -> str:
    """The product a build belongs to, from its numbers alone (``"Unknown"`` for other versions)."""
    if b.major == 15:
        if b.minor == 0:
            return "Exchange 2013"
        if b.minor == 1:
            return "Exchange 2016"
        if b.minor == 2:
            return "Exchange SE" if b.build >= SE_FIRST_BUILD else "Exchange 2019"
        return UNKNOWN_PRODUCT
    if b.major == 14:
        return "Exchange 2010"
    if b.major == 8:
        return "Exchange 2007"
    if b.major == 6 and b.minor == 5:
        return "Exchange 2003"
    if b.major == 6 and b.minor == 0:
        return "Exchange 2000"
    return UNKNOWN_PRODUCT


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One published build: its product, CU (or SP/RU level), date, kind and the tracked CVEs it fixes."""

    product: str
    cu: str
    build: Build
    release_date: date
    kind: str  # RTM, CU, SU, HU, RU, Preview
    fixes: tuple[str, ...]
    su_name: str
    kb: str
    date_source: str = "MS"
    source: str = "shipped"  # shipped | imported

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "product": self.product,
            "cu": self.cu,
            "build": str(self.build),
            "release_date": self.release_date.isoformat(),
            "kind": self.kind,
            "su_name": self.su_name,
            "kb": self.kb,
            "fixes": list(self.fixes),
            "date_source": self.date_source,
            "source": self.source,
        }


SHIPPED_COLUMNS = ("product", "cu", "build", "release_date", "kind", "fixes", "su_name", "kb", "date_source")


def read_data_text(name: str) -> str:
    """The text of a package data file under ``exwatch/kb/data``."""
    return resources.files("exwatch.kb").joinpath("data", name).read_text(encoding="utf-8")


def parse_catalogue_csv(text: str, *, source: str, origin: str) -> list[CatalogueEntry]:
    """Rows of a catalogue CSV (the shipped schema; ``fixes`` is ignored and recomputed)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [
        c for c in ("product", "cu", "build", "release_date", "kind") if c not in (reader.fieldnames or [])
    ]
    if missing:
        raise ConfigError(f"{origin}: not a catalogue file (missing columns: {', '.join(missing)})")
    entries = []
    for row in reader:
        line = reader.line_num
        try:
            entries.append(
                CatalogueEntry(
                    product=row["product"],
                    cu=row["cu"],
                    build=parse_build(row["build"]),
                    release_date=date.fromisoformat(row["release_date"]),
                    kind=row["kind"],
                    fixes=(),
                    su_name=row.get("su_name") or "",
                    kb=row.get("kb") or "",
                    date_source=row.get("date_source") or "MS",
                    source=source,
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{origin}: line {line}: bad catalogue row ({exc})") from exc
    return entries


def shipped_entries() -> list[CatalogueEntry]:
    """The catalogue shipped with exwatch (package data ``builds.csv``)."""
    return parse_catalogue_csv(read_data_text("builds.csv"), source="shipped", origin="builds.csv")


def merge(shipped: Iterable[CatalogueEntry], imported: Iterable[CatalogueEntry]) -> list[CatalogueEntry]:
    """Shipped rows overlaid by imported ones: the imported copy wins for a build present in both."""
    by_build: dict[Build, CatalogueEntry] = {e.build: e for e in shipped}
    for entry in imported:
        by_build[entry.build] = entry
    return sorted(by_build.values(), key=lambda e: e.build.sort_key)


@dataclass(frozen=True, slots=True)
class CuInfo:
    """One CU of one product: its name and its builds in ascending order."""

    product: str
    name: str
    key: tuple[int, int, int]
    builds: tuple[CatalogueEntry, ...]
    release: CatalogueEntry  # the CU's own release row (CU, RTM or RU; a preview only if nothing else)


class Catalogue:
    """Indexes over the catalogue: by exact build, by CU, and each product's CUs in order (for bisect)."""

    def __init__(self, entries: Sequence[CatalogueEntry]) -> None:
        self.entries: tuple[CatalogueEntry, ...] = tuple(sorted(entries, key=lambda e: e.build.sort_key))
        self.by_build: dict[Build, CatalogueEntry] = {e.build: e for e in self.entries}
        groups: dict[tuple[int, int, int], list[CatalogueEntry]] = {}
        for e in self.entries:
            groups.setdefault(e.build.cu_key, []).append(e)
        self.cus: dict[tuple[int, int, int], CuInfo] = {}
        per_product: dict[str, list[tuple[int, int, int]]] = {}
        for key, group in groups.items():
            # Name the CU after its release row; 2016 Preview and RTM share 15.1.225, RTM names it.
            release = next((e for e in group if e.kind in ("CU", "RTM", "RU")), group[0])
            info = CuInfo(release.product, release.cu, key, tuple(group), release)
            self.cus[key] = info
            per_product.setdefault(product_of(group[0].build), []).append(key)
        self.product_cus: dict[str, list[tuple[int, int, int]]] = {
            p: sorted(k) for p, k in per_product.items()
        }
        self.latest_date: date | None = max((e.release_date for e in self.entries), default=None)

    def __len__(self) -> int:
        return len(self.entries)

    def cu(self, b: Build) -> CuInfo | None:
        """The CU of a build, if the catalogue knows it."""
        return self.cus.get(b.cu_key)

    def next_cu(self, product: str, key: tuple[int, int, int]) -> CuInfo | None:
        """The first known CU of ``product`` strictly after ``key`` (O(log n))."""
        keys = self.product_cus.get(product, [])
        i = bisect.bisect_right(keys, key)
        return self.cus[keys[i]] if i < len(keys) else None

    def previous_cu(self, product: str, key: tuple[int, int, int]) -> CuInfo | None:
        """The last known CU of ``product`` strictly before ``key`` (O(log n))."""
        keys = self.product_cus.get(product, [])
        i = bisect.bisect_left(keys, key)
        return self.cus[keys[i - 1]] if i > 0 else None

    def nearest_lower(self, b: Build) -> CatalogueEntry | None:
        """The highest known build of b's CU at or below b (None if b is below the CU's first build)."""
        info = self.cus.get(b.cu_key)
        if info is None or b.revision is None:
            return None
        revisions = [e.build.sort_key for e in info.builds]
        i = bisect.bisect_right(revisions, b.sort_key)
        return info.builds[i - 1] if i > 0 else None

    def builds_for_cu(self, b: Build) -> list[Build]:
        """Every full build sharing b's ``major.minor.build``, newest first."""
        info = self.cus.get(b.cu_key)
        if info is None:
            return []
        return [e.build for e in reversed(info.builds)]

    def with_fixes(self, fixes: dict[Build, tuple[str, ...]]) -> Catalogue:
        """A copy whose entries carry the computed ``fixes``."""
        return Catalogue([replace(e, fixes=fixes.get(e.build, ())) for e in self.entries])
