"""File trees and archives: walk the evidence, classify each file, expand archives within limits.

Archives (.zip, .7z, .tar, .tar.gz/.tgz, .gz) are expanded into a private temp dir with hard limits
against bombs: total and per-member uncompressed size, compression ratio, member count and nesting depth.
Members keep their path inside the archive, so evidence paths stay relative to what the user gave.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from exwatch.hunt.model import ArchiveLimits, FileError

ARCHIVE_SUFFIXES = (".zip", ".7z", ".tar", ".tar.gz", ".tgz", ".gz")


@dataclass(frozen=True)
class EvidenceFile:
    """One file to hunt: where it is on disk, its path relative to the user's PATH, its family."""

    path: str
    rel: str
    family: str
    size: int
    mtime: float


def is_archive(name: str) -> bool:
    low = name.lower()
    return low.endswith(ARCHIVE_SUFFIXES)


def classify(path: Path, rel: str, head: bytes) -> str:
    """The family of a file: httpproxy, ecp, ecp_activity, oabgenerator, iis, evtx, evtx_xml or file."""
    low = rel.lower().replace("\\", "/")
    name = low.rsplit("/", 1)[-1]
    if head.startswith(b"ElfFile\x00") or name.endswith(".evtx"):
        return "evtx"
    text = head[:2048].replace(b"\x00", b"").lower()
    if b"#log-type: httpproxy" in text or (
        "/httpproxy/" in f"/{low}" and name.endswith(".log") and "/logging/" in f"/{low}"
    ):
        return "httpproxy"
    if b"#log-type: ecp server" in text or ("/ecp/server/" in f"/{low}" and name.endswith(".log")):
        return "ecp"
    if b"#log-type: ecp activity" in text or "/ecp/activity/" in f"/{low}":
        return "ecp_activity"
    if "oabgeneratorlog" in low and name.endswith((".log", ".txt")):
        return "oabgenerator"
    if b"#software: microsoft internet information services" in text or (
        "/w3svc" in f"/{low}" and name.endswith(".log")
    ):
        return "iis"
    if b"#log-type: httpproxy" in text:
        return "httpproxy"
    if name.endswith(".xml") and (b"<event " in text or b"<event>" in text or b"<events" in text):
        return "evtx_xml"
    if name.endswith(".log") and b"#fields:" in text and b"#log-type:" in text:
        return "exchange_log"
    return "file"


def _rel(base: Path, p: Path, prefix: str) -> str:
    try:
        r = p.relative_to(base).as_posix()
    except ValueError:
        r = p.name
    if r == ".":
        r = p.name
    return f"{prefix}{r}" if prefix else r


