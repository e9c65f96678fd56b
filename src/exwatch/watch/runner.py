"""The watch loop: scan the targets, fold per host, detect changes, record them, deliver to every sink.

One round: ``run_scan`` stores a snapshot; its records are folded per host (exwatch.scan.fold: an
Exchange answer on one port outranks a refused other port); new hunt findings are attributed to the
watched hosts; ``detect`` turns the previous state and the round into alerts and the next state; the
alert log records both in one transaction; then each sink gets what it has not taken yet (its spool
first).  Rounds start every ``every`` seconds from the first (a round longer than that is followed at
once by the next); ``stop`` (SIGTERM in the CLI) ends the watch after the current round.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from exwatch.config import data_dir, mask_url
from exwatch.fleet import Store, open_store
from exwatch.fleet import schema as ft
from exwatch.record import Observation
from exwatch.scan.engine import ScanOptions, run_scan
from exwatch.scan.fold import fold_services, host_of
from exwatch.watch.detect import detect as detect_changes
from exwatch.watch.log import AlertLog
from exwatch.watch.model import Alert, HostSeen, NewFinding, SinkStart, WatchState
from exwatch.watch.sinks import AlertSink, SinkError, Spool, open_sink, sink_key

EVIDENCE_CONFIDENCE = ("likely", "confirmed")


def watch_name(targets: Iterable[str], options: ScanOptions) -> str:
    """The default name of a watch: the same targets, target files and ports are the same watch."""
    ports = ",".join(f"{p.number}/{p.scheme}" for p in options.ports)
    text = "\n".join([*sorted(targets), *sorted(options.targets_files), ports])
    return "watch-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


@dataclass
class WatchConfig:
    """Everything that shapes a watch."""

    targets: list[str]
    options: ScanOptions
    store_url: str
    every: float
    rounds: int | None = None
    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    waves: tuple[str, ...] | None = None
    sinks: tuple[str, ...] = ()
    spool_dir: Path | None = None
    spool_limit: int = 10_000
    retries: int = 3
    backoff: float = 0.5
    sink_timeout: float = 5.0


@dataclass
class Delivery:
    """What one sink took in one round."""

    sink: str
    sent: int = 0
    spooled: int = 0
    queued: int = 0
    dropped: int = 0
    error: str | None = None


@dataclass
class RoundResult:
    """One round: its snapshot, hosts per status, alerts, deliveries and exit code."""

    number: int
    scan_id: int
    seconds: float
    hosts: int
    exchange: int
    vulnerable: int
    incomplete: int
    alerts: list[Alert]
    deliveries: list[Delivery]

    @property
    def exit_code(self) -> int:
        """DESIGN.md: 1 a vulnerable host; 3 none, but some host unreachable or unknown; else 0."""
        if self.vulnerable:
            return 1
        return 3 if self.incomplete else 0


def fold_hosts(records: Iterable[Observation]) -> dict[str, HostSeen]:
    """One folded host per host of a round's service (observation) records."""
    groups: dict[str, list[Observation]] = {}
    for rec in records:
        groups.setdefault(host_of(rec), []).append(rec)
    return {host: HostSeen.from_record(fold_services(recs)) for host, recs in groups.items()}


