"""The JSON of the read API's rows (``JsonRow``): fields in order, typed conversions, key order kept.

The commands and the web print these documents (goldens in tests/report pin the report's); here each
conversion the generic writer makes is checked against the document written out by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import MappingProxyType

from exwatch.fleet.rows import (
    Compromise,
    CurrentVerdict,
    ExposureWindow,
    FindingRow,
    HostHistory,
    HostRow,
    HostSnapshot,
    HuntSummary,
    Service,
)

T0 = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
T1 = datetime(2026, 3, 9, 20, 30, tzinfo=UTC)


def _same(doc: object, expected: dict[str, object]) -> None:
    # equal, and in the same key order (what json.dumps writes)
    assert json.dumps(doc) == json.dumps(expected)


def test_host_row_times_and_tags() -> None:
    row = HostRow(
        7,
        "10.0.0.7",
        None,
        "EX01",
        "exchange",
        443,
        3,
        "15.2.1544.4",
        False,
        T0,
        True,
        None,
        MappingProxyType({"org": "a"}),
    )
    doc = row.to_dict()
    _same(
        doc,
        {
            "host_id": 7,
            "address": "10.0.0.7",
            "name": None,
            "fe_server": "EX01",
            "status": "exchange",
            "port": 443,
            "scan": 3,
            "build": "15.2.1544.4",
            "conflict": False,
            "last_seen": "2026-03-02T08:30:00+00:00",
            "stale": True,
            "retired_at": None,
            "tags": {"org": "a"},
        },
    )
    assert type(doc["tags"]) is dict  # a plain object, not the row's read-only mapping


def test_computed_properties_follow_the_fields() -> None:
    _same(
        ExposureWindow(1, "proxylogon", T0, T1).to_dict(),
        {
            "host_id": 1,
            "wave": "proxylogon",
            "first_vulnerable": "2026-03-02T08:30:00+00:00",
            "first_protected": "2026-03-09T20:30:00+00:00",
            "days": 7.5,
        },
    )
    assert ExposureWindow(1, "w", T0, None).to_dict()["days"] is None
    doc = Compromise(2, "a", None, None, "w", T0, 3, None, None).to_dict()
    assert list(doc)[-1] == "compromised_before_protected" and doc["compromised_before_protected"] is True
    assert (
        Compromise(2, "a", None, None, "w", T1, 3, T0, T0).to_dict()["compromised_before_protected"] is False
    )


def test_nested_rows_and_tuples() -> None:
    service = Service(443, "exchange", "10.0.0.7", "15.2.1544.4", "owa", None)
    snap = HostSnapshot(3, T0, "exchange", 443, "15.2.1544.4", False, (service,), {"proxylogon": "patched"})
    current = CurrentVerdict(3, "exchange", 443, "15.2.1544.4", False, None, {"proxylogon": "patched"})
    history = HostHistory(
        7, "10.0.0.7", "mail.example.org", None, None, T0, None, None, {}, current, (snap,),
        (ExposureWindow(7, "proxylogon", T0, None),), (HuntSummary(4, T1, "clean", 0, None),),
    )  # fmt: skip
    doc = history.to_dict()
    assert list(doc) == [
        "host_id", "address", "name", "fe_server", "cert", "first_seen", "retired_at", "merged_into",
        "tags", "current", "snapshots", "exposure", "hunts", "exposed_again",
    ]  # fmt: skip
    assert doc["exposed_again"] == []  # the one window is still open: nothing after it
    assert doc["current"] == current.to_dict() and doc["current"]["seen_at"] is None
    assert doc["snapshots"] == [snap.to_dict()] and doc["snapshots"][0]["build_source"] == "owa"
    assert doc["exposure"] == [
        {
            "host_id": 7,
            "wave": "proxylogon",
            "first_vulnerable": T0.isoformat(),
            "first_protected": None,
            "days": None,
        }
    ]
    assert doc["hunts"] == [
        {"hunt": 4, "time": T1.isoformat(), "verdict": "clean", "findings": 0, "first_finding": None}
    ]
    empty = HostHistory(8, None, None, None, None, None, T1, 7, {}, None, (), (), ()).to_dict()
    assert empty["current"] is None and empty["snapshots"] == [] and empty["retired_at"] == T1.isoformat()


def test_finding_evidence_is_kept_as_json() -> None:
    evidence = {"path": "C:\\inetpub\\x.aspx", "facts": {"sha256": "ab"}, "lines": [1, 2]}
    row = FindingRow(
        1, 2, None, "h", None, None, None, "webshell", None, None, "high", T0, "t", "d", evidence
    )
    doc = row.to_dict()
    assert doc["evidence"] == evidence and doc["time"] == T0.isoformat() and list(doc)[-1] == "evidence"
