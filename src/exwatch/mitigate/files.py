"""File IO for web.config edits: careful reads, atomic writes that keep the mode, timestamped backups."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from exwatch.errors import InputError


def read_config(path: Path) -> bytes:
    """The bytes of a configuration file, or a clear InputError."""
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not a web.config file")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read (permission denied)") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from exc


def ensure_writable(path: Path) -> None:
    """Refuse to touch a read-only file (even as an administrator, whose writes would succeed)."""
    mode = path.stat().st_mode
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
        raise InputError(f"{path}: the file is read-only (mode {stat.S_IMODE(mode):04o}); nothing changed")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError(
            f"{path.parent}: the folder is not writable (backup and atomic write need it); nothing changed"
        )


def backup_path(path: Path, now: datetime | None = None) -> Path:
    """A free name next to ``path``: ``web.config.exwatch-20260101T120000Z.bak`` (then ``-1``, ``-2``...)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.exwatch-{stamp}.bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.exwatch-{stamp}-{n}.bak")
        n += 1
    return candidate


def write_atomic(path: Path, data: bytes, original: bytes) -> Path:
    """Back up ``original`` next to ``path``, then replace ``path`` atomically; return the backup path.

    The new content goes to a temporary file in the same folder (same file system), which is flushed,
    given the original's mode (and owner, when allowed) and renamed over the original with
    ``os.replace``: a reader sees the old file or the new one, never half of one.
    """
    path = Path(os.path.realpath(path))  # edit the file a symbolic link points to, not the link
    ensure_writable(path)
    st = path.stat()
    if path.read_bytes() != original:
        raise InputError(f"{path}: changed on disk while exwatch was working on it; nothing changed")
    backup = backup_path(path)
    try:
        shutil.copy2(path, backup)
    except OSError as exc:
        raise InputError(f"{backup}: cannot write the backup ({exc.strerror}); nothing changed") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".exwatch-tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        with contextlib.suppress(PermissionError, AttributeError):
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot be written ({exc.strerror}); nothing changed") from exc
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return backup


def _child_named(folder: Path, name: str) -> Path | None:
    """The child of ``folder`` called ``name``, case-insensitively (Windows paths on any system)."""
    try:
        for entry in folder.iterdir():
            if entry.name.lower() == name.lower() and entry.is_dir():
                return entry
    except OSError:
        return None
    return None


def child_configs(exchange_path: Path) -> list[Path]:
    """Every ``web.config`` below ``<exchange_path>\\FrontEnd\\HttpProxy``, sorted."""
    if not exchange_path.is_dir():
        raise InputError(f"{exchange_path}: not a folder (give the Exchange install folder)")
    frontend = _child_named(exchange_path, "FrontEnd")
    proxy = _child_named(frontend, "HttpProxy") if frontend else None
    if proxy is None:
        raise InputError(f"{exchange_path}: no FrontEnd\\HttpProxy folder below it")
    return sorted(p for p in proxy.rglob("*") if p.name.lower() == "web.config" and p.is_file())
