"""File trees and archives: walk the evidence, classify each file, expand archives within limits.

The walk never leaves the evidence root: every entry is resolved and compared with the resolved root,
and a link that points outside is refused and listed in the errors (``symlink_outside``).

Archives (.zip, .7z, .tar, .tar.gz/.tgz, .gz) are expanded into a private temp dir. Each member is
written under a plain numbered name (never under its name in the archive), so a member name that is too
long, names a folder that is also a file, or climbs out with ``../`` cannot stop the expansion or write
anywhere else; the member is hunted under its name in the archive (cleaned of ``..``, drive letters and
leading ``/``, which are reported). One budget per PATH, across all nesting, stops bombs: total bytes
written, members, per-member bytes, compression ratio against the archives of the evidence, and depth.
Members are marked ``temp``: the worker deletes each one when it has hunted it.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from exwatch.hunt.model import ArchiveLimits, FileError

ARCHIVE_SUFFIXES = (".zip", ".7z", ".tar", ".tar.gz", ".tgz", ".gz")
# The families (``classify``) of text logs: read line by line through the pre-filter.
TEXT_LOG_FAMILIES = ("httpproxy", "ecp", "ecp_activity", "oabgenerator", "iis", "exchange_log")
# The engine hunts the files walked so far once their members in the temp dir reach this size or count,
# so the temp space of hunted members is given back while the walk goes on.
BATCH_TEMP_BYTES = 256 * 1024**2
BATCH_TEMP_FILES = 4096


@dataclass(frozen=True)
class EvidenceFile:
    """One file to hunt: where it is on disk, its path relative to the user's PATH, its family.

    ``temp`` marks an archive member in the hunt's temp dir: the worker deletes it once hunted."""

    path: str
    rel: str
    family: str
    size: int
    mtime: float
    temp: bool = False


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


def _rel(base: Path, p: Path) -> str:
    try:
        r = p.relative_to(base).as_posix()
    except ValueError:
        r = p.name
    if r == ".":
        r = p.name
    return r


def _inside(real: Path, root: Path) -> bool:
    return real == root or root in real.parents


class _Budget:
    """What the archives of one PATH may expand to, all nesting together."""

    def __init__(self, limits: ArchiveLimits, compressed: int = 0) -> None:
        self.limits = limits
        self.compressed = compressed
        self.total = 0
        self.members = 0

    def check(self, rel: str) -> str | None:
        lim = self.limits
        if self.members > lim.max_members:
            return (
                f"{rel}: more than {lim.max_members} archive members under this PATH (archive bomb?), stopped"
            )
        if self.total > lim.max_total_bytes:
            return f"{rel}: archives under this PATH expand to more than {lim.max_total_bytes} bytes (archive bomb?), stopped"
        if self.total > lim.ratio_floor_bytes and self.total / max(self.compressed, 1) > lim.max_ratio:
            return f"{rel}: compression ratio above {lim.max_ratio:.0f}:1 (archive bomb?), stopped"
        return None


class _Stop(Exception):
    """A limit was passed while expanding: the message says which."""


@dataclass
class _Member:
    path: Path
    name: str
    size: int
    mtime: float


_DRIVE = re.compile(r"^[A-Za-z]:")


def clean_member_name(name: str) -> tuple[str, bool]:
    """The path a member is hunted under, and whether it tried to leave the archive (``..``, absolute,
    drive letter). Backslashes are folder separators (Windows tools write them)."""
    clean, escaped = _clean_once(name)
    while True:  # "/A:" loses its "/" and then shows a drive letter: clean until nothing changes
        again, more = _clean_once(clean)
        if again == clean:
            return clean, escaped
        clean, escaped = again, escaped or more


def _clean_once(name: str) -> tuple[str, bool]:
    text = name.replace("\\", "/")
    escaped = text.startswith("/") or bool(_DRIVE.match(text))
    text = _DRIVE.sub("", text)
    parts = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            escaped = True
            continue
        parts.append(part.replace("\x00", ""))
    return "/".join(p for p in parts if p) or "unnamed", escaped


