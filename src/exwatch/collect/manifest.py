"""The collection package: ``exwatch-collection.json`` and the check of every member against it.

A package is a zip whose members are paths relative to the server's system drive root, plus the manifest
at its root: ``{"format": 1, "host", "collected_at", "exchange": {"build", "install_path"}, "files": [{"path",
"size", "sha256", "mtime"}], "skipped": [{"path", "reason"}]}`` and, from this collector, ``listing`` (archives
and dumps found in ProgramData and the temp folders, copied or not) and ``options``.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from exwatch.collect.families import MANIFEST_NAME
from exwatch.errors import InputError

FORMAT = 1
_SHA = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")
# A manifest larger than this is not one this collector wrote (a million files is ~200 MB of JSON).
MAX_MANIFEST_BYTES = 512 * 1024 * 1024


class CollectionError(InputError):
    """A package that is not intact: tampered, incomplete or malformed (exit 2, one line)."""


@dataclass(frozen=True)
class PackageFile:
    """One file copied into the package, as the manifest lists it (``mtime`` as written: ISO 8601)."""

    path: str
    size: int
    sha256: str
    mtime: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "mtime": self.mtime}


@dataclass(frozen=True)
class ListedFile:
    """A file the collector listed (an archive or a dump): its path, size and time; ``copied`` or not."""

    path: str
    size: int
    mtime: str
    copied: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "mtime": self.mtime, "copied": self.copied}


@dataclass
class Manifest:
    """A parsed, well-formed manifest."""

    host: str
    collected_at: datetime
    build: str | None
    install_path: str | None
    files: list[PackageFile]
    skipped: list[dict[str, str]]
    listing: list[ListedFile] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the manifest as read: a free-form JSON document

    def mtime_of(self) -> dict[str, float]:
        return {f.path: parse_time(f.mtime).timestamp() for f in self.files}


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with any number of fraction digits (PowerShell writes up to seven)."""
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}").astimezone(UTC)


def format_time(when: datetime) -> str:
    """The manifest's time layout: UTC, microseconds, ``Z`` (as the script writes it)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_path(path: object) -> str | None:
    """``path`` if it is a plain relative member path (forward slashes, no ``..``, no drive), else None."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path or ":" in path:
        return None
    if path.startswith("/") or path.endswith("/"):
        return None
    parts = PurePosixPath(path).parts
    if any(p in ("", ".", "..") for p in parts) or "/".join(parts) != path:
        return None
    if path == MANIFEST_NAME:
        return None
    return path


def _bad(what: str) -> CollectionError:
    return CollectionError(f"malformed manifest {MANIFEST_NAME}: {what}")


def parse_manifest(data: bytes) -> Manifest:
    """A manifest from its bytes; every problem is a CollectionError naming it."""
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(raw, dict):
        raise _bad("not a JSON object")
    if raw.get("format") != FORMAT:
        raise _bad(f"format {raw.get('format')!r}, this exwatch reads format {FORMAT}")
    host = raw.get("host")
    if not isinstance(host, str) or not host.strip():
        raise _bad("no host")
    try:
        collected = parse_time(str(raw.get("collected_at")))
    except ValueError:
        raise _bad(f"collected_at {raw.get('collected_at')!r} is not an ISO 8601 time") from None
    exchange = raw.get("exchange") or {}
    if not isinstance(exchange, dict):
        raise _bad("exchange is not an object")
    files = raw.get("files")
    if not isinstance(files, list):
        raise _bad("files is not a list")
    seen: set[str] = set()
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise _bad(f"files[{i}] is not an object")
        path = safe_path(f.get("path"))
        if path is None:
            raise _bad(f"files[{i}] path {f.get('path')!r} is not a relative path inside the package")
        if path.lower() in seen:
            raise _bad(f"{path} listed twice")
        seen.add(path.lower())
        size = f.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"{path}: size {size!r} is not a byte count")
        if not isinstance(f.get("sha256"), str) or not _SHA.match(f["sha256"].lower()):
            raise _bad(f"{path}: sha256 {f.get('sha256')!r} is not a SHA-256")
        try:
            parse_time(str(f.get("mtime")))
        except ValueError:
            raise _bad(f"{path}: mtime {f.get('mtime')!r} is not an ISO 8601 time") from None
    skipped = raw.get("skipped", [])
    if not isinstance(skipped, list) or not all(
        isinstance(s, dict) and isinstance(s.get("path"), str) and isinstance(s.get("reason"), str)
        for s in skipped
    ):
        raise _bad("skipped is not a list of {path, reason}")
    listing = raw.get("listing", [])
    if not isinstance(listing, list):
        raise _bad("listing is not a list")
    for i, item in enumerate(listing):
        if not isinstance(item, dict) or safe_path(item.get("path")) is None:
            raise _bad(f"listing[{i}] path is not a relative path inside the package")
        if not isinstance(item.get("size"), int):
            raise _bad(f"listing[{i}] size is not a byte count")
        try:
            parse_time(str(item.get("mtime")))
        except ValueError:
            raise _bad(f"listing[{i}] mtime is not an ISO 8601 time") from None
    build = exchange.get("build")
    install = exchange.get("install_path")
    return Manifest(
        host=host.strip(),
        collected_at=collected,
        build=str(build) if build else None,
        install_path=str(install) if install else None,
        files=[PackageFile(str(f["path"]), int(f["size"]), str(f["sha256"]), str(f["mtime"])) for f in files],
        skipped=skipped,
        listing=[
            ListedFile(str(i["path"]), int(i["size"]), str(i["mtime"]), bool(i.get("copied")))
            for i in listing
        ],
        raw=raw,
    )


