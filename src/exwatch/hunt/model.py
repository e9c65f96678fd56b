"""Value objects of a hunt: options, the task a worker gets and what it sends back, findings, file
errors, coverage and the result. They cross the seams (engine -> worker -> engine -> CLI, cluster and
store) as these types; ``to_dict``/``from_dict`` are used only at the JSON and store edges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def iso_text_z(text: str | None) -> str | None:
    """A time string of a worker's result (``precise`` form) in the output form."""
    if not text:
        return None
    return iso_z(datetime.fromisoformat(text.replace("Z", "+00:00")))


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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file}
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

    def to_dict(self) -> dict[str, Any]:
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

    def to_dict(self) -> dict[str, Any]:
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "hunt_id": self.hunt_id,
            "host_id": self.host_id,
            "linked": self.linked,
            "message": self.message,
        }


@dataclass
class HostResult:
    """Verdict and coverage of one host."""

    host: str
    verdict: str
    coverage: dict[str, dict[str, Any]]
    warnings: list[str]
    counts: dict[str, int]
    errors: list[FileError] = field(default_factory=list)
    # The package (PATH, or a package inside a folder of packages) this host was hunted from.
    source: str = ""
    # What to do now (exwatch.hunt.nextsteps.next_steps), and where the hunt went in the store.
    next_steps: dict[str, Any] = field(default_factory=dict)
    store: StoredHunt | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "source": self.source,
            "verdict": self.verdict,
            "counts": self.counts,
            "errors": len(self.errors),
            "coverage": self.coverage,
            "warnings": self.warnings,
            "next_steps": self.next_steps,
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
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """The worst verdict over all hosts."""
        order = {"compromised": 0, "attempted": 1, "incomplete": 2, "clean": 3}
        if not self.hosts:
            return "incomplete"
        return min((h.verdict for h in self.hosts), key=lambda v: order[v])

    @property
    def above_review(self) -> bool:
        return any(CONFIDENCE_RANK[f.confidence] > 1 for f in self.findings)

    @property
    def exit_code(self) -> int:
        """DESIGN.md: 1 a likely or confirmed finding; 3 none, but some file unread or a host without
        usable evidence (verdict incomplete); else 0."""
        if self.above_review:
            return 1
        if self.errors or self.verdict == "incomplete":
            return 3
        return 0

    def to_dict(self, min_confidence: str = "review") -> dict[str, Any]:
        """The JSON document; ``min_confidence`` leaves out findings below it (hosts keep every count)."""
        floor = CONFIDENCE_RANK[min_confidence]
        return {
            "hosts": [h.to_dict() for h in self.hosts],
            "findings": [f.to_dict() for f in self.findings if CONFIDENCE_RANK[f.confidence] >= floor],
            "coverage": {h.host: h.coverage for h in self.hosts},
            "errors": [e.to_dict() for e in self.errors],
        }
