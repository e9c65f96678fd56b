"""Value objects of a hunt: options, the task a worker gets and what it sends back, findings, file
errors, coverage and the result. They cross the seams (engine -> worker -> engine -> CLI, cluster and
store) as these types; ``to_dict``/``from_dict`` are used only at the JSON and store edges."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exwatch.collect.manifest import Manifest

CONFIDENCES = ("confirmed", "likely", "review")
CONFIDENCE_RANK = {"confirmed": 3, "likely": 2, "review": 1}
VERDICTS = ("compromised", "attempted", "clean", "incomplete")


def as_utc(t: datetime | None) -> datetime | None:
    """``t`` in UTC; a time without a zone is UTC (Exchange and IIS write UTC)."""
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso_z(t: datetime | None, *, precise: bool = False) -> str | None:
    """The one form of a time in hunt output: UTC to the second with ``Z`` (2021-03-03T04:12:09Z).

    A time without a zone is UTC (Exchange and IIS write UTC). Output drops sub-second digits so that
    findings, coverage and next steps read and compare alike; ``precise`` keeps them (with ``Z``) for
    the workers' results, which the engine reads back into times.
    """
    t = as_utc(t)
    if t is None:
        return None
    if precise:
        return t.isoformat().replace("+00:00", "Z")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits that stop an archive bomb: what the archives under one PATH may expand to, all nesting
    together (bytes written, members, ratio to the archives' own size), and one member's size."""

    max_total_bytes: int = 8 * 1024**3
    max_member_bytes: int = 4 * 1024**3
    max_ratio: float = 200.0
    max_members: int = 200_000
    max_depth: int = 2
    # Ratios are only judged above this size: small, very regular files compress well legitimately.
    ratio_floor_bytes: int = 16 * 1024**2


@dataclass(frozen=True)
class HuntOptions:
    """What to hunt and how; every field is plain data so that workers can receive it."""

    host: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    rule_dirs: tuple[Path, ...] = ()
    yara_files: tuple[Path, ...] = ()
    ioc_files: tuple[Path, ...] = ()
    exchange_path: Path | None = None
    iis_logs: Path | None = None
    jobs: int = 0
    builtin_rules: bool = True
    # False parses every line (no literal pre-filter): for benchmarks and for rules without literals.
    prefilter: bool = True
    # Pre-filter engine: hyperscan, re2, ahocorasick or regex; None picks the fastest available.
    strategy: str | None = None
    max_line: int = 1024 * 1024
    chunk_size: int = 16 * 1024 * 1024
    # Bytes of one log or event file that are read; the rest is reported, not silently dropped.
    max_file_bytes: int = 16 * 1024**3
    limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    # Verify a collection package (exwatch collect) against its manifest before hunting it.
    verify_collections: bool = True


@dataclass(frozen=True)
class RuleSpec:
    """Which rules a worker compiles: plain data, so that it travels with each task to a process or
    Dask worker (``worker.load_bundle`` compiles it once per process). ``strategy`` is the pre-filter
    engine (``"none"`` parses every line; empty picks the fastest available)."""

    builtin: bool = True
    rule_dirs: tuple[str, ...] = ()
    yara_files: tuple[str, ...] = ()
    ioc_files: tuple[str, ...] = ()
    strategy: str = ""


@dataclass(frozen=True)
class HuntTask:
    """One evidence file to hunt and how: what the engine sends a worker (``worker.hunt_file``).

    Top-level and plain data, so that it pickles for a process pool or a Dask worker."""

    path: str
    rel: str
    family: str
    size: int = 0
    mtime: float = 0.0
    rules: RuleSpec = field(default_factory=RuleSpec)
    since: datetime | None = None
    until: datetime | None = None
    max_line: int = 1024 * 1024
    chunk_size: int = 16 * 1024 * 1024
    # Bytes of the file that are read (0: no limit).
    max_file_bytes: int = 0
    # An archive member in the hunt's temp dir: the worker deletes it once hunted.
    temp: bool = False
    # A log last written before --since: only its coverage is read.
    coverage_only: bool = False


