"""What a scan will contact: its target set, the order, the targets already done, the exclusions."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from exwatch.scan.options import ScanOptions
from exwatch.scan.targets import Exclusions, Target, TargetSet, expand, window_shuffle


class SeenTargets:
    """Targets already done or queued, so that none is scanned twice (IPv4 in /16 bitmaps, the rest in a set)."""

    def __init__(self) -> None:
        self._blocks: dict[tuple[int, str, int], bytearray] = {}
        self._other: set[str] = set()

    def add(self, target: Target) -> bool:
        """Mark a target; False if it was already there."""
        if target.name is None and ":" not in target.host:
            try:
                value = int.from_bytes(socket.inet_aton(target.host), "big")
            except OSError:
                value = -1
            if value >= 0:
                block = self._blocks.setdefault((target.port, target.scheme, value >> 16), bytearray(8192))
                low = value & 0xFFFF
                byte, bit = low >> 3, 1 << (low & 7)
                if block[byte] & bit:
                    return False
                block[byte] |= bit
                return True
        key = target.key
        if key in self._other:
            return False
        self._other.add(key)
        return True

    def add_key(self, key: str) -> None:
        """Mark a key from a stored scan (``scheme://host:port``)."""
        parts = urlsplit(key)
        if parts.hostname is None or parts.port is None:
            self._other.add(key)
            return
        host = parts.hostname
        is_ip = is_ipv4(host)
        self.add(Target(host, parts.port, parts.scheme, key, (), None if is_ip else host))


def is_ipv4(text: str) -> bool:
    """A dotted-quad IPv4 address."""
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return text.count(".") == 3


def exclusions_from(items: Iterable[str]) -> Exclusions:
    """``--exclude`` values as exclusions: files of them (re-read when they change) and plain items."""
    plain: list[str] = []
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if (
            ("/" in item or "\\" in item or path.suffix)
            and path.is_file()
            or path.is_file()
            and not is_ipv4(item)
        ):
            files.append(path)
        else:
            plain.append(item)
    return Exclusions(plain, files)


def build_target_set(targets: Iterable[str] | TargetSet, options: ScanOptions) -> TargetSet:
    """The user's targets and the option's target files as one lazy, re-iterable set."""
    if isinstance(targets, TargetSet):
        return targets
    return TargetSet(tuple(targets), tuple(Path(f) for f in options.targets_files), options.ports)


def target_stream(tset: TargetSet, options: ScanOptions) -> Iterator[Target]:
    """The targets in scan order: ranges permuted and a window shuffle across networks (if asked)."""
    if not options.shuffle:
        return expand(tset.specs(), tset.ports)
    rng = random.Random(options.seed)
    return window_shuffle(expand(tset.specs(), tset.ports, rng), rng)


def no_target_message(tset: TargetSet, messages: list[str]) -> str:
    """The one line for a target list that yields nothing to scan."""
    if messages:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        return f"nothing to scan: {messages[0]}{more}"
    files = ", ".join(str(f) for f in tset.files) or ", ".join(tset.items)
    return f"nothing to scan: {files or 'no target'} names no target"
