"""The store in its own process: records stored by the child, a damaged store refused before any
request, a resume read back through it, and the child gone when the scan ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exwatch.errors import StoreError
from exwatch.fleet import open_store
from exwatch.scan.engine import ScanOptions, ScanRun, execute, scan_async
from exwatch.scan.limits import FakeClock
from exwatch.scan.probes import ProbeResponse
from exwatch.scan.sink import open_sink
from exwatch.scan.storeproc import ProcessSink
from exwatch.scan.targets import parse_ports
from exwatch.scan.transport import FakeRequest, FakeTransport

TARGETS = [f"127.212.0.{i}" for i in range(1, 41)]


def _not_exchange(req: FakeRequest) -> ProbeResponse:
    return ProbeResponse(404, {"Server": "nginx"}, b"")


def _run(url: str, transport: FakeTransport, targets: list[str] = TARGETS, **kw: object) -> ScanRun:
    run = ScanRun(
        targets, ScanOptions(ports=parse_ports("443/https"), batch_size=7), url, store_process=True, **kw
    )  # type: ignore[arg-type]
    FakeClock().run(scan_async(run, transport))
    return run


def test_records_are_stored_by_the_child_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    run = _run(url, FakeTransport(_not_exchange))
    assert isinstance(run.sink, ProcessSink)
    child = run.sink._proc
    assert child.pid != os.getpid() and not child.is_alive()  # it ended with the scan
    with open_store(url) as store:
        assert store.scan_done_keys(run.scan_id) == {f"https://{t}:443" for t in TARGETS}
    assert run.summary.statuses == {"not_exchange": len(TARGETS)}


def test_a_damaged_store_is_refused_before_any_request(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    transport = FakeTransport(_not_exchange)
    with pytest.raises(StoreError):
        _run(f"sqlite:///{db}", transport)
    assert transport.requests == []


def test_resume_reads_the_stored_scan_through_the_child(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = _run(url, FakeTransport(_not_exchange))
    transport = FakeTransport(_not_exchange)
    again = _run(url, transport, [], resume=first.scan_id)
    assert again.summary.skipped == len(TARGETS) and transport.requests == []
    assert again.summary.whole is not None and again.summary.whole.statuses == {"not_exchange": len(TARGETS)}


def test_the_in_process_sink_stays_available(tmp_path: Path) -> None:
    sink = open_sink(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        assert not isinstance(sink, ProcessSink)
    finally:
        sink.close()


def test_execute_from_sync_code(tmp_path: Path) -> None:
    run = ScanRun(
        ["127.212.1.1"], ScanOptions(ports=parse_ports("443/https")), f"sqlite:///{tmp_path / 'e.db'}"
    )
    summary = execute(run, FakeTransport(_not_exchange))
    assert summary.hosts == 1 and summary.exit_code == 0