def walk(
    root: Path,
    tmp_root: str,
    limits: ArchiveLimits,
    errors: list[FileError],
    *,
    prefix: str = "",
    depth: int = 0,
) -> Iterator[EvidenceFile]:
    """Every evidence file under ``root`` (a folder, a file or an archive); problems go to ``errors``."""
    base = root if root.is_dir() else root.parent
    visited: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        p = stack.pop()
        rel = _rel(base, p, prefix)
        try:
            st = p.stat()
        except OSError as exc:
            kind = "dangling_symlink" if p.is_symlink() else "unreadable"
            errors.append(FileError(rel, f"cannot read {rel}: {exc.strerror or exc}", kind))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:
                errors.append(FileError(rel, f"{rel}: symlink loop, folder already visited", "symlink_loop"))
                continue
            visited.add(key)
            try:
                entries = sorted(os.scandir(p), key=lambda e: e.name, reverse=True)
            except OSError as exc:
                errors.append(FileError(rel, f"cannot list {rel}: {exc.strerror or exc}", "unreadable"))
                continue
            stack.extend(Path(e.path) for e in entries)
            continue
        if not stat.S_ISREG(st.st_mode):
            errors.append(
                FileError(rel, f"{rel}: not a regular file (FIFO, socket or device), skipped", "not_regular")
            )
            continue
        try:
            with p.open("rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            errors.append(FileError(rel, f"cannot read {rel}: {exc.strerror or exc}", "unreadable"))
            continue
        if is_archive(p.name):
            if depth >= limits.max_depth:
                errors.append(
                    FileError(
                        rel,
                        f"{rel}: archive nested deeper than {limits.max_depth} levels, not opened",
                        "archive_limit",
                    )
                )
                continue
            top = p == root and depth == 0 and not prefix
            if not top:
                # The archive is evidence too (its name, place and hash), not only its members.
                yield EvidenceFile(str(p), rel, "file", st.st_size, st.st_mtime)
            yield from expand_archive(p, rel, tmp_root, limits, errors, depth=depth + 1, top=top)
            continue
        yield EvidenceFile(str(p), rel, classify(p, rel, head), st.st_size, st.st_mtime)


class _Budget:
    def __init__(self, limits: ArchiveLimits, compressed: int) -> None:
        self.limits = limits
        self.compressed = max(compressed, 1)
        self.total = 0
        self.members = 0

    def check(self, rel: str) -> str | None:
        lim = self.limits
        if self.members > lim.max_members:
            return f"{rel}: more than {lim.max_members} members (archive bomb?), stopped"
        if self.total > lim.max_total_bytes:
            return f"{rel}: expands to more than {lim.max_total_bytes} bytes (archive bomb?), stopped"
        if self.total > lim.ratio_floor_bytes and self.total / self.compressed > lim.max_ratio:
            return f"{rel}: compression ratio above {lim.max_ratio:.0f}:1 (archive bomb?), stopped"
        return None


def _copy_limited(src: object, dst: Path, budget: _Budget, rel: str) -> str | None:
    with dst.open("wb") as out:
        while True:
            block = src.read(1024 * 1024)  # type: ignore[attr-defined]
            if not block:
                return None
            out.write(block)
            budget.total += len(block)
            if out.tell() > budget.limits.max_member_bytes:
                return f"{rel}: member larger than {budget.limits.max_member_bytes} bytes, stopped"
            err = budget.check(rel)
            if err:
                return err


def _safe_member(name: str) -> str | None:
    parts = [x for x in PurePosixPath(name.replace("\\", "/")).parts if x not in ("", ".", "/")]
    if not parts or any(x == ".." for x in parts):
        return None
    return "/".join(parts)


def expand_archive(
    path: Path,
    rel: str,
    tmp_root: str,
    limits: ArchiveLimits,
    errors: list[FileError],
    *,
    depth: int,
    top: bool = False,
) -> Iterator[EvidenceFile]:
    """Expand one archive into a temp dir within ``limits`` and walk what came out."""
    out_dir = Path(tempfile.mkdtemp(prefix="arc-", dir=tmp_root))
    budget = _Budget(limits, path.stat().st_size)
    low = path.name.lower()
    stopped: str | None = None
    try:
        if low.endswith(".zip"):
            stopped = _expand_zip(path, rel, out_dir, budget)
        elif low.endswith(".7z"):
            stopped = _expand_7z(path, rel, out_dir, budget)
        elif low.endswith((".tar", ".tar.gz", ".tgz")):
            stopped = _expand_tar(path, rel, out_dir, budget)
        elif low.endswith(".gz"):
            member = out_dir / path.name[:-3]
            with gzip.open(path, "rb") as src:
                stopped = _copy_limited(src, member, budget, rel)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, ValueError, RuntimeError) as exc:
        stopped = (
            f"{rel}: damaged archive ({type(exc).__name__}: {str(exc)[:160]}); members read so far are hunted"
        )
    except Exception as exc:  # py7zr raises its own exception types
        stopped = (
            f"{rel}: damaged archive ({type(exc).__name__}: {str(exc)[:160]}); members read so far are hunted"
        )
    if stopped:
        errors.append(FileError(rel, stopped, "archive"))
    inner_prefix = "" if top else f"{rel}!/"
    yield from walk(out_dir, tmp_root, limits, errors, prefix=inner_prefix, depth=depth)


