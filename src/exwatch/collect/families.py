"""The evidence families and their locations, read once from ``data/families.json``.

The same data is embedded verbatim in the generated PowerShell script (which interprets it on the server) and
read here by the Python reference collector; the tests compare both with the families ``exwatch hunt`` reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PureWindowsPath
from typing import Any

BASES = ("exchange", "iis_logs", "system_drive", "windir", "programdata", "user_profiles")
KINDS = ("files", "listing", "eventlog")
MANIFEST_NAME = "exwatch-collection.json"


@dataclass(frozen=True)
class Channel:
    """One event log channel and the file name it is exported to (``EventLogs/<file>.evtx``)."""

    channel: str
    file: str
    optional: bool


@dataclass(frozen=True)
class Family:
    """One evidence family: where its files live and which file names belong to it."""

    name: str
    hunt: str  # the family exwatch hunt classifies these files as
    kind: str  # files | listing | eventlog
    base: str = ""
    paths: tuple[str, ...] = ()
    recurse: bool = False
    include: tuple[str, ...] = ()
    bounded: bool = False
    copy_up_to: int | None = None
    never_copy: tuple[str, ...] = ()
    folder: str = ""
    channels: tuple[Channel, ...] = ()

    def matches(self, file_name: str) -> bool:
        """Whether a file name is one of this family's (the include wildcards, case-insensitive)."""
        return any(wildcard(p).match(file_name) for p in self.include)

    def copies(self, file_name: str, size: int) -> bool:
        """Whether a matching file is copied (always for ``files``; bounded by size for ``listing``)."""
        if self.kind != "listing":
            return True
        if any(wildcard(p).match(file_name) for p in self.never_copy):
            return False
        return self.copy_up_to is None or size <= self.copy_up_to


@cache
def wildcard(pattern: str) -> re.Pattern[str]:
    """A file-name wildcard (``*`` and ``?`` only) as PowerShell's ``-like`` reads it, case-insensitive."""
    out = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{out}$", re.IGNORECASE | re.DOTALL)


def data_text() -> str:
    """The families data file, as shipped in the package."""
    return resources.files("exwatch.collect").joinpath("data/families.json").read_text(encoding="utf-8")


def _family(raw: dict[str, Any]) -> Family:
    kind = raw["kind"]
    if kind not in KINDS:
        raise ValueError(f"family {raw.get('name')}: unknown kind {kind!r}")
    if kind != "eventlog" and raw["base"] not in BASES:
        raise ValueError(f"family {raw['name']}: unknown base {raw['base']!r}")
    for pat in [*raw.get("include", []), *raw.get("never_copy", [])]:
        if "[" in pat or "]" in pat:
            raise ValueError(
                f"family {raw['name']}: wildcard {pat!r} uses brackets (only * and ? are allowed)"
            )
    return Family(
        name=raw["name"],
        hunt=raw["hunt"],
        kind=kind,
        base=raw.get("base", ""),
        paths=tuple(raw.get("paths", ())),
        recurse=bool(raw.get("recurse", False)),
        include=tuple(raw.get("include", ())),
        bounded=bool(raw.get("bounded", False)),
        copy_up_to=raw.get("copy_up_to"),
        never_copy=tuple(raw.get("never_copy", ())),
        folder=raw.get("folder", ""),
        channels=tuple(
            Channel(c["channel"], c["file"], bool(c.get("optional", False))) for c in raw.get("channels", ())
        ),
    )


@cache
def families() -> tuple[Family, ...]:
    """Every family, in priority order (a file matched by two families belongs to the first)."""
    data = json.loads(data_text())
    if data.get("format") != 1:
        raise ValueError("families.json: unknown format")
    return tuple(_family(f) for f in data["families"])


def hunt_families() -> set[str]:
    """The hunt families the collector feeds."""
    return {f.hunt for f in families()}


def package_path(windows_path: str, system_drive: str = "C:") -> str:
    """Where a file of the server goes in the package: relative to the system drive root, forward slashes;
    a file on another drive goes under ``_drive_<letter>/``. Mirrors ``PackagePath`` in the script."""
    p = PureWindowsPath(windows_path)
    parts = [x for x in p.parts[1:] if x not in ("", "\\")] if p.drive else list(p.parts)
    drive = p.drive.rstrip(":").upper()
    rel = "/".join(parts)
    if drive and drive != system_drive.rstrip(":").upper():
        return f"_drive_{drive}/{rel}"
    return rel
