"""What the fleet read API returns: frozen dataclasses, turned into JSON only at the edge (``to_dict``).

Every ``to_dict`` gives the JSON the commands and the web API print (key order included), so the
typed values cross the seams between the store, the report and the web, and only the JSON writers
see plain mappings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from exwatch.fleet.jsontypes import JSON, JSONObject
from exwatch.fleet.metrics import WaveCounts


def iso(when: datetime | None) -> str | None:
    """An aware time as ISO 8601 text (None stays None)."""
    return when.isoformat() if when else None


def _waves(waves: Mapping[str, WaveCounts]) -> JSONObject:
    return {w: c.to_dict() for w, c in sorted(waves.items())}


@dataclass(frozen=True)
class Snapshot:
    """One finished scan with what that scan itself saw: per-wave counts and host-level statuses."""

    scan_id: int
    time: datetime
    waves: Mapping[str, WaveCounts] = field(default_factory=dict)
    statuses: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> JSONObject:
        return {
            "scan": self.scan_id,
            "time": self.time.isoformat(),
            "statuses": dict(self.statuses),
            "waves": _waves(self.waves),
        }


@dataclass(frozen=True)
class Picture:
    """The fleet picture at one scan's time: every known host's latest verdict (not only that scan's).

    ``waves`` and ``statuses`` count the current hosts; ``stale`` counts hosts whose verdict is older
    than the max age (shown apart, out of the share); ``scan_statuses`` is what this scan itself saw,
    and ``scope`` the targets it was given.
    """

    scan_id: int
    time: datetime
    waves: Mapping[str, WaveCounts] = field(default_factory=dict)
    statuses: Mapping[str, int] = field(default_factory=dict)
    stale: int = 0
    scan_statuses: Mapping[str, int] = field(default_factory=dict)
    scope: tuple[str, ...] | None = None

    @property
    def hosts(self) -> int:
        return sum(self.statuses.values())

    def to_dict(self) -> JSONObject:
        return {
            "scan": self.scan_id,
            "time": self.time.isoformat(),
            "hosts": self.hosts,
            "statuses": dict(sorted(self.statuses.items())),
            "stale": self.stale,
            "scan_statuses": dict(sorted(self.scan_statuses.items())),
            "scope": None if self.scope is None else list(self.scope),
            "waves": _waves(self.waves),
        }


@dataclass(frozen=True)
class HostState:
    """One host and wave in the current fleet picture, in one state: the service and scan that gave
    the verdict, its fix, and (for a vulnerable host) since when it is exposed."""

    host_id: int
    address: str | None
    name: str | None
    fe_server: str | None
    wave: str
    state: str
    build: str | None
    cu: str | None
    port: int | None
    conflict: bool
    scan: int | None
    seen_at: datetime | None
    exposed_since: datetime | None
    exposed_days: float | None
    fix: str | None

    def to_dict(self) -> JSONObject:
        """The report's row of a host at risk (``hosts_at_risk`` in the JSON report)."""
        return {
            "host_id": self.host_id,
            "address": self.address,
            "name": self.name,
            "fe_server": self.fe_server,
            "wave": self.wave,
            "build": self.build,
            "cu": self.cu,
            "port": self.port,
            "conflict": self.conflict,
            "scan": self.scan,
            "seen_at": iso(self.seen_at),
            "exposed_since": iso(self.exposed_since),
            "exposed_days": self.exposed_days,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Compromise:
    """A host and wave with evidence of exploitation: first evidence, protection time, and the flag."""

    host_id: int
    address: str | None
    name: str | None
    fe_server: str | None
    wave: str
    first_evidence: datetime | None
    findings: int
    first_vulnerable: datetime | None
    protected_at: datetime | None

    @property
    def compromised_before_protected(self) -> bool:
        """The evidence is earlier than the protection, or the host was never seen protected."""
        evidence, protected = self.first_evidence, self.protected_at
        return evidence is not None and (protected is None or evidence < protected)

    def to_dict(self) -> JSONObject:
        return {
            "host_id": self.host_id,
            "address": self.address,
            "name": self.name,
            "fe_server": self.fe_server,
            "wave": self.wave,
            "first_evidence": iso(self.first_evidence),
            "findings": self.findings,
            "first_vulnerable": iso(self.first_vulnerable),
            "protected_at": iso(self.protected_at),
            "compromised_before_protected": self.compromised_before_protected,
        }


@dataclass(frozen=True)
class ExposureWindow:
    """First seen vulnerable to first seen protected after it (open when ``first_protected`` is None)."""

    host_id: int
    wave: str
    first_vulnerable: datetime | None
    first_protected: datetime | None

    @property
    def days(self) -> float | None:
        start, end = self.first_vulnerable, self.first_protected
        return round((end - start).total_seconds() / 86400, 3) if start and end else None

    def to_dict(self) -> JSONObject:
        return {
            "host_id": self.host_id,
            "wave": self.wave,
            "first_vulnerable": iso(self.first_vulnerable),
            "first_protected": iso(self.first_protected),
            "days": self.days,
        }


@dataclass(frozen=True)
class HostRow:
    """A known host with its place in the current fleet picture (``exwatch hosts list``)."""

    host_id: int
    address: str | None
    name: str | None
    fe_server: str | None
    status: str | None
    port: int | None
    scan: int | None
    build: str | None
    conflict: bool
    last_seen: datetime | None
    stale: bool
    retired_at: datetime | None
    tags: Mapping[str, str]

    def to_dict(self) -> JSONObject:
        return {
            "host_id": self.host_id,
            "address": self.address,
            "name": self.name,
            "fe_server": self.fe_server,
            "status": self.status,
            "port": self.port,
            "scan": self.scan,
            "build": self.build,
            "conflict": self.conflict,
            "last_seen": iso(self.last_seen),
            "stale": self.stale,
            "retired_at": iso(self.retired_at),
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class Service:
    """One (host, port) service as one scan saw it."""

    port: int | None
    status: str
    address: str | None
    build: str | None
    build_source: str | None
    error: str | None

    def to_dict(self) -> JSONObject:
        return {
            "port": self.port,
            "status": self.status,
            "address": self.address,
            "build": self.build,
            "build_source": self.build_source,
            "error": self.error,
        }


@dataclass(frozen=True)
class HostSnapshot:
    """One host in one scan: its services folded (status, winning port, build, conflict, wave states)."""

    scan: int
    time: datetime | None
    status: str
    port: int | None
    build: str | None
    conflict: bool
    services: tuple[Service, ...]
    waves: Mapping[str, str]

    @property
    def winner(self) -> Service | None:
        """The service that gave the verdict (the first one when none has the winning port)."""
        return next(
            (s for s in self.services if s.port == self.port), self.services[0] if self.services else None
        )

    def to_dict(self) -> JSONObject:
        win = self.winner
        return {
            "scan": self.scan,
            "time": iso(self.time),
            "status": self.status,
            "port": self.port,
            "address": win.address if win else None,
            "build": self.build,
            "build_source": win.build_source if win else None,
            "error": win.error if win else None,
            "conflict": self.conflict,
            "services": [s.to_dict() for s in self.services],
            "waves": dict(self.waves),
        }


@dataclass(frozen=True)
class CurrentVerdict:
    """A host's place in the current fleet picture."""

    scan: int
    status: str
    port: int | None
    build: str | None
    conflict: bool
    seen_at: datetime | None
    waves: Mapping[str, str]

    def to_dict(self) -> JSONObject:
        return {
            "scan": self.scan,
            "status": self.status,
            "port": self.port,
            "build": self.build,
            "conflict": self.conflict,
            "seen_at": iso(self.seen_at),
            "waves": dict(self.waves),
        }


@dataclass(frozen=True)
class HuntSummary:
    """One hunt of a host: when, its verdict, how many findings and the first one's time."""

    hunt: int
    time: datetime
    verdict: str
    findings: int
    first_finding: datetime | None

    def to_dict(self) -> JSONObject:
        return {
            "hunt": self.hunt,
            "time": self.time.isoformat(),
            "verdict": self.verdict,
            "findings": self.findings,
            "first_finding": iso(self.first_finding),
        }


@dataclass(frozen=True)
class HostHistory:
    """One host across snapshots and hunts (``exwatch hosts show``)."""

    host_id: int
    address: str | None
    name: str | None
    fe_server: str | None
    cert: str | None
    first_seen: datetime | None
    retired_at: datetime | None
    merged_into: int | None
    tags: Mapping[str, str]
    current: CurrentVerdict | None
    snapshots: tuple[HostSnapshot, ...]
    exposure: tuple[ExposureWindow, ...]
    hunts: tuple[HuntSummary, ...]

    @property
    def label(self) -> str:
        """How the host is named on a page: DNS name, else address, else X-FEServer, else #id."""
        return self.name or self.address or self.fe_server or f"#{self.host_id}"

    def to_dict(self) -> JSONObject:
        return {
            "host_id": self.host_id,
            "address": self.address,
            "name": self.name,
            "fe_server": self.fe_server,
            "cert": self.cert,
            "first_seen": iso(self.first_seen),
            "retired_at": iso(self.retired_at),
            "merged_into": self.merged_into,
            "tags": dict(self.tags),
            "current": None if self.current is None else self.current.to_dict(),
            "snapshots": [s.to_dict() for s in self.snapshots],
            "exposure": [e.to_dict() for e in self.exposure],
            "hunts": [h.to_dict() for h in self.hunts],
        }


@dataclass(frozen=True)
class WaveVerdict:
    """A host's verdict for one wave in the fleet picture: state, reason and fix, and the scan."""

    state: str | None
    reason: str | None
    fix: str | None
    scan: int

    def to_dict(self) -> JSONObject:
        return {"state": self.state, "reason": self.reason, "fix": self.fix, "scan": self.scan}


@dataclass(frozen=True)
class FindingRow:
    """One stored hunt finding with the host it was linked to."""

    id: int
    hunt: int
    host_id: int | None
    host: str | None
    address: str | None
    name: str | None
    fe_server: str | None
    rule: str
    wave: str | None
    cve: str | None
    confidence: str | None
    time: datetime | None
    title: str | None
    description: str | None
    evidence: Mapping[str, JSON]

    def to_dict(self) -> JSONObject:
        return {
            "id": self.id,
            "hunt": self.hunt,
            "host_id": self.host_id,
            "host": self.host,
            "address": self.address,
            "name": self.name,
            "fe_server": self.fe_server,
            "rule": self.rule,
            "wave": self.wave,
            "cve": self.cve,
            "confidence": self.confidence,
            "time": iso(self.time),
            "title": self.title,
            "description": self.description,
            "evidence": dict(self.evidence),
        }


Item = TypeVar("Item")


@dataclass(frozen=True)
class Listing(Generic[Item]):
    """One page of a listing: ``items`` from ``offset`` on, out of ``total`` (``limit``: the page size)."""

    total: int
    limit: int
    offset: int
    items: tuple[Item, ...]
