"""The build facts the lab needs from exwatch.kb: catalogue builds to draw from, per-CVE states of a build."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date

from exwatch import kb
from exwatch.errors import BuildError

# CVEs per wave, as the kb defines the waves.
WAVE_CVES: dict[str, tuple[str, ...]] = {w.id: tuple(w.cves) for w in kb.WAVES}
# The CVE whose unauthenticated request shape the emulator answers for each wave.
PROBE_CVE: dict[str, str] = {
    "proxylogon": "CVE-2021-26855",
    "proxyshell": "CVE-2021-34473",
    "proxynotshell": "CVE-2022-41040",
}


@dataclass(frozen=True)
class CatalogueBuild:
    """One published build: product, update name, build string, release date."""

    product: str
    cu: str
    build: str
    release_date: date


@dataclass(frozen=True)
class WaveFacts:
    """The kb's answer for one wave of one build: the state and the per-CVE states."""

    state: str
    cves: dict[str, str]


def build_tuple(text: str) -> tuple[int, ...]:
    """'15.01.2176.009' -> (15, 1, 2176, 9); a lab-internal parse of catalogue strings."""
    return tuple(int(p) for p in text.strip().split("."))


def canonical(text: str) -> str:
    """The short dotted form of a full build string; BuildError (an InputError) when it is not one."""
    build = kb.parse_build(text)
    if build.cu_only:
        raise BuildError(
            f"{text!r} names a CU only; an emulated server needs a full build (e.g. 15.1.2176.9)"
        )
    return str(build)


@functools.cache
def catalogue() -> tuple[CatalogueBuild, ...]:
    """Every catalogue build, oldest first."""
    return tuple(
        CatalogueBuild(e.product, e.cu, str(e.build), e.release_date)
        for e in sorted(kb.catalogue(), key=lambda e: e.build)
    )


@functools.cache
def wave_facts(build: str) -> dict[str, WaveFacts]:
    """Per wave: the kb state of ``build`` and its per-CVE states (cached: fleets repeat builds)."""
    waves = kb.verdict(build).waves
    return {
        w: WaveFacts(waves[w].state.value, {c.cve: c.state.value for c in waves[w].cve_verdicts})
        for w in WAVE_CVES
        if w in waves
    }


def cve_vulnerable(build: str, wave: str) -> bool:
    """Does this build carry the flaw that the wave's unauthenticated request shape reaches?"""
    facts = wave_facts(build).get(wave)
    if facts is None:
        return False
    return facts.cves.get(PROBE_CVE[wave]) == "vulnerable"


def product_of(build: str) -> str:
    """Product name of a build (kb's rule, builds.md section 1)."""
    return str(kb.product_of(kb.parse_build(build)))
