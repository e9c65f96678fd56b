"""The collection run in Python over a mounted system drive (or a lab triage tree), by the same data and rules
the PowerShell script follows: which files, in which order, what the budget leaves out, the manifest.

It is the reference the script is tested against (no Windows machine runs the tests), and it collects from a
disk image mounted on Linux: ``exwatch collect tree MOUNT --out ZIP``.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from exwatch.collect.families import MANIFEST_NAME, Family, families, package_path
from exwatch.collect.manifest import FORMAT, ListedFile, Manifest, PackageFile, format_time, parse_manifest

DEFAULT_INSTALL = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"
APPHOST = "Windows/System32/inetsrv/config/applicationHost.config"
DEFAULT_IIS_LOGS = "%SystemDrive%\\inetpub\\logs\\LogFiles"
_ENV = re.compile(r"%([^%]+)%")


@dataclass
class Candidate:
    """A file the rules selected: its package path, source, size, mtime and how it is taken."""

    path: str  # in the package
    source: Path
    size: int
    mtime: float
    family: Family
    tier: int  # 0 always first, 1 event logs, 2 bounded logs (newest first)


def _expand(text: str, env: dict[str, str]) -> str:
    return _ENV.sub(lambda m: env.get(m.group(1).lower(), m.group(0)), text)


def iis_log_folders(root: Path, system_drive: str = "C:") -> list[str]:
    """The Windows log folder of every IIS site (``<logFile directory>\\W3SVC<id>``) from applicationHost.config;
    the default directory when the file or the attribute is absent. Mirrors ``Get-IisLogFolders``."""
    from lxml import etree

    env = {
        "systemdrive": system_drive,
        "windir": f"{system_drive}\\Windows",
        "systemroot": f"{system_drive}\\Windows",
    }
    config = root / APPHOST
    default = DEFAULT_IIS_LOGS
    sites: list[tuple[str, str | None]] = []
    if config.is_file():
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        top = etree.parse(str(config), parser).getroot()
        sites_el = top.find("system.applicationHost/sites")
        if sites_el is not None:
            defaults = sites_el.find("siteDefaults/logFile")
            if defaults is not None and defaults.get("directory"):
                default = str(defaults.get("directory"))
            for site in sites_el.findall("site"):
                sid = site.get("id")
                own = site.find("logFile")
                if sid:
                    sites.append(
                        (
                            str(sid),
                            str(own.get("directory")) if own is not None and own.get("directory") else None,
                        )
                    )
    out = []
    for sid, own in sites:
        folder = _expand(own or default, env).rstrip("\\")
        out.append(f"{folder}\\W3SVC{sid}")
    return out


def _bases(root: Path, install: str, system_drive: str) -> dict[str, list[Path]]:
    def local(win: str) -> Path:
        return root / package_path(win, system_drive)

    users = root / "Users"
    return {
        "exchange": [local(install)],
        "iis_logs": [local(f) for f in iis_log_folders(root, system_drive)],
        "system_drive": [root],
        "windir": [root / "Windows"],
        "programdata": [root / "ProgramData"],
        "user_profiles": sorted(p for p in users.iterdir() if p.is_dir()) if users.is_dir() else [],
    }


def _files_under(folder: Path, recurse: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    if not recurse:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out.extend(Path(dirpath) / n for n in sorted(filenames))
    return [p for p in out if p.is_file() and not p.is_symlink()]


def _event_sources(root: Path, fam: Family) -> list[tuple[str, Path | None, str]]:
    """(channel file, source or None, package path) per channel: a mounted disk's winevt\\Logs file, or an
    already exported triage's ``EventLogs/<file>.evtx|.xml``."""
    out: list[tuple[str, Path | None, str]] = []
    logs = root / "Windows/System32/winevt/Logs"
    for ch in fam.channels:
        found: tuple[Path, str] | None = None
        native = logs / (ch.channel.replace("/", "%4") + ".evtx")
        if native.is_file():
            found = (native, f"{fam.folder}/{ch.file}.evtx")
        else:
            for ext in (".evtx", ".xml"):
                p = root / fam.folder / (ch.file + ext)
                if p.is_file():
                    found = (p, f"{fam.folder}/{ch.file}{ext}")
                    break
        if found:
            out.append((ch.file, found[0], found[1]))
        else:
            out.append((ch.file, None, f"{fam.folder}/{ch.file}.evtx"))
    return out