class _Expansion:
    """Writes the members of one archive as numbered files in ``out_dir``, within the PATH's budget."""

    def __init__(
        self, out_dir: Path, rel: str, budget: _Budget, errors: list[FileError], empty: Path
    ) -> None:
        self.out_dir = out_dir
        self.rel = rel
        self.budget = budget
        self.errors = errors
        self.empty = empty
        self.members: list[_Member] = []

    def count(self) -> None:
        self.budget.members += 1
        err = self.budget.check(self.rel)
        if err:
            raise _Stop(err)

    def name(self, raw: str) -> str:
        clean, escaped = clean_member_name(raw)
        if escaped:
            self.errors.append(
                FileError(
                    self.rel,
                    f"{self.rel}: member {raw!r} has a path that leaves the archive; hunted as {clean!r}",
                    "archive_member",
                )
            )
        return clean

    def bad_member(self, raw: str, exc: BaseException) -> None:
        self.errors.append(
            FileError(
                self.rel,
                f"{self.rel}: member {raw!r} damaged ({type(exc).__name__}: {str(exc)[:120]}); other members hunted",
                "archive_member",
            )
        )

    def add_empty(self, raw: str, mtime: float) -> None:
        self.members.append(_Member(self.empty, self.name(raw), 0, mtime))

    def copy(self, raw: str, src: Any, mtime: float) -> None:
        """Copy one member from the stream ``src``; a limit passed raises _Stop (the part written stays
        and is hunted)."""
        name = self.name(raw)
        dst = self.out_dir / str(len(self.members))
        size = 0
        try:
            with dst.open("xb") as out:
                while True:
                    block = src.read(1024 * 1024)
                    if not block:
                        break
                    out.write(block)
                    size += len(block)
                    self.budget.total += len(block)
                    if size > self.budget.limits.max_member_bytes:
                        raise _Stop(
                            f"{self.rel}: member {raw!r} larger than {self.budget.limits.max_member_bytes} bytes, stopped"
                        )
                    err = self.budget.check(self.rel)
                    if err:
                        raise _Stop(err)
        finally:
            if dst.exists():
                _set_mtime(dst, mtime)
                self.members.append(_Member(dst, name, size, mtime))


def _set_mtime(dst: Path, ts: float) -> None:
    try:
        os.utime(dst, (ts, ts))
    except (OverflowError, ValueError, OSError):
        pass


def _folder_entries(
    p: Path, rel: str, st: os.stat_result, visited: set[tuple[int, int]], errors: list[FileError]
) -> list[Path]:
    """The entries of a folder to walk (in reverse name order, for a stack); none for a folder already
    visited (a loop) or one that cannot be listed."""
    key = (st.st_dev, st.st_ino)
    if key in visited:
        errors.append(FileError(rel, f"{rel}: symlink loop, folder already visited", "symlink_loop"))
        return []
    visited.add(key)
    try:
        entries = sorted(os.scandir(p), key=lambda e: e.name, reverse=True)
    except OSError as exc:
        errors.append(FileError(rel, f"cannot list {rel}: {exc.strerror or exc}", "unreadable"))
        return []
    return [Path(e.path) for e in entries]


