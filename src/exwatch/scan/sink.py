"""Where scan results go: the store (exwatch.fleet) or memory, behind one small interface.

The engine writes through a single writer task that batches records and calls :meth:`Sink.add` in a
thread, so the event loop never waits on the database.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypedDict

from exwatch.errors import InputError
from exwatch.record import Observation

#: A scan's stored parameters (targets, options, tags, scan_time, and what a caller adds: the
#: cluster's settings, an import's file and day): a JSON object stored as it is and read back by
#: ``--resume``, open to keys this module does not know, hence free-form.
ScanParams = dict[str, Any]


class Sink(Protocol):
    """What the engine needs from a result store."""

    def start(self, params: ScanParams, started_at: datetime | None) -> int: ...
    def add(self, scan_id: int, records: Sequence[Observation]) -> None: ...
    def finish(self, scan_id: int, finished_at: datetime | None) -> None: ...
    def params(self, scan_id: int) -> ScanParams: ...
    def done_keys(self, scan_id: int) -> set[str]: ...
    def totals(self, scan_id: int) -> ScanTotals | None: ...
    def close(self) -> None: ...


class TotalsDict(TypedDict):
    """The JSON form of :class:`ScanTotals`."""

    statuses: dict[str, int]
    waves: dict[str, dict[str, int]]


@dataclass
class ScanTotals:
    """The stored counts of a whole scan (every run of it, a resume included).

    ``statuses``: hosts per status (exchange, not_exchange, unreachable); ``waves``: hosts per wave and
    state. From the store these are distinct hosts (a host seen on two ports counts once).
    """

    statuses: dict[str, int] = field(default_factory=dict)
    waves: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def vulnerable(self) -> bool:
        """Some wave has a vulnerable host."""
        return any(c.get("vulnerable", 0) for c in self.waves.values())

    @property
    def incomplete(self) -> bool:
        """Some target is unreachable, or some wave's state unknown."""
        return bool(self.statuses.get("unreachable", 0)) or any(
            c.get("unknown", 0) for c in self.waves.values()
        )

    def to_dict(self) -> TotalsDict:
        """A JSON-ready form."""
        return {"statuses": dict(self.statuses), "waves": {w: dict(c) for w, c in self.waves.items()}}


class StoreSink:
    """Results into ``exwatch.fleet`` (SQLite by default, PostgreSQL by URL)."""

    def __init__(self, url: str | None) -> None:
        from exwatch.fleet import open_store

        # The scan's profile: a damaged store is refused before a single request is sent (quick_check
        # on SQLite), and its SQLite connections are lean (a scan only appends).
        self.store = open_store(url, profile="scan")

    def start(self, params: ScanParams, started_at: datetime | None) -> int:
        return self.store.start_scan(params, started_at=started_at, kind="scan")

    def add(self, scan_id: int, records: Sequence[Observation]) -> None:
        self.store.add_observations(scan_id, records)

    def finish(self, scan_id: int, finished_at: datetime | None) -> None:
        self.store.finish_scan(scan_id, finished_at=finished_at)

    def params(self, scan_id: int) -> ScanParams:
        return self.store.scan_params(scan_id)

    def done_keys(self, scan_id: int) -> set[str]:
        return self.store.scan_done_keys(scan_id)

    def totals(self, scan_id: int) -> ScanTotals | None:
        """The finished scan's stored counts (the store's snapshot summary); None if it is not finished."""
        from exwatch.fleet.queries import snapshots

        for snap in snapshots(self.store):
            if snap.scan_id == scan_id:
                waves = {
                    wave: {
                        state: n
                        for state, n in (
                            ("vulnerable", c.vulnerable),
                            ("patched", c.patched),
                            ("mitigated", c.mitigated),
                            ("unknown", c.unknown),
                            ("not_affected", c.not_affected),
                        )
                        if n
                    }
                    for wave, c in snap.waves.items()
                }
                return ScanTotals(dict(snap.statuses), waves)
        return None

    def close(self) -> None:
        self.store.close()


@dataclass
class MemoryScan:
    """One scan kept by a :class:`MemorySink`."""

    params: ScanParams
    records: list[Observation] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    finished: datetime | None = None


class MemorySink:
    """Results kept in memory (``store_url="memory:"``): for benchmarks and library use without a store."""

    _ids = itertools.count(1)

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.scans: dict[int, MemoryScan] = {}

    def start(self, params: ScanParams, started_at: datetime | None) -> int:
        scan_id = next(self._ids)
        self.scans[scan_id] = MemoryScan(params)
        return scan_id

    def add(self, scan_id: int, records: Sequence[Observation]) -> None:
        scan = self.scans[scan_id]
        if self.keep:
            scan.records.extend(records)
            scan.keys.update(r["key"] for r in records)

    def finish(self, scan_id: int, finished_at: datetime | None) -> None:
        self.scans[scan_id].finished = finished_at

    def params(self, scan_id: int) -> ScanParams:
        if scan_id not in self.scans:
            raise InputError(f"no scan {scan_id} in memory")
        return dict(self.scans[scan_id].params)

    def done_keys(self, scan_id: int) -> set[str]:
        return set(self.scans[scan_id].keys)

    def totals(self, scan_id: int) -> ScanTotals | None:
        """Counts over the records kept (None when records are not kept)."""
        if not self.keep or scan_id not in self.scans:
            return None
        statuses: Counter[str] = Counter()
        waves: dict[str, Counter[str]] = {}
        for rec in self.scans[scan_id].records:
            statuses[str(rec.get("status"))] += 1
            if rec.get("status") != "exchange":
                continue
            for wave, v in (rec.get("waves") or {}).items():
                waves.setdefault(wave, Counter())[str(v.get("state"))] += 1
        return ScanTotals(dict(statuses), {w: dict(c) for w, c in waves.items()})

    def close(self) -> None:
        pass


def open_sink(url: str | None, *, process: bool = False) -> Sink:
    """``memory:`` keeps results in memory; anything else is a store URL (None: the default store).

    ``process``: run the store in a child process (:mod:`exwatch.scan.storeproc`), off the scan's CPU.
    """
    if url == "memory:":
        return MemorySink()
    if url == "null:":
        return MemorySink(keep=False)
    if process:
        from exwatch.scan.storeproc import ProcessSink

        return ProcessSink(url)
    return StoreSink(url)