def select(
    root: Path,
    *,
    install: str = DEFAULT_INSTALL,
    system_drive: str = "C:",
    since: datetime | None = None,
    max_bytes: int | None = None,
    exclude: Path | None = None,
) -> tuple[list[Candidate], list[dict[str, str]], list[ListedFile]]:
    """What a collection of ``root`` takes: (files in the order they are written, skipped, listing)."""
    bases = _bases(root, install, system_drive)
    taken: dict[str, Candidate] = {}
    skipped: list[dict[str, str]] = []
    listing: list[ListedFile] = []
    excluded = exclude.resolve() if exclude else None
    for fam in families():
        if fam.kind == "eventlog":
            for _file, src, pkg in _event_sources(root, fam):
                if src is None:
                    skipped.append({"path": pkg, "reason": "channel absent"})
                    continue
                st = src.stat()
                taken.setdefault(pkg.lower(), Candidate(pkg, src, st.st_size, st.st_mtime, fam, 1))
            continue
        for base in bases[fam.base]:
            for sub in fam.paths:
                folder = base / sub if sub else base
                if not folder.is_dir():
                    if fam.bounded:
                        skipped.append({"path": _rel(root, folder), "reason": "folder not found"})
                    continue
                for p in _files_under(folder, fam.recurse):
                    if not fam.matches(p.name) or (excluded and p.resolve() == excluded):
                        continue
                    rel = _rel(root, p)
                    if rel.lower() in taken or rel == MANIFEST_NAME:
                        continue
                    st = p.stat()
                    if fam.kind == "listing":
                        copied = fam.copies(p.name, st.st_size)
                        mtime = format_time(datetime.fromtimestamp(st.st_mtime, UTC))
                        listing.append(ListedFile(rel, st.st_size, mtime, copied))
                        if not copied:
                            taken[rel.lower()] = Candidate(rel, p, st.st_size, st.st_mtime, fam, -1)
                            continue
                    tier = 2 if fam.bounded else 0
                    taken[rel.lower()] = Candidate(rel, p, st.st_size, st.st_mtime, fam, tier)
    chosen = [c for c in taken.values() if c.tier >= 0]
    files, budget_skipped = admit(chosen, since=since, max_bytes=max_bytes)
    # A listed file that could have been copied but did not fit is no longer marked copied.
    kept = {c.path for c in files}
    listing = [replace(i, copied=False) if i.copied and i.path not in kept else i for i in listing]
    return files, skipped + budget_skipped, listing


def admit(
    candidates: list[Candidate], *, since: datetime | None, max_bytes: int | None
) -> tuple[list[Candidate], list[dict[str, str]]]:
    """The budget, as the script applies it: unbounded families first (family order, then path), then the
    event logs, then the bounded logs newest first; --since drops bounded logs last written before it; the
    first bounded log that does not fit under --max-bytes is left out with every older one."""
    order = {f.name: i for i, f in enumerate(families())}
    t0 = sorted((c for c in candidates if c.tier == 0), key=lambda c: (order[c.family.name], c.path))
    t1 = sorted((c for c in candidates if c.tier == 1), key=lambda c: c.path)
    t2 = sorted((c for c in candidates if c.tier == 2), key=lambda c: (-c.mtime, c.path))
    total = 0
    out: list[Candidate] = []
    skipped: list[dict[str, str]] = []
    for c in [*t0, *t1]:
        if max_bytes is not None and total + c.size > max_bytes:
            skipped.append({"path": c.path, "reason": "max_bytes"})
            continue
        total += c.size
        out.append(c)
    full = False
    for c in t2:
        if since is not None and c.mtime < since.timestamp():
            skipped.append({"path": c.path, "reason": "older than --since"})
            continue
        if full or (max_bytes is not None and total + c.size > max_bytes):
            full = True
            skipped.append({"path": c.path, "reason": "max_bytes"})
            continue
        total += c.size
        out.append(c)
    return out, skipped


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def collect_tree(
    root: Path,
    out: Path,
    *,
    host: str,
    install: str = DEFAULT_INSTALL,
    build: str | None = None,
    system_drive: str = "C:",
    since: datetime | None = None,
    max_bytes: int | None = None,
    collected_at: datetime | None = None,
) -> Manifest:
    """Collect ``root`` into the zip ``out`` (members, then the manifest last); return the manifest."""
    files, skipped, listing = select(
        root, install=install, system_drive=system_drive, since=since, max_bytes=max_bytes, exclude=out
    )
    entries: list[PackageFile] = []
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for c in files:
            mtime = datetime.fromtimestamp(c.mtime, UTC)
            info = zipfile.ZipInfo(c.path, date_time=_dos_time(mtime))
            info.compress_type = zipfile.ZIP_DEFLATED
            digest = hashlib.sha256()
            size = 0
            try:
                with c.source.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        dst.write(block)
                        size += len(block)
            except OSError as exc:
                skipped.append({"path": c.path, "reason": f"unreadable: {exc.strerror or exc}"})
                continue
            entries.append(PackageFile(c.path, size, digest.hexdigest(), format_time(mtime)))
        document = {
            "format": FORMAT,
            "host": host,
            "collected_at": format_time(collected_at or datetime.now(UTC)),
            "exchange": {"build": build, "install_path": install},
            "files": [e.to_dict() for e in entries],
            "skipped": skipped,
            "listing": [i.to_dict() for i in listing],
            "options": {
                "since": format_time(since) if since else None,
                "max_bytes": max_bytes,
                "collector": "exwatch reference",
            },
        }
        import json

        data = json.dumps(document, indent=1)
        zf.writestr(MANIFEST_NAME, data)
    tmp.replace(out)
    return parse_manifest(data.encode("utf-8"))


def _dos_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    if when.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)