def walk(
    root: Path,
    tmp_root: str,
    limits: ArchiveLimits,
    errors: list[FileError],
) -> Iterator[EvidenceFile]:
    """Every evidence file under ``root`` (a folder, a file or an archive); problems go to ``errors``."""
    budget = _Budget(limits)
    empty = Path(tmp_root) / "empty-member"
    base = root if root.is_dir() else root.parent
    try:
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        errors.append(FileError(root.name, f"cannot read {root}: {getattr(exc, 'strerror', None) or exc}"))
        return
    visited: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        p = stack.pop()
        rel = _rel(base, p)
        try:
            real = p.resolve(strict=True)
            st = real.stat()
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) or getattr(exc, "errno", 0) == 40:  # ELOOP
                errors.append(FileError(rel, f"{rel}: symlink loop", "symlink_loop"))
                continue
            kind = "dangling_symlink" if p.is_symlink() else "unreadable"
            errors.append(FileError(rel, f"cannot read {rel}: {getattr(exc, 'strerror', None) or exc}", kind))
            continue
        if not _inside(real, real_root):
            errors.append(
                FileError(
                    rel,
                    f"{rel}: link to {real}, outside the evidence {root}: not followed",
                    "symlink_outside",
                )
            )
            continue
        if stat.S_ISDIR(st.st_mode):
            if p == root or not p.is_symlink():
                stack.extend(_folder_entries(p, rel, st, visited, errors))
            elif real in p.parents or real == p.parent.resolve():
                # A link to a folder of the evidence is not followed: the folder is walked under its own path.
                errors.append(
                    FileError(rel, f"{rel}: symlink loop (link to a folder above it)", "symlink_loop")
                )
            continue
        if not stat.S_ISREG(st.st_mode):
            errors.append(
                FileError(rel, f"{rel}: not a regular file (FIFO, socket or device), skipped", "not_regular")
            )
            continue
        if is_archive(p.name):
            budget.compressed += st.st_size
            top = p == root
            yield from _archive(
                real,
                rel,
                st.st_size,
                st.st_mtime,
                tmp_root,
                budget,
                errors,
                empty,
                depth=1,
                top=top,
                temp=False,
            )
            continue
        try:
            with real.open("rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            errors.append(FileError(rel, f"cannot read {rel}: {exc.strerror or exc}", "unreadable"))
            continue
        yield EvidenceFile(str(real), rel, classify(real, rel, head), st.st_size, st.st_mtime)


def _archive(
    path: Path,
    rel: str,
    size: int,
    mtime: float,
    tmp_root: str,
    budget: _Budget,
    errors: list[FileError],
    empty: Path,
    *,
    depth: int,
    top: bool,
    temp: bool,
) -> Iterator[EvidenceFile]:
    """One archive: the archive itself as evidence (unless it is the PATH), then its members."""
    limits = budget.limits
    members: list[_Member] = []
    if depth > limits.max_depth:
        errors.append(
            FileError(
                rel,
                f"{rel}: archive nested deeper than {limits.max_depth} levels, not opened",
                "archive_limit",
            )
        )
    elif budget.check(rel):
        errors.append(FileError(rel, f"{budget.check(rel)}; not opened", "archive_limit"))
    else:
        if not empty.exists():
            empty.touch()
        out_dir = Path(tempfile.mkdtemp(prefix="arc-", dir=tmp_root))
        exp = _Expansion(out_dir, rel, budget, errors, empty)
        try:
            _expand(path, exp)
        except _Stop as exc:
            errors.append(FileError(rel, f"{exc}; members read so far are hunted", "archive_limit"))
        except Exception as exc:  # zipfile, tarfile, gzip, lzma and py7zr raise many types on damaged input
            errors.append(
                FileError(
                    rel,
                    f"{rel}: damaged archive ({type(exc).__name__}: {str(exc)[:160]}); members read so far are hunted",
                    "archive",
                )
            )
        members = exp.members
    if not top:
        # The archive is evidence too (its name, place and hash), not only its members.
        yield EvidenceFile(str(path), rel, "file", size, mtime, temp=temp)
    prefix = "" if top else f"{rel}!/"
    for m in members:
        mrel = prefix + m.name
        if is_archive(m.name) and m.size:
            yield from _archive(
                m.path,
                mrel,
                m.size,
                m.mtime,
                tmp_root,
                budget,
                errors,
                empty,
                depth=depth + 1,
                top=False,
                temp=True,
            )
            continue
        head = b""
        if m.size:
            try:
                with m.path.open("rb") as fh:
                    head = fh.read(4096)
            except OSError as exc:
                errors.append(FileError(mrel, f"cannot read {mrel}: {exc.strerror or exc}", "unreadable"))
                continue
        yield EvidenceFile(str(m.path), mrel, classify(m.path, mrel, head), m.size, m.mtime, temp=m.size > 0)


def _expand(path: Path, exp: _Expansion) -> None:
    # The format comes from the archive's own name (a member on disk has a numbered name).
    low = exp.rel.lower()
    if low.endswith(".zip"):
        _expand_zip(path, exp)
    elif low.endswith(".7z"):
        _expand_7z(path, exp)
    elif low.endswith((".tar", ".tar.gz", ".tgz")):
        _expand_tar(path, exp)
    elif low.endswith(".gz"):
        # A lone .gz may be named as evidence or as a member (".../u_ex210305.log.gz").
        name = exp.rel.rsplit("/", 1)[-1]
        with gzip.open(path, "rb") as src:
            exp.count()
            exp.copy(name[:-3] or "unnamed", src, path.stat().st_mtime)


def _zip_time(date_time: tuple[int, ...]) -> float:
    import calendar

    try:
        return float(calendar.timegm((*date_time[:6], 0, 0, 0)))
    except (OverflowError, ValueError):
        return 0.0


def _expand_zip(path: Path, exp: _Expansion) -> None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            exp.count()
            if info.filename.endswith("/"):  # a folder (ZipInfo.is_dir fails on an empty name)
                continue
            mtime = _zip_time(info.date_time)
            if info.file_size == 0 and info.compress_size == 0:
                exp.add_empty(info.filename, mtime)
                continue
            try:
                with zf.open(info) as src:
                    exp.copy(info.filename, src, mtime)
            except _Stop:
                raise
            except (
                zipfile.BadZipFile,
                OSError,
                EOFError,
                ValueError,
                RuntimeError,
                NotImplementedError,
            ) as exc:
                exp.bad_member(info.filename, exc)


def _expand_tar(path: Path, exp: _Expansion) -> None:
    with tarfile.open(path, "r:*") as tf:
        for member in tf:
            exp.count()
            if not member.isfile():
                continue
            if member.size == 0:
                exp.add_empty(member.name, float(member.mtime))
                continue
            src = tf.extractfile(member)
            if src is None:
                continue
            exp.copy(member.name, src, float(member.mtime))


class _MemberWriter(Protocol):
    """What ``_expand_7z`` reads of a member's writer: where it wrote (None: not written) and how much."""

    path: Path | None
    length: int

    def close(self) -> None: ...


def _limited_7z_factory(
    out_dir: Path, budget: _Budget, rel: str, created: dict[str, _MemberWriter] | None = None
) -> Any:
    """A py7zr writer factory that writes each member to ``out_dir`` and counts the bytes really written,
    so an archive whose headers lie about its sizes is stopped while it expands, not after. A name that
    would leave ``out_dir`` is never written. ``created`` gets each writer by the name py7zr gave."""
    import py7zr.io

    class LimitedWriter(py7zr.io.Py7zIO):
        def __init__(self, name: str) -> None:
            given = Path(name)
            safe: str | None = None
            if given.is_absolute():
                try:
                    safe = given.resolve().relative_to(out_dir.resolve()).as_posix()
                except ValueError:
                    safe = None  # outside the extraction folder: never written
            else:
                safe = name
            if safe is not None:
                clean, escaped = clean_member_name(safe)
                safe = None if escaped else clean
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
                raise _Stop(f"{rel}: member larger than {budget.limits.max_member_bytes} bytes, stopped")
            err = budget.check(rel)
            if err:
                raise _Stop(err)
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
            writer = LimitedWriter(filename)
            if created is not None:
                created[filename] = writer
            return writer

    return Factory()


# Kept for the tests and for callers of the former API.
_ArchiveBomb = _Stop


def _expand_7z(path: Path, exp: _Expansion) -> None:
    import py7zr
    from py7zr.helpers import ArchiveTimestamp

    with py7zr.SevenZipFile(path, mode="r") as zf:
        originals: list[tuple[str, str, float, bool]] = []
        for i, f in enumerate(zf.files):
            exp.count()
            stamp = f.lastwritetime
            try:
                mtime = float(ArchiveTimestamp(stamp).totimestamp()) if stamp is not None else 0.0
            except (OverflowError, ValueError, OSError):
                mtime = 0.0
            key = f"m{i}"
            if not f.is_directory:
                originals.append((key, str(f.filename), mtime, bool(f.emptystream)))
            # py7zr refuses the whole archive when one name would leave the output folder: every member is
            # expanded under a numbered name instead, and hunted under its own (cleaned) name.
            f._file_info["filename"] = key
        created: dict[str, _MemberWriter] = {}
        try:
            zf.extractall(path=None, factory=_limited_7z_factory(exp.out_dir, exp.budget, exp.rel, created))
        finally:
            for key, raw, mtime, is_empty in originals:
                writer = created.get(key)
                if writer is not None and writer.path is not None and writer.path.exists():
                    writer.close()
                    _set_mtime(writer.path, mtime)
                    exp.members.append(_Member(writer.path, exp.name(raw), writer.length, mtime))
                elif is_empty:
                    exp.add_empty(raw, mtime)


def batches(files: Iterable[EvidenceFile]) -> Iterator[list[EvidenceFile]]:
    """The files of a walk in batches: a batch ends when its archive members in the temp dir reach
    BATCH_TEMP_BYTES or BATCH_TEMP_FILES, so they can be hunted (and deleted) before the walk goes on."""
    batch: list[EvidenceFile] = []
    temp_bytes = temp_files = 0
    for ev in files:
        batch.append(ev)
        if ev.temp:
            temp_bytes += ev.size
            temp_files += 1
            if temp_bytes >= BATCH_TEMP_BYTES or temp_files >= BATCH_TEMP_FILES:
                yield batch
                batch = []
                temp_bytes = temp_files = 0
    if batch:
        yield batch


def cleanup(tmp_root: str) -> None:
    shutil.rmtree(tmp_root, ignore_errors=True)
