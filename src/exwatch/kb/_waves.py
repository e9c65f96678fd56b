"""Waves as data: the CVEs of each wave, the products they affect and the update that fixed them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from exwatch.errors import ConfigError
from exwatch.kb._build import Build, parse_build
from exwatch.kb._catalogue import read_data_text


@dataclass(frozen=True, slots=True)
class BuildFix:
    """A fix that is a minimum build of a product with linear rollups (Exchange 2010 RU32)."""

    build: Build
    name: str
    kb: str


@dataclass(frozen=True, slots=True)
class Cve:
    """One CVE of a wave: the products it affects and the update that first fixed it."""

    id: str
    wave: str
    role: str
    affected: tuple[str, ...]
    fixed_by: str  # security update name, e.g. "Mar21SU"
    fixed_in_build: dict[str, BuildFix]


@dataclass(frozen=True, slots=True)
class Wave:
    """A vulnerability wave: id, display name, CVEs, and the day exploitation was first seen."""

    id: str
    name: str
    cves: tuple[str, ...]
    first_exploited: date
    first_exploited_precision: str = "day"
    first_exploited_source: str = ""
    disclosed: date | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """A security update name (``Mar21SU``) with its title, KB, and the CUs it shipped for as a regular SU.

    ``regular_cus`` empty: every package of the update is regular. Otherwise packages for other CUs were
    one-off releases that fixed only this update's own CVEs, and ``one_off_note`` says so.
    """

    name: str
    title: str
    kb: str
    regular_cus: frozenset[tuple[int, int, int]] = frozenset()
    one_off_note: str = ""


@dataclass(frozen=True, slots=True)
class WaveData:
    """Everything ``waves.json`` holds."""

    waves: tuple[Wave, ...]
    cves: dict[str, Cve]
    updates: dict[str, Update]
    end_of_support: dict[str, date | None]
    contains_all_fixes: tuple[str, ...]
    contains_all_fixes_reason: str


def _date(value: Any, where: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"waves.json: {where}: bad date {value!r}") from exc


def parse_waves(text: str) -> WaveData:
    """Parse and check ``waves.json``."""
    try:
        doc = json.loads(text)
        waves: list[Wave] = []
        cves: dict[str, Cve] = {}
        for w in doc["waves"]:
            ids = []
            for c in w["cves"]:
                fixes = {
                    product: BuildFix(parse_build(f["build"]), f["name"], f.get("kb", ""))
                    for product, f in c.get("fixed_in_build", {}).items()
                }
                cve = Cve(c["id"], w["id"], c.get("role", ""), tuple(c["affected"]), c["fixed_by"], fixes)
                if cve.id in cves:
                    raise ConfigError(f"waves.json: {cve.id} appears twice")
                cves[cve.id] = cve
                ids.append(cve.id)
            waves.append(
                Wave(
                    id=w["id"],
                    name=w["name"],
                    cves=tuple(ids),
                    first_exploited=_date(w["first_exploited"], w["id"]),
                    first_exploited_precision=w.get("first_exploited_precision", "day"),
                    first_exploited_source=w.get("first_exploited_source", ""),
                    disclosed=_date(w["disclosed"], w["id"]) if w.get("disclosed") else None,
                )
            )
        updates = {
            name: Update(
                name,
                u["title"],
                u.get("kb", ""),
                frozenset(parse_build(c).cu_key for c in u.get("regular_cus", ())),
                u.get("one_off_note", ""),
            )
            for name, u in doc.get("updates", {}).items()
        }
        eos = {
            p: (_date(v["end_of_support"], p) if v.get("end_of_support") else None)
            for p, v in doc["products"].items()
        }
        allfix = doc.get("contains_all_fixes", {})
        return WaveData(
            tuple(waves),
            cves,
            updates,
            eos,
            tuple(allfix.get("products", ())),
            allfix.get("reason", ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"waves.json: malformed ({exc!r})") from exc


def shipped_waves() -> WaveData:
    """The wave data shipped with exwatch."""
    return parse_waves(read_data_text("waves.json"))