@dataclass(frozen=True)
class Evidence:
    """Where a finding comes from: a file, a line or record, a byte offset, an excerpt."""

    file: str
    line: int | None = None
    record: int | None = None
    offset: int | None = None
    excerpt: str = ""
    sha256: str | None = None
    # The evidence family (httpproxy, iis, ecp, oabgenerator, evtx, file, ...) and the facts a responder
    # acts on, read from the parsed line or event (client_ip, user, url, path, command, cmdlet).
    family: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    # Where the matched part starts in ``excerpt`` (the rule's literal or the indicator found on the
    # line), so that a shorter view can be centred on it; not part of the JSON.
    focus: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"file": self.file}
        if self.line is not None:
            out["line"] = self.line
        if self.record is not None:
            out["record"] = self.record
        out["offset"] = self.offset
        out["excerpt"] = self.excerpt
        out["sha256"] = self.sha256
        if self.family:
            out["family"] = self.family
        if self.facts:
            out["facts"] = dict(self.facts)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        return cls(
            file=str(data["file"]),
            line=data.get("line"),
            record=data.get("record"),
            offset=data.get("offset"),
            excerpt=str(data.get("excerpt") or ""),
            sha256=data.get("sha256"),
            family=str(data.get("family") or ""),
            facts={str(k): str(v) for k, v in (data.get("facts") or {}).items()},
        )


@dataclass(frozen=True)
class Finding:
    """One piece of compromise evidence, as CONTRACTS.md describes it. A worker makes it without a
    host (``host=""``); the engine names the host."""

    rule: str
    wave: str
    cve: str
    confidence: str
    time: datetime | None
    title: str
    description: str
    host: str
    evidence: Evidence
    source: str = ""

    @property
    def above_review(self) -> bool:
        """A finding of likely or confirmed confidence: what makes a hunt exit 1."""
        return CONFIDENCE_RANK[self.confidence] >= CONFIDENCE_RANK["likely"]

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "wave": self.wave,
            "cve": self.cve,
            "confidence": self.confidence,
            "time": iso_z(self.time),
            "title": self.title,
            "description": self.description,
            "host": self.host,
            "evidence": self.evidence.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """The finding of a JSON document (``to_dict``); the time to the second, as written."""
        text = data.get("time")
        return cls(
            rule=str(data["rule"]),
            wave=str(data.get("wave") or ""),
            cve=str(data.get("cve") or ""),
            confidence=str(data["confidence"]),
            time=datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None,
            title=str(data.get("title") or ""),
            description=str(data.get("description") or ""),
            host=str(data.get("host") or ""),
            evidence=Evidence.from_dict(data["evidence"]),
        )


@dataclass(frozen=True)
class FileError:
    """A file (or part of one) that could not be read: reported, never dropped in silence."""

    file: str
    error: str
    kind: str = "unreadable"

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "kind": self.kind, "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileError:
        return cls(str(data["file"]), str(data["error"]), str(data.get("kind") or "unreadable"))


@dataclass(frozen=True)
class FileCoverage:
    """What one file covers: its first and last event time, its size, its event records."""

    family: str
    first: datetime | None = None
    last: datetime | None = None
    bytes: int = 0
    records: int | None = None
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileStats:
    """Work counters of one file: candidate lines after the pre-filter, lines parsed, ``#Fields:``
    headers read, lines cut at --max-line, event records, and the encoding a log was transcoded from."""

    candidates: int = 0
    parsed: int = 0
    headers: int = 0
    truncated: int = 0
    records: int = 0
    encoding: str | None = None


@dataclass(frozen=True)
class FileHunt:
    """What a worker sends back for one file: findings (without host), errors, coverage, counters, and
    whether the file holds evidence inside --since/--until."""

    file: str
    family: str
    findings: tuple[Finding, ...] = ()
    errors: tuple[FileError, ...] = ()
    coverage: FileCoverage | None = None
    stats: FileStats = field(default_factory=FileStats)
    in_window: bool = True


@dataclass(frozen=True)
class StoredHunt:
    """Where a host's hunt went in the store: its hunt id, the stored host it is linked to (if its name
    matches exactly one), and a note when it matches none or several."""

    hunt_id: int
    host_id: int | None
    message: str | None = None

    @property
    def linked(self) -> bool:
        return self.host_id is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "hunt_id": self.hunt_id,
            "host_id": self.host_id,
            "linked": self.linked,
            "message": self.message,
        }


@dataclass(frozen=True)
class LogCoverage:
    """What one log family (or HttpProxy protocol folder) of a host covers: its first and last event
    time, files, bytes, and event records (None when no file of it counts records)."""

    first: datetime | None = None
    last: datetime | None = None
    files: int = 0
    bytes: int = 0
    records: int | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "first": iso_z(self.first),
            "last": iso_z(self.last),
            "files": self.files,
            "bytes": self.bytes,
        }
        if self.records is not None:
            out["records"] = self.records
        return out


