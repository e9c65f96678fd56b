"""Triage packages: which folders and archives under a PATH are one host each, and the host's name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exwatch.errors import InputError
from exwatch.hunt.sources.files import is_archive

# Top-level folder names of a collected Windows/Exchange volume: a folder holding one of these is a
# triage package itself, not a folder of packages.
PACKAGE_MARKERS = frozenset(
    {
        "program files",
        "program files (x86)",
        "programdata",
        "windows",
        "inetpub",
        "eventlogs",
        "exchange server",
        "v15",
        "logging",
        "frontend",
        "clientaccess",
        "httpproxy",
        "logs",
    }
)
_PACKAGE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".7z", ".tar")


def package_host(path: Path) -> str:
    """The host a package is named after: its name without the archive suffix (``EXCH01.zip`` ->
    ``EXCH01``); ``localhost`` for a path without a name."""
    name = path.name
    for suffix in _PACKAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name or "localhost"


def _is_package_folder(path: Path) -> bool:
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        raise InputError(f"{path}: cannot list the folder: {exc.strerror or exc}") from exc
    if not entries:
        return True
    for entry in entries:
        if entry.is_dir():
            if entry.name.lower() in PACKAGE_MARKERS:
                return True
        elif not is_archive(entry.name):
            return True
    return False


def find_packages(paths: Sequence[Path]) -> list[Path]:
    """The triage packages (one host each) named by ``paths``.

    A PATH is a package if it is an archive, or a folder that holds files or a volume folder
    (``Program Files``, ``inetpub``, ``Windows``, ...); otherwise it is a folder of packages, and each
    of its sub-folders and archives is one package.
    """
    out: list[Path] = []
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir() and not _is_package_folder(p):
            out.extend(sorted(e for e in p.iterdir() if e.is_dir() or is_archive(e.name)))
        else:
            out.append(p)
    if not out:
        raise InputError("no triage package to hunt")
    names = [package_host(p) for p in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"two packages would be the same host: {', '.join(dupes[:5])} (rename one)")
    return out


def holds_volume_folder(path: Path) -> bool:
    """An archive, or a folder holding a volume folder (``inetpub``, ``Program Files``, ``Logging``, ...)."""
    if not path.is_dir():
        return True
    try:
        return any(e.is_dir() and e.name.lower() in PACKAGE_MARKERS for e in path.iterdir())
    except OSError:
        return False
