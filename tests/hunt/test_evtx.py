"""The event-log reader on the real evtx samples: every readable record, damaged chunks reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from exwatch.hunt.sources.evtx import EvtxReport, read_evtx


def _binding_count(path: Path) -> int:
    from evtx import PyEvtxParser

    n = 0
    try:
        for _ in PyEvtxParser(str(path)).records_json():
            n += 1
    except RuntimeError:
        pass
    return n


@pytest.mark.parametrize(
    ("name", "damaged"),
    [
        ("Application_no_crc32.evtx", False),
        ("MSExchange_Management_wec.evtx", False),
        ("security_bad_string_cache.evtx", False),
        ("sysmon.evtx", True),
        ("sample_with_a_bad_chunk_magic.evtx", True),
    ],
)
def test_reader_recovers(shared_reference: Path, name: str, damaged: bool) -> None:
    path = shared_reference / "evtx" / name
    report = EvtxReport()
    records = list(read_evtx(path, report))
    ids = [r.record_id for r in records]
    assert len(ids) == len(set(ids))
    assert len(records) >= _binding_count(path)
    assert bool(report.bad_chunks) == damaged
    if name == "sample_with_a_bad_chunk_magic.evtx":
        assert len(records) > 10 * _binding_count(path)  # chunks after the damage are recovered


def test_management_record_fields(shared_reference: Path) -> None:
    rec = next(read_evtx(shared_reference / "evtx" / "MSExchange_Management_wec.evtx", EvtxReport()))
    assert rec.fields["Provider_Name"] == "MSExchange CmdletLogs"
    assert rec.fields["Data0"] == "Set-Mailbox"
    assert rec.text.startswith("Set-Mailbox -Identity")
    assert rec.time is not None and rec.time.year == 2021