@dataclass(frozen=True)
class FilesCoverage:
    """The other files of a host (web folders, dumps, scripts): how many, and their bytes."""

    files: int
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"files": self.files, "bytes": self.bytes}


@dataclass(frozen=True)
class CollectionCoverage:
    """What a collection package (exwatch collect) says about itself: when, how much, what it left out
    (files per reason), what it listed without copying, and the build it read."""

    collected_at: datetime | None
    files: int
    bytes: int
    skipped: Mapping[str, int] = field(default_factory=dict)
    listed_not_copied: int = 0
    build: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "collected_at": iso_z(self.collected_at),
            "files": self.files,
            "bytes": self.bytes,
            "skipped": dict(self.skipped),
            "listed_not_copied": self.listed_not_copied,
            "build": self.build,
        }


@dataclass(frozen=True)
class Coverage:
    """A host's coverage: per log family (and ``httpproxy/<Protocol>``) in the order first seen, its other
    files, and the collection's own account when it was hunted from a collection package."""

    logs: Mapping[str, LogCoverage] = field(default_factory=dict)
    files: FilesCoverage | None = None
    collection: CollectionCoverage | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON form (``coverage`` of a host; what the store keeps): one entry per family, then
        ``files`` and ``collection``."""
        out: dict[str, object] = {k: v.to_dict() for k, v in self.logs.items()}
        if self.files is not None:
            out["files"] = self.files.to_dict()
        if self.collection is not None:
            out["collection"] = self.collection.to_dict()
        return out


@dataclass(frozen=True)
class Seen:
    """How often and when a thing (file, address, account) shows in a host's findings, and by which rules."""

    findings: int
    first: datetime | None
    last: datetime | None
    rules: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "findings": self.findings,
            "first": iso_z(self.first),
            "last": iso_z(self.last),
            "rules": list(self.rules),
        }


@dataclass(frozen=True)
class FileToAct:
    """A file of the package a finding names: remove it (a confirmed finding) or inspect it."""

    path: str
    action: str
    confidence: str
    seen: Seen
    sha256: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "action": self.action, **self.seen.to_dict()}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        out["confidence"] = self.confidence
        return out


@dataclass(frozen=True)
class NamedFile:
    """A file the logs name (a shell written, a DLL loaded) that the package does not hold, and where."""

    path: str
    named_in: str
    seen: Seen

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, **self.seen.to_dict(), "named_in": self.named_in}


@dataclass(frozen=True)
class Address:
    """A client address of the findings; ``internal`` a proxy, balancer or the server itself,
    ``published`` on a published attacker list."""

    address: str
    seen: Seen
    internal: bool = False
    published: bool = False

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"address": self.address, **self.seen.to_dict(), "internal": self.internal}
        if self.published:
            out["published"] = True
        return out


@dataclass(frozen=True)
class Account:
    """An account the findings name; ``system`` when commands ran with the server's own rights."""

    account: str
    seen: Seen
    system: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"account": self.account, **self.seen.to_dict(), "system": self.system}


@dataclass(frozen=True)
class Window:
    """The first and last likely or confirmed evidence of a host: the window to investigate."""

    first: datetime
    last: datetime

    def to_dict(self) -> dict[str, object]:
        return {"first": iso_z(self.first), "last": iso_z(self.last)}


@dataclass(frozen=True)
class Fix:
    """What closes the way in: from ``kb`` per wave (build unknown), from a collection's build, or from
    the store's last scan of the host (``host_id``, ``scanned_at``, ``status``). ``waves`` is the fix
    text per vulnerable wave, ``states`` the build's state per wave when the build is known."""

    source: str
    build: str | None
    text: str
    waves: Mapping[str, str] = field(default_factory=dict)
    states: Mapping[str, str] | None = None
    host_id: int | None = None
    scanned_at: datetime | None = None
    status: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source, "build": self.build}
        if self.states is not None:
            out["states"] = dict(self.states)
        in_store = self.source == "store"
        if in_store and self.build is None:
            out["host_id"] = self.host_id
        out["waves"] = dict(self.waves)
        out["text"] = self.text
        if in_store and self.build is not None:
            out["host_id"] = self.host_id
            out["scanned_at"] = self.scanned_at.isoformat() if self.scanned_at else None
            out["status"] = self.status
        return out


