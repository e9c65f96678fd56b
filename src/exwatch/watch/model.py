"""The alert a watch sends on a change, and the ``--every`` durations (pure)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from exwatch.errors import InputError

# One alert per change (never one per round):
#   exposed          a host seen vulnerable for a wave for the first time (also a host not reachable before)
#   protection_lost  patched or mitigated -> vulnerable (a removed mitigation, a reinstalled old build)
#   protected        vulnerable -> patched or mitigated
#   compromised      a new finding of likely or confirmed confidence stored by a hunt for the host
#   gone             an Exchange host unreachable for two rounds in a row
#   back             a gone host answering as Exchange again
KINDS: tuple[str, ...] = ("exposed", "protection_lost", "protected", "compromised", "gone", "back")
PROTECTED = frozenset({"patched", "mitigated"})
# Severity per kind for syslog (RFC 5424 6.2.1: 2 critical, 3 error, 4 warning, 5 notice).
SEVERITY = {"compromised": 2, "exposed": 3, "protection_lost": 3, "gone": 4, "back": 5, "protected": 5}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``6h``, ``1d`` (a bare number is seconds) as seconds; InputError otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise InputError(f"--every {text!r}: expected a duration such as 30s, 15m, 6h or 1d")
    seconds = float(m.group(1)) * _UNIT[(m.group(2) or "s").lower()]
    if seconds <= 0:
        raise InputError(f"--every {text!r}: the interval must be more than 0")
    return seconds


@dataclass(frozen=True)
class NewFinding:
    """A finding of likely or confirmed confidence stored since the last round, attributed to a watched
    host (``host`` as the watch names it); ``id`` is the store's finding id."""

    host: str
    wave: str | None
    confidence: str
    rule: str
    id: int = 0


@dataclass(frozen=True)
class Alert:
    """One change of one host (and wave), as every sink receives it.

    ``host`` is the host as the targets name it (address or DNS name); ``port`` the service that gave
    the verdict; ``wave`` is None for ``gone`` and ``back``; ``state``/``previous`` are per-wave states
    (or ``unreachable``/``compromised``); ``scan`` the stored snapshot of the round; ``id`` a stable
    identifier receivers can use to drop a repeat.
    """

    kind: str
    time: str
    host: str
    address: str | None
    port: int | None
    wave: str | None
    state: str | None
    previous: str | None
    build: str | None
    fix: str | None
    scan: int
    watch: str = ""
    detail: str | None = None

    @property
    def id(self) -> str:
        """Stable per (watch, scan, host, wave, kind): the same change is never two alerts."""
        text = f"{self.watch}|{self.scan}|{self.host}|{self.wave or ''}|{self.kind}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def to_dict(self) -> dict[str, object]:
        """The JSON event: the fields of the issue plus ``id``, ``watch`` and ``detail``."""
        out: dict[str, object] = asdict(self)
        out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Back from :meth:`to_dict` (unknown keys ignored; TypeError when a field is missing)."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def fix_text(verdict: Mapping[str, Any]) -> str | None:
    """The fix of a wave verdict of the observation record as one line of text (None: no fix)."""
    fix = verdict.get("fix")
    if isinstance(fix, Mapping):
        text = fix.get("text")
        if text:
            return str(text)
        sus = fix.get("security_update") or []
        if sus:
            return f"install build {sus[-1]} or later"
        if fix.get("cumulative_update"):
            return f"update to CU {fix['cumulative_update']}"
        return None
    return str(fix) if fix else None


@dataclass(frozen=True)
class WaveSeen:
    """One wave's verdict of a host in one round: its state and the fix as text."""

    state: str
    fix: str | None = None


