"""Import of exports: answers judged like the scanner's, stored as one scan per source and day.

An export line is a *passive* observation: what a search engine's crawler got back from one (address,
port) at its own time.  Its headers and body go through the scanner's own fingerprint parser
(exwatch.scan.fingerprint: ``X-OWA-Version``, the OWA asset path ``/owa/auth/15.1.2176/``, Exchange
signs) and the kb's verdict (exwatch.scan.observation.host_record), so an imported observation says
exactly what a scan without probes would have said of the same answer.  Mitigations are invisible
to a passive observation: a mitigated server reads ``vulnerable``, as after ``exwatch scan`` without
``--probe``.

Observations are grouped by their UTC day; each day becomes one stored scan (its time: the day's last
observation), tagged ``source=<shodan|censys>`` in its parameters and on its hosts (with ``country``
when the export gives one), so that ``exwatch report --tag country=NL`` shows a country's exposure
over time.  Within a day the newest observation of an (address, port) wins.  A file imported twice is
recognised by its SHA-256 and its days are not stored again.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from exwatch.errors import InputError
from exwatch.record import Observation
from exwatch.scan.fingerprint import Fingerprinter, FingerprintResult, parse_owa_path
from exwatch.scan.observation import host_record, known_build
from exwatch.scan.probes import ProbeResponse
from exwatch.scan.targets import Target

BATCH = 5000
MAX_EXAMPLES = 5


class Malformed(Exception):
    """One export item that cannot be read: counted under its reason, never fatal."""


@dataclass(frozen=True, slots=True)
class Seen:
    """What one export item says of one HTTP service, in the few fields a record needs."""

    time: datetime
    address: str
    port: int
    scheme: str
    fp: FingerprintResult
    country: str | None = None


@dataclass
class ImportResult:
    """What an import read and stored."""

    source: str
    path: str
    lines: int = 0
    observations: int = 0
    skipped: int = 0  # items without an HTTP service (not malformed)
    malformed: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    scans: dict[str, int] = field(default_factory=dict)  # day -> scan id
    already: list[str] = field(default_factory=list)  # days this file had stored before
    statuses: Counter[str] = field(default_factory=Counter)
    waves: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def bad(self, line: int, reason: str) -> None:
        self.malformed[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {line}: {reason}")

    @property
    def vulnerable(self) -> int:
        return max((c.get("vulnerable", 0) for c in self.waves.values()), default=0)

    @property
    def exit_code(self) -> int:
        """1 something vulnerable; 3 nothing vulnerable but some items unreadable; else 0."""
        if self.vulnerable:
            return 1
        return 3 if self.malformed.total() else 0

    @property
    def lines_per_second(self) -> float | None:
        return round(self.lines / self.seconds, 1) if self.seconds else None

    def to_dict(self) -> dict[str, object]:
        """The JSON form (``exwatch import --format json``)."""
        return {
            "source": self.source,
            "file": self.path,
            "lines": self.lines,
            "observations": self.observations,
            "skipped": self.skipped,
            "malformed": self.malformed.total(),
            "malformed_by_reason": dict(self.malformed),
            "malformed_examples": list(self.examples),
            "scans": dict(self.scans),
            "already_imported_days": list(self.already),
            "statuses": dict(self.statuses),
            "waves": {w: dict(c) for w, c in sorted(self.waves.items())},
            "seconds": round(self.seconds, 3),
            "lines_per_second": self.lines_per_second,
        }


def parse_time(value: Any) -> datetime:
    """An export timestamp (ISO 8601; Shodan's has no zone and is UTC) as an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        raise Malformed("no timestamp")
    text = value.strip().replace("Z", "+00:00")
    # Censys writes nanoseconds (2022-01-19T16:23:57.883843845Z); Python reads six digits.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail[:9] if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Malformed("bad timestamp") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise Malformed("bad port")
    try:
        port = int(value)
    except ValueError as exc:
        raise Malformed("bad port") from exc
    if not 0 < port < 65536:
        raise Malformed("bad port")
    return port


def fingerprint(status: int | None, headers: Mapping[str, str], bodies: Iterable[bytes]) -> FingerprintResult:
    """The scanner's fingerprint of one captured answer: headers, then the OWA path in any body."""
    fp = Fingerprinter(known_build=known_build)
    texts = [b for b in bodies if b]
    fp.absorb(ProbeResponse(status, dict(headers), texts[0] if texts else b""))
    for body in texts:
        found = parse_owa_path(body)
        if found:
            fp.result.record("owa-path", found[0])
            if "owa-path" not in fp.result.signs:
                fp.result.signs.append("owa-path")
            break
    return fp.finish()


def record_of(seen: Seen, source: str, tags: Mapping[str, str]) -> Observation:
    """The observation record of one imported answer (the scanner's record shape)."""
    all_tags = {"source": source, **dict(tags)}
    if seen.country:
        all_tags.setdefault("country", seen.country)
    text = f"[{seen.address}]:{seen.port}" if ":" in seen.address else f"{seen.address}:{seen.port}"
    target = Target(seen.address, seen.port, seen.scheme, text, tuple(sorted(all_tags.items())))
    rec = host_record(
        target,
        seen.address,
        fp=seen.fp,
        probes=None,
        error=None,
        cert_names=[],
        cert_sha256=None,
        when=seen.time,
    )
    rec["source"] = source
    return rec


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


Reader = Callable[[Path, ImportResult], Iterator[Seen]]


def import_file(
    source: str,
    path: Path,
    store_url: str | None,
    *,
    tags: Mapping[str, str] | None = None,
    on_record: Callable[[Observation], None] | None = None,
) -> ImportResult:
    """Read an export of ``source`` (``shodan`` or ``censys``) and store one scan per observation day."""
    import time

    from exwatch.importers import censys, shodan

    readers: dict[str, Reader] = {"shodan": shodan.read, "censys": censys.read}
    if source not in readers:
        raise InputError(f"unknown export source {source!r} (known: {', '.join(readers)})")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    started = time.monotonic()
    result = ImportResult(source, str(path))
    try:
        digest = file_digest(path)
        days: dict[date, dict[tuple[str, int], Seen]] = {}
        for seen in readers[source](path, result):
            result.observations += 1
            per_day = days.setdefault(seen.time.date(), {})
            key = (seen.address, seen.port)
            old = per_day.get(key)
            if old is None or seen.time >= old.time:
                per_day[key] = seen
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not result.observations and result.malformed.total():
        first = result.examples[0] if result.examples else "no readable item"
        raise InputError(f"{path}: nothing in it reads as a {source} export ({first})")
    if days:
        _store(source, path, digest, days, store_url, dict(tags or {}), result, on_record)
    result.seconds = time.monotonic() - started
    return result


def _store(
    source: str,
    path: Path,
    digest: str,
    days: Mapping[date, Mapping[tuple[str, int], Seen]],
    store_url: str | None,
    tags: dict[str, str],
    result: ImportResult,
    on_record: Callable[[Observation], None] | None,
) -> None:
    from sqlalchemy import select

    from exwatch.fleet import open_store
    from exwatch.fleet import schema as ft

    with open_store(store_url) as store:
        with store.connect() as conn:
            done_params = conn.execute(
                select(ft.scans.c.params).where(ft.scans.c.params.like(f'%"import_sha256": "{digest}"%'))
            ).scalars()
            done_days = {
                text.split('"import_day": "', 1)[1][:10] for text in done_params if '"import_day"' in text
            }
        for day in sorted(days):
            label = day.isoformat()
            if label in done_days:
                result.already.append(label)
                continue
            seen_items = sorted(days[day].values(), key=lambda s: (s.time, s.address, s.port))
            last = seen_items[-1].time
            params = {
                "targets": [],
                "source": source,
                "tags": {"source": source, **tags},
                "import_file": str(path.resolve()),
                "import_sha256": digest,
                "import_day": label,
                "scan_time": last.isoformat(),
            }
            scan_id = store.start_scan(params, started_at=last)
            batch: list[Observation] = []
            for seen in seen_items:
                rec = record_of(seen, source, tags)
                result.statuses[str(rec["status"])] += 1
                if rec["status"] == "exchange":
                    for wave, verdict in rec["waves"].items():
                        result.waves.setdefault(wave, Counter())[str(verdict.get("state"))] += 1
                if on_record is not None:
                    on_record(rec)
                batch.append(rec)
                if len(batch) >= BATCH:
                    store.add_observations(scan_id, batch)
                    batch = []
            store.add_observations(scan_id, batch)
            store.finish_scan(scan_id, finished_at=last)
            result.scans[label] = scan_id
