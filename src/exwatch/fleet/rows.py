"""What the fleet read API returns: frozen dataclasses, turned into JSON only at the edge (``to_dict``).

Every ``to_dict`` gives the JSON the commands and the web API print (key order included), so the
typed values cross the seams between the store, the report and the web, and only the JSON writers
see plain mappings. Most rows are their fields in order (:class:`JsonRow`: times as ISO 8601 text,
mappings as objects, tuples as lists, nested rows by their own ``to_dict``); the few whose JSON
renames, sorts or leaves out a field write their own.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from datetime import datetime
from typing import ClassVar, Generic, TypedDict, TypeVar, cast

from exwatch.fleet.jsontypes import JSON, JSONObject
from exwatch.fleet.metrics import PROTECTED, WaveCounts


def iso(when: datetime | None) -> str | None:
    """An aware time as ISO 8601 text (None stays None)."""
    return when.isoformat() if when else None


def _waves(waves: Mapping[str, WaveCounts]) -> JSONObject:
    return {w: c.to_dict() for w, c in sorted(waves.items())}


class JsonRow:
    """A dataclass row whose JSON is its fields in order, then the properties named in ``computed``.

    Each field is written by its declared type: a time as ISO 8601 text, a mapping as an object, a
    tuple as a list (of rows by their ``to_dict``), a row by its ``to_dict``, anything else as it is.
    Each class's writer is made once from its fields, on first use, as one dict display (as
    ``dataclasses`` writes ``__init__``): as fast as a ``to_dict`` written by hand.
    """

    __dataclass_fields__: ClassVar[dict[str, Field[object]]]
    computed: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> JSONObject:
        write = _WRITERS.get(type(self))
        if write is None:
            write = _WRITERS[type(self)] = _writer(type(self))
        return write(self)


_WRITERS: dict[type[JsonRow], Callable[[JsonRow], JSONObject]] = {}


def _writer(cls: type[JsonRow]) -> Callable[[JsonRow], JSONObject]:
    """The ``to_dict`` of a row class: one dict display of its fields and ``computed`` properties."""
    hints = typing.get_type_hints(cls)
    typed = [(f.name, hints[f.name]) for f in fields(cls)]
    typed += [(name, typing.get_type_hints(getattr(cls, name).fget)["return"]) for name in cls.computed]
    items = ", ".join(f"{name!r}: {_conversion(f'row.{name}', kind)}" for name, kind in typed)
    namespace: dict[str, object] = {}
    exec(f"def to_dict(row):\n    return {{{items}}}\n", {"iso": iso}, namespace)  # noqa: S102
    return cast(Callable[[JsonRow], JSONObject], namespace["to_dict"])


def _conversion(expr: str, kind: object) -> str:
    """The expression that writes ``expr``, a value of type ``kind``, as JSON."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    if optional:
        if len(args) != 1:
            return expr
        inner = _conversion(expr, args[0])
        return inner if inner in (expr, f"iso({expr})") else f"None if {expr} is None else {inner}"
    origin = typing.get_origin(kind) or kind
    if kind is datetime:
        return f"iso({expr})"
    if origin in (Mapping, dict):
        return f"dict({expr})"
    if origin is tuple:
        if isinstance(args[0], type) and issubclass(args[0], JsonRow):
            return f"[item.to_dict() for item in {expr}]"
        return f"list({expr})"
    if isinstance(kind, type) and issubclass(kind, JsonRow):
        return f"{expr}.to_dict()"
    return expr


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


class PictureDoc(TypedDict):
    """The JSON of a :class:`Picture` (``Picture.to_dict``; ``scans show`` prints it as ``fleet_picture``).

    ``to_dict`` itself gives a ``JSONObject`` (what the JSON writers take; a TypedDict is none)."""

    scan: int
    time: str
    hosts: int
    statuses: dict[str, int]
    stale: int
    scan_statuses: dict[str, int]
    scope: list[str] | None
    waves: JSONObject


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
        """The picture as JSON (the shape :class:`PictureDoc` names, for readers that index it)."""
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
class Compromise(JsonRow):
    """A host and wave with evidence of exploitation: first evidence, protection time, and the flag."""

    computed = ("compromised_before_protected",)

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


@dataclass(frozen=True)
class ExposureWindow(JsonRow):
    """First seen vulnerable to first seen protected after it (open when ``first_protected`` is None)."""

    computed = ("days",)

    host_id: int
    wave: str
    first_vulnerable: datetime | None
    first_protected: datetime | None

    @property
    def days(self) -> float | None:
        start, end = self.first_vulnerable, self.first_protected
        return round((end - start).total_seconds() / 86400, 3) if start and end else None


@dataclass(frozen=True)
class HostRow(JsonRow):
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


@dataclass(frozen=True)
class Service(JsonRow):
    """One (host, port) service as one scan saw it."""

    port: int | None
    status: str
    address: str | None
    build: str | None
    build_source: str | None
    error: str | None


@dataclass(frozen=True)
class HostSnapshot(JsonRow):
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
class CurrentVerdict(JsonRow):
    """A host's place in the current fleet picture."""

    scan: int
    status: str
    port: int | None
    build: str | None
    conflict: bool
    seen_at: datetime | None
    waves: Mapping[str, str]


@dataclass(frozen=True)
class HuntSummary(JsonRow):
    """One hunt of a host: when, its verdict, how many findings and the first one's time."""

    hunt: int
    time: datetime
    verdict: str
    findings: int
    first_finding: datetime | None


@dataclass(frozen=True)
class HostHistory(JsonRow):
    """One host across snapshots and hunts (``exwatch hosts show``)."""

    computed = ("exposed_again",)

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

    @property
    def exposed_again(self) -> tuple[ExposureWindow, ...]:
        """The windows after the first one closed, read from the snapshots: the host seen vulnerable
        again after it was seen protected (a mitigation rolled back or lost, a server restored from an
        old image), each open until a later snapshot sees it protected.  The fleet's metrics keep the
        first window (``exposure``); a page that showed only it would call an exposed host closed."""
        later: list[ExposureWindow] = []
        ordered = sorted((s for s in self.snapshots if s.time is not None), key=lambda s: (s.time, s.scan))
        for window in self.exposure:
            closed = window.first_protected
            if closed is None:
                continue
            start: datetime | None = None
            for snap in (s for s in ordered if s.time is not None and s.time > closed):
                state = snap.waves.get(window.wave)
                if state == "vulnerable" and start is None:
                    start = snap.time
                elif state in PROTECTED and start is not None:
                    later.append(ExposureWindow(self.host_id, window.wave, start, snap.time))
                    start = None
            if start is not None:
                later.append(ExposureWindow(self.host_id, window.wave, start, None))
        return tuple(later)


@dataclass(frozen=True)
class WaveVerdict(JsonRow):
    """A host's verdict for one wave in the fleet picture: state, reason and fix, and the scan."""

    state: str | None
    reason: str | None
    fix: str | None
    scan: int


@dataclass(frozen=True)
class FindingRow(JsonRow):
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


Item = TypeVar("Item")


@dataclass(frozen=True)
class Listing(Generic[Item]):
    """One page of a listing: ``items`` from ``offset`` on, out of ``total`` (``limit``: the page size)."""

    total: int
    limit: int
    offset: int
    items: tuple[Item, ...]