def _expand_zip(path: Path, rel: str, out_dir: Path, budget: _Budget) -> str | None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            budget.members += 1
            if info.is_dir():
                continue
            name = _safe_member(info.filename)
            if name is None:
                continue
            dst = out_dir / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src:
                    err = _copy_limited(src, dst, budget, rel)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
                return f"{rel}: member {info.filename} damaged ({type(exc).__name__}: {str(exc)[:120]}); other members hunted"
            if err:
                return err
            _set_mtime(dst, info.date_time)
    return None


def _set_mtime(dst: Path, date_time: tuple[int, ...]) -> None:
    import calendar

    try:
        ts = calendar.timegm((*date_time[:6], 0, 0, 0))
        os.utime(dst, (ts, ts))
    except (OverflowError, ValueError, OSError):
        pass


def _expand_tar(path: Path, rel: str, out_dir: Path, budget: _Budget) -> str | None:
    with tarfile.open(path, "r:*") as tf:
        for member in tf:
            budget.members += 1
            if budget.members > budget.limits.max_members:
                return budget.check(rel)
            if not member.isfile():
                continue
            name = _safe_member(member.name)
            if name is None:
                continue
            dst = out_dir / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            if src is None:
                continue
            err = _copy_limited(src, dst, budget, rel)
            if err:
                return err
            try:
                os.utime(dst, (member.mtime, member.mtime))
            except (OverflowError, OSError):
                pass
    return None


class _ArchiveBomb(Exception):
    """Raised from inside py7zr's extraction when the real output passes a limit."""


def _limited_7z_factory(out_dir: Path, budget: _Budget, rel: str) -> Any:
    """A py7zr writer factory that writes each member to ``out_dir`` and counts the bytes really written,
    so an archive whose headers lie about its sizes is stopped while it expands, not after."""
    import py7zr.io

    class LimitedWriter(py7zr.io.Py7zIO):
        def __init__(self, name: str) -> None:
            # py7zr hands over the output path it computed (absolute, under out_dir) or the member name.
            given = Path(name)
            safe: str | None
            if given.is_absolute():
                try:
                    safe = _safe_member(given.resolve().relative_to(out_dir.resolve()).as_posix())
                except ValueError:
                    safe = None  # outside the extraction folder: never written
            else:
                safe = _safe_member(name)
            self.path = out_dir / safe if safe else None
            self.fh: Any = None
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.fh = self.path.open("wb")
            self.length = 0

        def write(self, s: bytes | bytearray) -> int:
            self.length += len(s)
            budget.total += len(s)
            if self.length > budget.limits.max_member_bytes:
                raise _ArchiveBomb(
                    f"{rel}: member larger than {budget.limits.max_member_bytes} bytes, stopped"
                )
            err = budget.check(rel)
            if err:
                raise _ArchiveBomb(err)
            if self.fh is not None:
                self.fh.write(s)
            return len(s)

        def read(self, size: int | None = None) -> bytes:
            return b""

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.length

        def flush(self) -> None:
            if self.fh is not None:
                self.fh.flush()

        def size(self) -> int:
            return self.length

        def close(self) -> None:
            if self.fh is not None:
                self.fh.close()
                self.fh = None

    class Factory(py7zr.io.WriterFactory):
        def create(self, filename: str) -> py7zr.io.Py7zIO:
            return LimitedWriter(filename)

    return Factory()


def _expand_7z(path: Path, rel: str, out_dir: Path, budget: _Budget) -> str | None:
    import py7zr

    with py7zr.SevenZipFile(path, mode="r") as zf:
        infos = zf.list()
        declared = sum(int(i.uncompressed or 0) for i in infos)
        budget.members = len(infos)
        budget.total = declared
        err = budget.check(rel)
        if err:
            return err
        budget.total = 0
        # The declared sizes may lie: the writers count what really comes out and stop at the limits.
        try:
            zf.extractall(path=out_dir, factory=_limited_7z_factory(out_dir, budget, rel))
        except _ArchiveBomb as exc:
            return str(exc)
    return budget.check(rel)


def cleanup(tmp_root: str) -> None:
    shutil.rmtree(tmp_root, ignore_errors=True)