def is_collection(path: Path) -> bool:
    """Whether ``path`` is a zip with a collection manifest at its root (cheap: reads the directory only)."""
    if not path.is_file() or not path.name.lower().endswith(".zip"):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(i.filename == MANIFEST_NAME for i in zf.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def read_manifest(zf: zipfile.ZipFile) -> Manifest:
    infos = [i for i in zf.infolist() if i.filename == MANIFEST_NAME]
    if not infos:
        raise CollectionError(f"no {MANIFEST_NAME} at the root of the package: not an exwatch collection")
    if len(infos) > 1:
        raise CollectionError(f"{MANIFEST_NAME} appears {len(infos)} times in the package")
    if infos[0].file_size > MAX_MANIFEST_BYTES:
        raise _bad(f"{infos[0].file_size} bytes, larger than any manifest this collector writes")
    try:
        data = zf.read(infos[0])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CollectionError(f"{MANIFEST_NAME} is damaged: {str(exc)[:120]}") from None
    return parse_manifest(data)


def _member_sha256(zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: int) -> str:
    digest = hashlib.sha256()
    read = 0
    with zf.open(info) as src:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            read += len(block)
            if read > expected:
                break  # never read past what the manifest allows
            digest.update(block)
    if read != expected:
        raise CollectionError(f"{info.filename}: {read} bytes, the manifest says {expected}")
    return digest.hexdigest()


def verify(path: Path) -> Manifest:
    """Check every member of the package at ``path`` against its manifest; return the manifest.

    Raises CollectionError naming the first bad member: an extra member, a missing one, a size or SHA-256
    that differs, a member twice, or a malformed manifest.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CollectionError(f"{path}: not a readable zip ({str(exc)[:120]})") from None
    with zf:
        manifest = read_manifest(zf)
        expected = {f.path: f for f in manifest.files}
        members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            if name == MANIFEST_NAME or (info.is_dir() and info.file_size == 0):
                continue
            if name in members:
                raise CollectionError(f"{name}: member appears twice in the package")
            if name not in expected:
                raise CollectionError(f"{name}: extra member, not in the manifest")
            members[name] = info
        for f in manifest.files:
            member = members.get(f.path)
            if member is None:
                raise CollectionError(f"{f.path}: missing member, listed in the manifest")
            info = member
            if info.file_size != f.size:
                raise CollectionError(f"{f.path}: size {info.file_size} in the zip, {f.size} in the manifest")
            try:
                digest = _member_sha256(zf, info, f.size)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
                raise CollectionError(f"{f.path}: member damaged ({str(exc)[:120]})") from None
            if digest != f.sha256.lower():
                raise CollectionError(f"{f.path}: SHA-256 differs from the manifest")
    return manifest
