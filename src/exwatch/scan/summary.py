"""What a scan found, per host, and the exit code that follows from it: pure (no IO, no clock).

:class:`ScanSummary` counts folded host records (:mod:`exwatch.scan.fold`); every count comes from
counters, the list of exposed hosts is only a capped sample of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict

from exwatch.record import ExposedHost, HostRecord, Observation
from exwatch.scan.fold import host_of
from exwatch.scan.observation import host_fix
from exwatch.scan.sink import ScanTotals, TotalsDict


@dataclass
class Progress:
    """What a progress display needs; passed to the ``progress`` callback about twice a second."""

    done: int
    total: int
    errors: int
    vulnerable: int
    elapsed: float
    requests: int

    @property
    def rate(self) -> float:
        """Targets per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate."""
        if self.rate <= 0 or self.total <= self.done:
            return None
        return (self.total - self.done) / self.rate


#: The keys of :class:`~exwatch.record.ExposedHost`, in its order.
EXPOSED_FIELDS = (
    "key",
    "host",
    "target",
    "address",
    "port",
    "name",
    "build",
    "build_source",
    "cu_only",
    "product",
    "cu",
    "fe_server",
    "waves",
    "services",
    "conflict",
    "fix",
    "fix_build",
    "fix_kb",
)


@dataclass
class ScanSummary:
    """What a scan found, per host (its services folded): counts per status, per wave and state,
    errors, the exposed hosts (a list capped at ``MAX_EXPOSED``; every count comes from counters).

    ``waves_selected`` (``--wave``): the waves that decide the exit code and the exposed list; empty
    means every wave. The per-wave counts cover every wave whatever the selection.
    """

    scan_id: int
    total: int = 0
    scanned: int = 0  # services (host, port) scanned
    skipped: int = 0
    seconds: float = 0.0
    requests: int = 0
    hosts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    waves: dict[str, Counter[str]] = field(default_factory=dict)
    conflicts: int = 0
    # Left out of repr: asyncio's Runner formats the finished task (its result, this summary) twice
    # when it restores the SIGINT handler, and 1,000 exposed records cost about 30 ms each time.
    exposed: list[ExposedHost] = field(default_factory=list, repr=False)
    exposed_dropped: int = 0
    exposed_hosts: int = 0
    vulnerable_hosts: int = 0
    unknown_hosts: int = 0
    incomplete_hosts: int = 0
    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    stop_reason: str | None = None
    peak_in_flight: int = 0
    waves_selected: tuple[str, ...] = ()
    whole: ScanTotals | None = None  # a resumed scan: the stored counts of every run of it

    MAX_EXPOSED = 10_000

    def add_service(self, rec: Observation) -> None:
        """Count one service record (the progress of the scan)."""
        self.scanned += 1

    def _chosen(self, wave: str) -> bool:
        return not self.waves_selected or wave in self.waves_selected

    def add(self, rec: HostRecord) -> None:
        """Count one host record (folded); keep a short form of it if a chosen wave is exposed."""
        self.hosts += 1
        status = str(rec.get("status"))
        self.statuses[status] += 1
        if rec.get("error"):
            self.errors[str(rec["error"])] += 1
        self.conflicts += bool(rec.get("conflict"))
        vulnerable = unknown = False
        for wave, v in (rec.get("waves") or {}).items():
            state = str(v.get("state"))
            self.waves.setdefault(wave, Counter())[state] += 1
            if status == "exchange" and self._chosen(wave):
                vulnerable = vulnerable or state == "vulnerable"
                unknown = unknown or state == "unknown"
        self.vulnerable_hosts += vulnerable
        self.unknown_hosts += unknown
        self.incomplete_hosts += status == "unreachable" or unknown
        if vulnerable or unknown:
            self.exposed_hosts += 1
            if len(self.exposed) < self.MAX_EXPOSED:
                self.exposed.append(exposed_host(rec))
            else:
                self.exposed_dropped += 1

    @property
    def vulnerable(self) -> int:
        """Hosts with at least one chosen wave vulnerable."""
        return self.vulnerable_hosts

    @property
    def incomplete(self) -> int:
        """Hosts unreachable, or Exchange with a chosen wave whose state is unknown."""
        return self.incomplete_hosts

    @property
    def exit_code(self) -> int:
        """1 if any host is vulnerable; 3 if none but some are unreachable or unknown (or the scan was
        stopped before its end); else 0. For a resumed scan the hosts its earlier runs stored count too."""
        whole = self.whole
        if self.vulnerable or (whole is not None and whole.vulnerable):
            return 1
        if self.incomplete or self.interrupted or (whole is not None and whole.incomplete):
            return 3
        return 0

    def to_dict(self) -> SummaryDict:
        """A JSON-ready summary."""
        return {
            "scan_id": self.scan_id,
            "total": self.total,
            "scanned": self.scanned,
            "services": self.scanned,
            "hosts": self.hosts,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "hosts_per_second": round(self.scanned / self.seconds, 1) if self.seconds else None,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "waves": {w: dict(c) for w, c in self.waves.items()},
            "waves_selected": list(self.waves_selected),
            "conflicts": self.conflicts,
            "vulnerable_hosts": self.vulnerable_hosts,
            "unknown_hosts": self.unknown_hosts,
            "exposed_hosts": self.exposed_hosts,
            "incomplete_hosts": self.incomplete_hosts,
            "problems": self.problems,
            "interrupted": self.interrupted,
            "whole_scan": self.whole.to_dict() if self.whole is not None else None,
        }


class SummaryDict(TypedDict):
    """The JSON form of a :class:`ScanSummary` (``--format json``'s ``summary``)."""

    scan_id: int
    total: int
    scanned: int
    services: int
    hosts: int
    skipped: int
    seconds: float
    hosts_per_second: float | None
    requests: int
    statuses: dict[str, int]
    errors: dict[str, int]
    waves: dict[str, dict[str, int]]
    waves_selected: list[str]
    conflicts: int
    vulnerable_hosts: int
    unknown_hosts: int
    exposed_hosts: int
    incomplete_hosts: int
    problems: list[str]
    interrupted: bool
    whole_scan: TotalsDict | None


class ScanInterrupted(KeyboardInterrupt):
    """The scan stopped before its end (Ctrl-C, or its output closed); ``summary`` has what it found.

    What finished is stored. A KeyboardInterrupt, so that callers that only catch that still do.
    """

    def __init__(self, summary: ScanSummary, reason: str = "interrupted") -> None:
        super().__init__(reason)
        self.summary = summary
        self.reason = reason


def exposed_host(rec: HostRecord) -> ExposedHost:
    """The short form of an exposed host kept in the summary (the keys of ``EXPOSED_FIELDS``)."""
    return {
        "key": rec.get("key"),
        "host": rec.get("host"),
        "target": rec.get("target"),
        "address": rec.get("address"),
        "port": rec.get("port"),
        "name": rec.get("name"),
        "build": rec.get("build"),
        "build_source": rec.get("build_source"),
        "cu_only": rec.get("cu_only"),
        "product": rec.get("product"),
        "cu": rec.get("cu"),
        "fe_server": rec.get("fe_server"),
        "waves": rec.get("waves"),
        "services": rec.get("services"),
        "conflict": rec.get("conflict"),
        "fix": rec.get("fix"),
        "fix_build": rec.get("fix_build"),
        "fix_kb": rec.get("fix_kb"),
    }


def finish_host(host: HostRecord) -> HostRecord:
    """Complete a folded host record: its host id and the one fix that closes every open wave."""
    host["host"] = host_of(host)
    fix = host_fix(host)
    host["fix"] = fix["fix"]
    host["fix_build"] = fix["fix_build"]
    host["fix_kb"] = fix["fix_kb"]
    return host