@dataclass(frozen=True)
class HostSeen:
    """One host in one round as detection reads it: the scan's folded host record (exwatch.scan.fold)."""

    status: str | None
    address: str | None = None
    port: int | None = None
    build: str | None = None
    error: str | None = None
    waves: Mapping[str, WaveSeen] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> HostSeen:
        """From a folded host record (a wave verdict that is not an object is left out)."""
        waves = {
            str(w): WaveSeen(str(v.get("state")), fix_text(v))
            for w, v in (rec.get("waves") or {}).items()
            if isinstance(v, Mapping)
        }
        return cls(
            status=rec.get("status"),
            address=rec.get("address"),
            port=rec.get("port"),
            build=rec.get("build"),
            error=rec.get("error"),
            waves=waves,
        )


@dataclass
class HostEntry:
    """What a watch remembers of one host: the last definite state per wave, the waves ever seen
    vulnerable, rounds in a row without an Exchange answer, an open ``gone``, where it last answered,
    its store id, and the waves (``""``: none) a ``compromised`` alert was sent for."""

    waves: dict[str, str] = field(default_factory=dict)
    ever_vulnerable: list[str] = field(default_factory=list)
    missing: int = 0
    gone: bool = False
    address: str | None = None
    port: int | None = None
    build: str | None = None
    host_id: int | None = None
    compromised: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "waves": dict(self.waves),
            "ever_vulnerable": list(self.ever_vulnerable),
            "missing": self.missing,
            "gone": self.gone,
            "address": self.address,
            "port": self.port,
            "build": self.build,
        }
        if self.host_id is not None:
            out["host_id"] = self.host_id
        if self.compromised:
            out["compromised"] = list(self.compromised)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostEntry:
        host_id = data.get("host_id")
        return cls(
            waves={str(w): str(s) for w, s in (data.get("waves") or {}).items()},
            ever_vulnerable=[str(w) for w in data.get("ever_vulnerable") or []],
            missing=int(data.get("missing") or 0),
            gone=bool(data.get("gone")),
            address=data.get("address"),
            port=data.get("port"),
            build=data.get("build"),
            host_id=None if host_id is None else int(host_id),
            compromised=[str(w) for w in data.get("compromised") or []],
        )


@dataclass
class SinkStart:
    """A sink registered with a watch: the first alert id it is owed, and its URL (secrets masked)."""

    since: int = 1
    url: str = ""


@dataclass
class WatchState:
    """A watch's detection state, kept as JSON in the store (``watch_state``) so that a restarted
    watch goes on where the last recorded round left it."""

    hosts: dict[str, HostEntry] = field(default_factory=dict)
    rounds: int = 0
    last_scan: int | None = None
    findings_after: int = 0  # the newest finding id already considered
    sinks: dict[str, SinkStart] = field(default_factory=dict)  # sink key -> registration
    started: str | None = None  # when the watch first ran (ISO 8601)

    def to_dict(self) -> dict[str, object]:
        """The stored JSON document."""
        out: dict[str, object] = {
            "hosts": {h: e.to_dict() for h, e in self.hosts.items()},
            "rounds": self.rounds,
            "last_scan": self.last_scan,
            "findings_after": self.findings_after,
            "sinks": {k: {"since": s.since, "url": s.url} for k, s in self.sinks.items()},
        }
        if self.started is not None:
            out["started"] = self.started
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WatchState:
        """Back from the stored JSON (missing keys take their defaults, unknown keys are ignored)."""
        hosts = data.get("hosts") or {}
        sinks = data.get("sinks") or {}
        last_scan = data.get("last_scan")
        return cls(
            hosts={str(h): HostEntry.from_dict(e) for h, e in hosts.items() if isinstance(e, Mapping)},
            rounds=int(data.get("rounds") or 0),
            last_scan=None if last_scan is None else int(last_scan),
            findings_after=int(data.get("findings_after") or 0),
            sinks={
                str(k): SinkStart(int(v.get("since") or 1), str(v.get("url") or ""))
                for k, v in sinks.items()
                if isinstance(v, Mapping)
            },
            started=data.get("started") or None,
        )
