"""Cutting a target stream into shards (pure): de-duplication, the scope check, rate and budget shares.

A shard is a list of :class:`~exwatch.scan.targets.Target` small enough to ship to a worker; the stream
is consumed lazily, so a million targets never sit in memory, only the shards in flight.
"""

from __future__ import annotations

import ipaddress
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from exwatch.scan.engine import ScanOptions, SeenTargets
from exwatch.scan.targets import Exclusions, Spec, Target, TargetSet, connect_allowed, read_specs


@dataclass
class Shard:
    """Targets to scan on one worker, and the targets of the same stretch that are out of scope."""

    index: int
    targets: list[Target] = field(default_factory=list)
    excluded: list[Target] = field(default_factory=list)


class Scope:
    """The exclusions, checked on the client before sharding, and shipped as plain text to the workers.

    Files are read here (a remote worker may not see them) and re-read when they change, so an opt-out
    added mid-scan reaches every shard submitted after it.
    """

    def __init__(self, items: Iterable[str]) -> None:
        plain: list[str] = []
        files: list[Path] = []
        for item in items:
            path = Path(item)
            if path.is_file() and not _is_address_text(item):
                files.append(path)
            else:
                plain.append(item)
        self.plain = tuple(plain)
        self.files = tuple(files)
        self.exclusions = Exclusions(self.plain, self.files)
        self._texts: tuple[str, ...] = ()
        self._mtimes: tuple[float, ...] = ()
        self._checked = 0.0
        self._load_texts()

    def _load_texts(self) -> None:
        texts = list(self.plain)
        for path in self.files:
            texts.extend(spec.text for spec in read_specs(path))
        self._texts = tuple(texts)
        self._mtimes = tuple(_mtime(p) for p in self.files)

    def refresh(self) -> None:
        """Re-read the files if one changed (checked at most once a second)."""
        if not self.files or time.monotonic() - self._checked < 1.0:
            return
        self._checked = time.monotonic()
        if tuple(_mtime(p) for p in self.files) != self._mtimes:
            self.exclusions.load()
            self._load_texts()

    def worker_items(self) -> tuple[str, ...]:
        """The exclusions as plain lines (files inlined) for a worker's own scope check."""
        return self._texts

    def allowed(self, target: Target) -> bool:
        """May this target be sent to a worker? Addresses are checked here; names again after DNS."""
        if target.name is None:
            return connect_allowed(target, target.host, self.exclusions)
        return not self.exclusions.name_excluded(target.name)


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def _is_address_text(item: str) -> bool:
    try:
        ipaddress.ip_network(item.split()[0] if item.split() else item, strict=False)
    except ValueError:
        return False
    return True


def iter_shards(stream: Iterable[Target], size: int, scope: Scope | None = None) -> Iterator[Shard]:
    """Shards of at most ``size`` targets, each target once (the scanner's own de-duplication).

    Out-of-scope targets travel with the shard as ``excluded`` (the client records them; they are never
    sent to a worker) and count towards its size, so that a fully excluded range still yields promptly.
    """
    if size < 1:
        raise ValueError("shard size must be at least 1")
    seen = SeenTargets()
    index = 0
    shard = Shard(index)
    for target in stream:
        if not seen.add(target):
            continue
        if scope is None or scope.allowed(target):
            shard.targets.append(target)
        else:
            shard.excluded.append(target)
        if len(shard.targets) + len(shard.excluded) >= size:
            yield shard
            index += 1
            shard = Shard(index)
            if scope is not None:
                scope.refresh()
    if shard.targets or shard.excluded:
        yield shard


def target_spec(target: Target) -> Spec:
    """A spec that expands back to exactly this target (address, port, scheme, text, tags, name)."""
    if target.name is None:
        ip = ipaddress.ip_address(target.host)
        return Spec(
            "url",
            int(ip),
            int(ip),
            ip.version,
            target.host,
            target.port,
            target.scheme,
            target.text,
            target.tags,
        )
    return Spec(
        "url", host=target.name, port=target.port, scheme=target.scheme, text=target.text, tags=target.tags
    )


class ShardTargets(TargetSet):
    """A shard as the scanner's :class:`TargetSet`, so that the unchanged engine scans it on a worker."""

    def __init__(self, targets: Sequence[Target]) -> None:
        super().__init__(items=(), files=(), ports=())
        self.targets = tuple(targets)

    def specs(self) -> Iterator[Spec]:
        self.problems.clear()
        for target in self.targets:
            yield target_spec(target)


def shard_options(options: ScanOptions, in_flight: int, exclude: tuple[str, ...]) -> ScanOptions:
    """The options one shard runs with.

    The global ``rate`` is split evenly over the shards that may be in flight at once: at most
    ``in_flight`` shards run together, each with ``rate / in_flight``, so their sum never passes ``rate``.
    ``per_host`` stays as it is (each address lives in exactly one shard). The shard's order is already
    shuffled by the client; target files are read by the client, exclusions are inlined.
    """
    rate = options.rate / max(1, in_flight) if options.rate else 0.0
    return replace(options, rate=rate, shuffle=False, targets_files=(), exclude=exclude)


def shard_budget(options: ScanOptions, n_targets: int, requests_per_target: int = 12) -> float:
    """Wall-clock seconds after which a submitted shard is given up (its targets recorded ``budget``).

    Generous on purpose: waves of ``concurrency`` targets each within the host budget, the time the
    shard's share of the rate needs for its requests, and a minute for queueing and start-up, for each
    attempt the retries allow.
    """
    waves = math.ceil(n_targets / max(1, options.concurrency))
    seconds = waves * options.host_budget + 60.0
    if options.rate:
        seconds += n_targets * requests_per_target / options.rate
    return seconds
