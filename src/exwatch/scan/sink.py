"""Where scan results go: the store (exwatch.fleet) or memory, behind one small interface.

The engine writes through a single writer task that batches records and calls :meth:`Sink.add` in a
thread, so the event loop never waits on the database.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any, Protocol

from exwatch.errors import InputError


class Sink(Protocol):
    """What the engine needs from a result store."""

    def start(self, params: dict[str, Any], started_at: datetime | None) -> int: ...
    def add(self, scan_id: int, records: list[dict[str, Any]]) -> None: ...
    def finish(self, scan_id: int, finished_at: datetime | None) -> None: ...
    def params(self, scan_id: int) -> dict[str, Any]: ...
    def done_keys(self, scan_id: int) -> set[str]: ...
    def close(self) -> None: ...


# A scan only appends to the store; the store's SQLite tuning for reads (a 1 GB memory map and a
# 128 MB page cache per connection) would make a million-target scan's resident memory grow with the
# database file. The scan's own connections use SQLite's defaults instead (a workaround from outside
# exwatch.fleet: the store offers no option for it).
LEAN_SQLITE_PRAGMAS = ("PRAGMA mmap_size=0", "PRAGMA cache_size=-8192")


def _lean_sqlite(store: Any) -> None:
    engine = getattr(store, "engine", None)
    if engine is None or getattr(engine.dialect, "name", "") != "sqlite":
        return
    from sqlalchemy import event

    def lean(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in LEAN_SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    event.listen(engine, "connect", lean)
    engine.dispose()  # connections opened before (migrations) are replaced by lean ones


class StoreSink:
    """Results into ``exwatch.fleet`` (SQLite by default, PostgreSQL by URL)."""

    def __init__(self, url: str | None) -> None:
        from exwatch.fleet import open_store

        self.store = open_store(url)
        _lean_sqlite(self.store)

    def start(self, params: dict[str, Any], started_at: datetime | None) -> int:
        return self.store.start_scan(params, started_at=started_at, kind="scan")

    def add(self, scan_id: int, records: list[dict[str, Any]]) -> None:
        self.store.add_observations(scan_id, records)

    def finish(self, scan_id: int, finished_at: datetime | None) -> None:
        self.store.finish_scan(scan_id, finished_at=finished_at)

    def params(self, scan_id: int) -> dict[str, Any]:
        return self.store.scan_params(scan_id)

    def done_keys(self, scan_id: int) -> set[str]:
        return self.store.scan_done_keys(scan_id)

    def close(self) -> None:
        self.store.close()


class MemorySink:
    """Results kept in memory (``store_url="memory:"``): for benchmarks and library use without a store."""

    _ids = itertools.count(1)

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.scans: dict[int, dict[str, Any]] = {}

    def start(self, params: dict[str, Any], started_at: datetime | None) -> int:
        scan_id = next(self._ids)
        self.scans[scan_id] = {"params": params, "records": [], "keys": set(), "finished": None}
        return scan_id

    def add(self, scan_id: int, records: list[dict[str, Any]]) -> None:
        scan = self.scans[scan_id]
        if self.keep:
            scan["records"].extend(records)
            scan["keys"].update(r["key"] for r in records)

    def finish(self, scan_id: int, finished_at: datetime | None) -> None:
        self.scans[scan_id]["finished"] = finished_at

    def params(self, scan_id: int) -> dict[str, Any]:
        if scan_id not in self.scans:
            raise InputError(f"no scan {scan_id} in memory")
        return dict(self.scans[scan_id]["params"])

    def done_keys(self, scan_id: int) -> set[str]:
        return set(self.scans[scan_id]["keys"])

    def close(self) -> None:
        pass


def open_sink(url: str | None) -> Sink:
    """``memory:`` keeps results in memory; anything else is a store URL (None: the default store)."""
    if url == "memory:":
        return MemorySink()
    if url == "null:":
        return MemorySink(keep=False)
    return StoreSink(url)