@dataclass(frozen=True)
class NextSteps:
    """What a responder does on one host after the hunt (exwatch.hunt.nextsteps.next_steps)."""

    window: Window | None = None
    files: tuple[FileToAct, ...] = ()
    files_named_in_logs: tuple[NamedFile, ...] = ()
    addresses: tuple[Address, ...] = ()
    accounts: tuple[Account, ...] = ()
    waves: tuple[str, ...] = ()
    fix: Fix | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "window": self.window.to_dict() if self.window else None,
            "files": [r.to_dict() for r in self.files],
            "files_named_in_logs": [r.to_dict() for r in self.files_named_in_logs],
            "addresses": [r.to_dict() for r in self.addresses],
            "accounts": [r.to_dict() for r in self.accounts],
            "waves": list(self.waves),
            "fix": self.fix.to_dict() if self.fix else None,
        }


@dataclass(frozen=True)
class HuntStats:
    """Work counters of a hunt (files, bytes, candidate lines, lines parsed) and the rule notes."""

    files: int = 0
    bytes: int = 0
    candidates: int = 0
    parsed: int = 0
    notes: tuple[str, ...] = ()

    @classmethod
    def merge(cls, parts: Iterable[HuntStats]) -> HuntStats:
        """The counters of several hunts added up; each note once, in first-seen order."""
        parts = list(parts)
        notes = dict.fromkeys(n for p in parts for n in p.notes)
        return cls(
            files=sum(p.files for p in parts),
            bytes=sum(p.bytes for p in parts),
            candidates=sum(p.candidates for p in parts),
            parsed=sum(p.parsed for p in parts),
            notes=tuple(notes),
        )


@dataclass
class HostResult:
    """Verdict and coverage of one host."""

    host: str
    verdict: str
    coverage: Coverage
    warnings: list[str]
    counts: dict[str, int]
    errors: list[FileError] = field(default_factory=list)
    # The package (PATH, or a package inside a folder of packages) this host was hunted from.
    source: str = ""
    # What to do now (exwatch.hunt.nextsteps.next_steps; None when the host could not be hunted), and
    # where the hunt went in the store.
    next_steps: NextSteps | None = None
    store: StoredHunt | None = None
    # The manifest of the collection package (exwatch collect) it was hunted from: its build is stored.
    collection: Manifest | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "host": self.host,
            "source": self.source,
            "verdict": self.verdict,
            "counts": self.counts,
            "errors": len(self.errors),
            "coverage": self.coverage.to_dict(),
            "warnings": self.warnings,
            "next_steps": self.next_steps.to_dict() if self.next_steps else {},
        }
        if self.store is not None:
            out["store"] = self.store.to_dict()
        return out


@dataclass
class HuntResult:
    """Everything one hunt found: per-host verdicts, findings in time order, coverage, errors."""

    hosts: list[HostResult]
    findings: list[Finding]
    errors: list[FileError]
    stats: HuntStats = field(default_factory=HuntStats)

    @property
    def verdict(self) -> str:
        """The worst verdict over all hosts."""
        order = {"compromised": 0, "attempted": 1, "incomplete": 2, "clean": 3}
        if not self.hosts:
            return "incomplete"
        return min((h.verdict for h in self.hosts), key=lambda v: order[v])

    @property
    def above_review(self) -> bool:
        return any(f.above_review for f in self.findings)

    @property
    def exit_code(self) -> int:
        """DESIGN.md: 1 a likely or confirmed finding; 3 none, but some file unread or a host without
        usable evidence (verdict incomplete); else 0."""
        if self.above_review:
            return 1
        if self.errors or self.verdict == "incomplete":
            return 3
        return 0

    def to_dict(self, min_confidence: str = "review") -> dict[str, object]:
        """The JSON document; ``min_confidence`` leaves out findings below it (hosts keep every count)."""
        floor = CONFIDENCE_RANK[min_confidence]
        hosts = [h.to_dict() for h in self.hosts]
        return {
            "hosts": hosts,
            "findings": [f.to_dict() for f in self.findings if CONFIDENCE_RANK[f.confidence] >= floor],
            "coverage": {h["host"]: h["coverage"] for h in hosts},
            "errors": [e.to_dict() for e in self.errors],
        }