class Watcher:
    """Runs a watch against one store; ``stop`` ends it after the current round."""

    def __init__(
        self,
        config: WatchConfig,
        *,
        stop: threading.Event | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        on_round: Callable[[RoundResult], None] | None = None,
        on_problem: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name or watch_name(config.targets, config.options)
        self.stop = stop or threading.Event()
        self.on_alert = on_alert
        self.on_round = on_round
        self.on_problem = on_problem
        self.sinks: list[AlertSink] = [
            open_sink(u, retries=config.retries, backoff=config.backoff, timeout=config.sink_timeout)
            for u in config.sinks
        ]
        spool_dir = config.spool_dir or data_dir() / "watch-spool"
        tag = hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:10]
        self.spools = {
            sink_key(s.url): Spool(spool_dir / f"{tag}-{sink_key(s.url)}.jsonl", config.spool_limit)
            for s in self.sinks
        }
        self.store: Store | None = None
        self.log: AlertLog | None = None
        self.state = WatchState()
        self.rounds_done = 0
        self.last: RoundResult | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the store, load the state, register new sinks and send what a killed run left."""
        self.store = open_store(self.config.store_url)
        self.log = AlertLog(self.store)
        self.state = self.log.load_state(self.name)
        changed = False
        if not self.state.started:
            # Findings stored before the watch first ran are not new: the watch starts from here.
            self.state.started = datetime.now(UTC).isoformat()
            self.state.findings_after = self._max_finding_id()
            changed = True
        sinks = self.state.sinks
        first = self.log.last_alert_id() + 1
        for s in self.sinks:
            key = sink_key(s.url)
            if key not in sinks:
                sinks[key] = SinkStart(first, mask_url(s.url))
                changed = True
        if changed:
            self.log.save_state(self.name, self.state)
        self.deliver()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def run(self) -> RoundResult | None:
        """Rounds until ``rounds`` are done or ``stop`` is set; returns the last round."""
        self.open()
        try:
            start = time.monotonic()
            n = 0
            while not self.stop.is_set():
                self.run_round()
                n += 1
                if self.config.rounds is not None and n >= self.config.rounds:
                    break
                wait = start + n * self.config.every - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    break
            return self.last
        finally:
            self.close()

    # -- one round -----------------------------------------------------------------------------

    def run_round(self) -> RoundResult:
        """Scan, detect, record, deliver."""
        assert self.log is not None and self.store is not None
        started = time.monotonic()
        records: list[Observation] = []  # the scan's observation records of this round
        summary = run_scan(
            list(self.config.targets),
            self.config.options,
            self.config.store_url,
            tags=self.config.tags,
            on_record=records.append,
        )
        hosts = fold_hosts(records)
        host_ids = self._host_ids(summary.scan_id, records)
        findings, last_finding = self._new_findings(hosts, host_ids)
        alerts, state = detect_changes(
            self.state,
            hosts,
            scan_id=summary.scan_id,
            time=datetime.now(UTC).isoformat(),
            watch=self.name,
            waves=self.config.waves,
            findings=findings,
        )
        state.findings_after = max(state.findings_after, last_finding)
        self.log.commit_round(self.name, state, alerts, host_ids)
        self.state = state
        for a in alerts:
            if self.on_alert is not None:
                self.on_alert(a)
        deliveries = self.deliver()
        self.rounds_done += 1
        waves = self.config.waves
        vulnerable = incomplete = exchange = 0
        for rec in hosts.values():
            states = [v.state for w, v in rec.waves.items() if waves is None or w in waves]
            exchange += rec.status == "exchange"
            if rec.status == "exchange" and "vulnerable" in states:
                vulnerable += 1
            elif rec.status == "unreachable" or "unknown" in states:
                incomplete += 1
        result = RoundResult(
            number=state.rounds,
            scan_id=summary.scan_id,
            seconds=time.monotonic() - started,
            hosts=len(hosts),
            exchange=exchange,
            vulnerable=vulnerable,
            incomplete=incomplete,
            alerts=alerts,
            deliveries=deliveries,
        )
        self.last = result
        if self.on_round is not None:
            self.on_round(result)
        return result

    def _host_ids(self, scan_id: int, records: Sequence[Observation]) -> dict[str, int]:
        """host (as the watch names it) -> the store's host id, from this round's observations."""
        assert self.store is not None
        o = ft.observations
        with self.store.connect() as conn:
            by_key = {
                str(r.key): int(r.host_id)
                for r in conn.execute(
                    select(o.c.key, o.c.host_id).where(o.c.scan_id == scan_id, o.c.host_id.is_not(None))
                )
            }
        out: dict[str, int] = {}
        for rec in records:
            host_id = by_key.get(str(rec.get("key")))
            if host_id is not None:
                out.setdefault(host_of(rec), host_id)
        for host, entry in self.state.hosts.items():
            if host not in out and entry.host_id is not None:
                out[host] = entry.host_id
        for host, host_id in out.items():
            known = self.state.hosts.get(host)
            if known is not None:
                known.host_id = host_id
        return out

    def _max_finding_id(self) -> int:
        assert self.store is not None
        with self.store.connect() as conn:
            return int(conn.execute(select(func.max(ft.findings.c.id))).scalar() or 0)

    def _new_findings(
        self, hosts: Mapping[str, HostSeen], host_ids: Mapping[str, int]
    ) -> tuple[list[NewFinding], int]:
        """Findings of likely or confirmed confidence stored since the last round, for watched hosts."""
        assert self.store is not None
        after = self.state.findings_after
        f = ft.findings
        by_id = {v: k for k, v in host_ids.items()}
        by_text: dict[str, str] = {}
        for host, rec in hosts.items():
            by_text[host.lower()] = host
            if rec.address:
                by_text[str(rec.address).lower()] = host
        for host, entry in self.state.hosts.items():
            by_text.setdefault(host.lower(), host)
            if entry.address:
                by_text.setdefault(str(entry.address).lower(), host)
        out: list[NewFinding] = []
        last = after
        with self.store.connect() as conn:
            rows = conn.execute(
                select(f.c.id, f.c.host_id, f.c.host, f.c.wave, f.c.confidence, f.c.rule)
                .where(f.c.id > after)
                .order_by(f.c.id)
            ).all()
        for r in rows:
            last = max(last, int(r.id))
            if r.confidence not in EVIDENCE_CONFIDENCE:
                continue
            owner = by_id.get(r.host_id) if r.host_id is not None else None
            owner = owner or by_text.get(str(r.host or "").lower())
            if owner is None:
                continue
            out.append(NewFinding(owner, r.wave, str(r.confidence), str(r.rule), int(r.id)))
        return out, last

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self) -> list[Delivery]:
        """Hand each sink what it has not taken: its spool first, then new alerts, in order."""
        return [self._deliver(s) for s in self.sinks]

    def _deliver(self, sink: AlertSink) -> Delivery:
        assert self.log is not None
        key = sink_key(sink.url)
        spool = self.spools[key]
        report = Delivery(mask_url(sink.url))
        start = self.state.sinks.get(key)
        since = start.since if start is not None else 1
        pending = self.log.pending(self.name, key, since)
        queued = spool.load()
        queued_ids = {e.id for e in queued}
        # Spooled before a crash, not yet marked: they are in the spool already.
        respooled = [i for i, a in pending if a.id in queued_ids]
        if respooled:
            self.log.mark(key, respooled, "spooled")
        fresh = [(i, a) for i, a in pending if a.id not in queued_ids]
        batch = queued + [e for _, e in fresh]
        report.queued = len(queued)
        if not batch:
            return report
        try:
            sink.send(batch)
            sent = len(batch)
        except SinkError as exc:
            sent = exc.sent
            report.error = str(exc)
            if self.on_problem is not None:
                self.on_problem(f"alert sink {report.sink}: {exc}; spooled for the next round")
        before = spool.dropped
        spool.replace(batch[sent:])
        report.dropped = spool.dropped - before
        if report.dropped and self.on_problem is not None:
            self.on_problem(f"alert sink {report.sink}: spool full, {report.dropped} oldest event(s) dropped")
        offset = len(queued)
        sent_ids = [i for n, (i, _) in enumerate(fresh) if offset + n < sent]
        spooled_ids = [i for n, (i, _) in enumerate(fresh) if offset + n >= sent]
        self.log.mark(key, sent_ids, "sent")
        self.log.mark(key, spooled_ids, "spooled")
        report.sent = sent
        report.spooled = len(batch) - sent
        return report
