"""The knowledge base: Exchange builds, waves and CVEs, and ``verdict(build)`` per wave. Pure lookups.

Data ships under ``exwatch/kb/data`` (see ``data/SOURCES.md``); ``exwatch kb update`` adds a newer copy
of Microsoft's build list in the user's data directory, which wins for catalogue lookups.
"""

from __future__ import annotations

from datetime import date

from exwatch.kb._build import Build, parse_build
from exwatch.kb._catalogue import PRODUCTS, CatalogueEntry, product_of
from exwatch.kb._current import (
    KnowledgeBase,
    UpdateResult,
    current,
    import_ms_list,
    imported_meta,
    imported_path,
    reload,
)
from exwatch.kb._verdict import CveVerdict, Fix, State, Verdict, WaveVerdict
from exwatch.kb._waves import Cve, Wave, shipped_waves

__all__ = [
    "Build",
    "CatalogueEntry",
    "Cve",
    "CveVerdict",
    "Fix",
    "KnowledgeBase",
    "PRODUCTS",
    "State",
    "UpdateResult",
    "Verdict",
    "WAVES",
    "WAVE_IDS",
    "Wave",
    "WaveVerdict",
    "builds_for_cu",
    "catalogue",
    "cu_name",
    "current",
    "cve",
    "import_ms_list",
    "imported_meta",
    "imported_path",
    "parse_build",
    "product_of",
    "reload",
    "verdict",
    "wave",
]

_WAVE_DATA = shipped_waves()

#: The waves known to exwatch, in order: ProxyLogon, ProxyShell, ProxyNotShell.
WAVES: tuple[Wave, ...] = _WAVE_DATA.waves
#: Their ids, in the same order: every wave list elsewhere in exwatch comes from here.
WAVE_IDS: tuple[str, ...] = tuple(w.id for w in WAVES)
_WAVES_BY_ID = {w.id: w for w in WAVES}


def wave(wave_id: str) -> Wave:
    """The wave with this id (``proxylogon``, ``proxyshell``, ``proxynotshell``); KeyError otherwise."""
    try:
        return _WAVES_BY_ID[wave_id.lower()]
    except KeyError:
        raise KeyError(f"unknown wave {wave_id!r}; known: {', '.join(_WAVES_BY_ID)}") from None


def cve(cve_id: str) -> Cve:
    """A tracked CVE (e.g. ``CVE-2021-26855``): its wave, affected products and fixing update."""
    return _WAVE_DATA.cves[cve_id.upper()]


def verdict(build: str | Build, *, as_of: date | None = None) -> Verdict:
    """Per-wave verdict for a build string or Build; BuildError for a string that is not a build.

    ``as_of``: judge with the knowledge of that day: only the updates and CUs released by then count,
    so a build fixed by a later update is ``vulnerable`` and the fix named is the one available then
    (a CVE with no fix released yet is open, with no fix). Cached per build (and day): a scan calls it
    once per host.
    """
    engine = current().engine_as_of(as_of)
    if isinstance(build, Build):
        return engine.verdict(build)
    return engine.verdict_text(build)


def catalogue() -> list[CatalogueEntry]:
    """Every catalogue build (shipped merged with the imported list), ascending, with what each fixes."""
    return list(current().catalogue.entries)


def builds_for_cu(b: Build) -> list[Build]:
    """Every full catalogue build sharing b's ``major.minor.build``, newest first."""
    return current().catalogue.builds_for_cu(b)


def cu_name(b: Build) -> str | None:
    """The CU (or update level) name of a build, e.g. ``CU19`` or ``SP3 RU32``; None if unknown."""
    kb = current()
    alias = kb.engine.aliases.get(b)
    target = alias[0] if alias and b not in kb.catalogue.by_build else b
    if not target.cu_only:
        entry = kb.catalogue.by_build.get(target)
        if entry is not None:
            return entry.cu
    info = kb.catalogue.cu(target)
    return info.name if info else None
