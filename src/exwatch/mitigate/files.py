"""File IO for web.config edits: careful reads, atomic writes that keep the mode, timestamped backups.

Hostile folders are assumed: the web.config may be a link planted elsewhere, huge, or not a file at
all, and anyone who can write the folder may plant links at the names exwatch is about to create.
So the config is opened without following a final link (unless asked), its size is checked on the
open descriptor before a byte is read, and the backup and the temporary file are created with
``O_CREAT | O_EXCL | O_NOFOLLOW``: an existing name, link or not, is never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from exwatch.errors import InputError

# IIS refuses a web.config above 250 KB by default ("Cannot read configuration file because it exceeds
# the maximum file size"); the limit is the REG_DWORD
# HKLM\SOFTWARE\Microsoft\InetStp\Configuration\MaxWebConfigFileSizeInKB.
# Source: IIS Support Blog, "Web.config file maximum size and count" (2020),
# https://port135.com/maximum-size-and-count-for-the-web-config-file/
DEFAULT_MAX_CONFIG_KB = 250
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def _limit_hint(max_kb: int) -> str:
    return (
        f"larger than {max_kb} KB, the most IIS reads by default (MaxWebConfigFileSizeInKB); "
        "raise the limit with --max-size-kb if this server's IIS was configured for more"
    )


def read_config(path: Path, *, max_kb: int = DEFAULT_MAX_CONFIG_KB, follow_symlinks: bool = True) -> bytes:
    """The bytes of a configuration file, or a clear InputError.

    Refused: a link when ``follow_symlinks`` is false, anything but a regular file (a FIFO would
    block, a device never ends), and a file larger than ``max_kb`` KB (checked before reading).
    """
    flags = os.O_RDONLY | _NONBLOCK | _BINARY | (0 if follow_symlinks else _NOFOLLOW)
    try:
        if not follow_symlinks and path.is_symlink():
            raise InputError(
                f"{path}: is a symbolic link (to {os.readlink(path)}); exwatch does not edit a file "
                "through a link: give --follow-symlinks to edit its target; nothing changed"
            )
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read (permission denied)") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, not a web.config file") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                f"{path}: is a symbolic link; give --follow-symlinks to edit its target; nothing changed"
            ) from exc
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory, not a web.config file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file (a device, FIFO or socket is not a web.config)")
        limit = max_kb * 1024
        if st.st_size > limit:
            raise InputError(f"{path}: {st.st_size:,} bytes, {_limit_hint(max_kb)}; nothing changed")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size) or 1)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # grew while being read
                raise InputError(f"{path}: {_limit_hint(max_kb)}; nothing changed")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from exc
    finally:
        os.close(fd)


def ensure_writable(path: Path) -> None:
    """Refuse to touch a read-only file (even as an administrator, whose writes would succeed)."""
    mode = path.stat().st_mode
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
        raise InputError(f"{path}: the file is read-only (mode {stat.S_IMODE(mode):04o}); nothing changed")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError(
            f"{path.parent}: the folder is not writable (backup and atomic write need it); nothing changed"
        )


MAX_BACKUP_NAMES = 1000


def _create_exclusive(path: Path, mode: int) -> int:
    """A new file at ``path`` opened for writing, created by this call: an existing name (a planted
    link, dangling or not, or any file) raises FileExistsError instead of being written through."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY
    return os.open(path, flags, mode)


def _write_backup(path: Path, original: bytes, st: os.stat_result, now: datetime | None = None) -> Path:
    """Write ``original`` to a new name next to ``path``: ``web.config.exwatch-20260101T120000Z.bak``
    (then ``-1``, ``-2``...), created exclusively, with the original's mode, owner and times."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    for n in range(MAX_BACKUP_NAMES):
        suffix = f"-{n}" if n else ""
        candidate = path.with_name(f"{path.name}.exwatch-{stamp}{suffix}.bak")
        try:
            fd = _create_exclusive(candidate, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(
                f"{candidate}: cannot write the backup ({exc.strerror}); nothing changed"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(original)
                handle.flush()
                os.fsync(handle.fileno())
                with contextlib.suppress(PermissionError, AttributeError):
                    os.fchown(handle.fileno(), st.st_uid, st.st_gid)
                os.fchmod(handle.fileno(), stat.S_IMODE(st.st_mode))
                with contextlib.suppress(NotImplementedError, OSError):
                    os.utime(handle.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            candidate.unlink(missing_ok=True)
            raise InputError(
                f"{candidate}: cannot write the backup ({exc.strerror}); nothing changed"
            ) from exc
        return candidate
    raise InputError(f"{path.parent}: {MAX_BACKUP_NAMES} backup names for {stamp} are taken; nothing changed")


def write_atomic(
    path: Path,
    data: bytes,
    original: bytes,
    *,
    follow_symlinks: bool = False,
    max_kb: int = DEFAULT_MAX_CONFIG_KB,
) -> Path:
    """Back up ``original`` next to ``path``, then replace ``path`` atomically; return the backup path.

    The new content goes to a temporary file in the same folder (same file system), which is flushed,
    given the original's mode (and owner, when allowed) and renamed over the original with
    ``os.replace``: a reader sees the old file or the new one, never half of one.  The backup and the
    temporary file are new files (``O_EXCL | O_NOFOLLOW``; ``tempfile.mkstemp`` opens with the same
    flags), so nothing planted at their names is followed.  A link at ``path`` is refused unless
    ``follow_symlinks``, and then its target is edited and the link kept.
    """
    if follow_symlinks:
        path = Path(os.path.realpath(path))
    current = read_config(path, max_kb=max_kb, follow_symlinks=False)
    ensure_writable(path)
    st = path.stat()
    if current != original:
        raise InputError(f"{path}: changed on disk while exwatch was working on it; nothing changed")
    backup = _write_backup(path, original, st)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".exwatch-tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), stat.S_IMODE(st.st_mode))
            with contextlib.suppress(PermissionError, AttributeError):
                os.fchown(handle.fileno(), st.st_uid, st.st_gid)
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
