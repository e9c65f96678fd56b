"""Fuzzing the hunt's readers: .evtx records and damaged .evtx bytes, XML event exports, archive member
names, and the evidence tree walker (links in and out of the root).

``make fuzz`` runs each test with the ``fuzz`` profile (10,000 examples); inside ``make test`` each runs
QUICK examples. Every property is about what the reader returns, not only that it does not crash.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exwatch.hunt.model import ArchiveLimits, FileError
from exwatch.hunt.sources.evtx import (
    EvtxReport,
    _DamagedRecord,
    _flatten_event,
    _record,
    plausible,
    read_event_xml,
    read_evtx,
)
from exwatch.hunt.sources.files import clean_member_name, walk

QUICK = 50
# The profile make fuzz loads asks for 10,000 examples or more; any other profile gets QUICK.
EXAMPLES = settings().max_examples if settings().max_examples >= 10_000 else QUICK
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "evtx"

# --- .evtx records as the binding gives them -----------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
event_keys = st.sampled_from(
    ["System", "EventData", "UserData", "Provider", "EventID", "Data", "#text", "#attributes", "Name"]
)
event_like = st.recursive(
    st.none() | st.text(max_size=20) | st.integers(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(event_keys | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


@FUZZ
@given(
    doc=st.one_of(event_like, st.dictionaries(st.just("Event"), event_like, min_size=1), json_values),
    rid=st.one_of(st.integers(min_value=-5, max_value=2**64), st.text(max_size=5), st.none()),
    ts=st.one_of(
        st.text(max_size=30), st.just("1601-01-01T00:00:00Z"), st.just("2021-03-03T06:00:00.1234567Z")
    ),
    raw_data=st.one_of(st.none(), st.text(max_size=40)),
)
def test_evtx_record_is_an_event_or_a_damaged_record(
    doc: Any, rid: Any, ts: str, raw_data: str | None
) -> None:
    for data in (json.dumps(doc), raw_data):
        raw = {"event_record_id": rid, "timestamp": ts, "data": data}
        try:
            rec = _record(raw, None)
        except _DamagedRecord:
            continue
        assert isinstance(rec.fields, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in rec.fields.items())
        assert isinstance(rec.text, str)
        event = json.loads(data).get("Event", json.loads(data)) if data else None
        assert isinstance(event, dict) and event  # only a real event object makes a record


@FUZZ
@given(event=st.dictionaries(event_keys | st.text(max_size=8), event_like, max_size=6))
def test_flatten_event_gives_strings(event: dict[str, Any]) -> None:
    fields, values = _flatten_event(event)
    assert all(isinstance(v, str) for v in fields.values())
    assert all(isinstance(v, str) for v in values)
    for i, v in enumerate(values):
        assert fields.get(f"Data{i}") is not None or v in fields.values()


# --- damaged .evtx bytes through the real binding -------------------------------------------------

_SAMPLE: bytes | None = None


def _sample() -> bytes:
    global _SAMPLE
    if _SAMPLE is None:
        _SAMPLE = (REFERENCE / "Application_no_crc32.evtx").read_bytes()
    return _SAMPLE


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=69631), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=12,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=69632)),
)
def test_damaged_evtx_is_read_and_its_losses_counted(flips: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(_sample())
    for off, value in flips:
        data[off] = value
    if cut is not None:
        data = data[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.evtx"
        path.write_bytes(bytes(data))
        report = EvtxReport()
        try:
            records = list(read_evtx(path, report))
        except OSError:
            assert len(data) < 4096  # only a file without a whole header cannot be opened at all
            return
        assert report.records == len(records)
        assert all(r.time is None or plausible(r.time) == r.time for r in records)
        ids = [r.record_id for r in records if r.record_id]
        assert len(ids) == len(set(ids))
        if report.declared is not None and report.records + report.damaged_records < report.declared:
            assert any(kind == "evtx_lost" for kind, _ in report.problems())
        assert sorted(os.listdir(tmp)) == ["a.evtx"]  # chunk copies are removed


# --- XML event exports ---------------------------------------------------------------------------


def _event(i: int) -> str:
    return (
        f'<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="P"/>'
        f'<EventID>{i % 9000}</EventID><TimeCreated SystemTime="2021-03-0{1 + i % 9}T08:00:00.000Z"/>'
        f"<EventRecordID>{i}</EventRecordID><Channel>Application</Channel></System>"
        f"<EventData><Data>v{i}</Data></EventData></Event>"
    )


# Text between events never holds an event tag (so the number of events is known).
junk = st.text(
    alphabet=st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=30
) | st.sampled_from(
    ["<Events>", "</Events>", "<EventData>", "<Eventful>", "<!-- x -->", "<?xml version='1.0'?>", "\n"]
)
broken = st.sampled_from(["<Event>", "<Event xmlns='x'>", "<Event><System>", "<Event/>", "<Event><x>"])


@FUZZ
@given(parts=st.lists(st.tuples(st.booleans(), junk), max_size=30), tail_broken=st.lists(broken, max_size=5))
def test_xml_export_events_are_all_found(parts: list[tuple[bool, str]], tail_broken: list[str]) -> None:
    body = []
    n = 0
    for is_event, filler in parts:
        body.append(filler)
        if is_event:
            n += 1
            body.append(_event(n))
    text = "".join(body) + "".join(tail_broken)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.xml"
        path.write_text(text)
        report = EvtxReport()
        records = list(read_event_xml(path, None, report))
    assert [r.record_id for r in records] == list(range(1, n + 1))
    assert all(r.fields["Data0"] == f"v{r.record_id}" for r in records)
    starts = sum(1 for b in tail_broken if b.startswith("<Event") and b != "<Event/>")
    if starts:
        assert report.damaged_events >= 1


@FUZZ
@given(
    unit=st.sampled_from(["<Event>\n", "<Event ", "<Event>", "</Event>", "<EventData>", "<Event><Event>"]),
    n=st.integers(min_value=1, max_value=4000),
)
def test_xml_export_time_is_linear(unit: str, n: int) -> None:
    """Any repetition of tags reads in time proportional to its size (quadratic was 39 s at 160 KB)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.xml"
        path.write_text("<Events>\n" + unit * n)
        started = time.perf_counter()
        list(read_event_xml(path, None, EvtxReport()))
        elapsed = time.perf_counter() - started
    assert elapsed < 0.05 + n * 20e-6, f"{elapsed:.3f} s for {n} x {unit!r}"


# --- archive member names ------------------------------------------------------------------------

member_names = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["..", ".", "", "a", "b.aspx", "C:", "\\", "/", "x" * 300, "é", "\x00"]), max_size=8
    ).map("/".join),
)


@FUZZ
@given(name=member_names)
def test_member_names_never_leave_the_archive(name: str) -> None:
    clean, escaped = clean_member_name(name)
    parts = PurePosixPath(clean).parts
    assert clean and not clean.startswith("/") and "\\" not in clean and "\x00" not in clean
    assert ".." not in parts and "." not in parts and "" not in parts
    assert clean_member_name(clean) == (clean, False) or clean == "unnamed"
    if ".." in name.replace("\\", "/").split("/"):
        assert escaped


@pytest.mark.filterwarnings("ignore:Duplicate name")
@FUZZ
@given(names=st.lists(member_names, min_size=1, max_size=6))
def test_zip_members_are_all_hunted_inside_the_temp_dir(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        evidence = base / "ev"
        evidence.mkdir()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for i, name in enumerate(names):
                zf.writestr(zipfile.ZipInfo(name or "unnamed", (2021, 3, 3, 6, 0, 0)), f"member {i}\n")
        (evidence / "p.zip").write_bytes(buf.getvalue())
        work = base / "work"
        work.mkdir()
        errors: list[FileError] = []
        files = list(walk(evidence, str(work), ArchiveLimits(), errors))
        members = [f for f in files if f.rel.startswith("p.zip!/")]
        # Every member is hunted (zip directory entries end with "/" and hold nothing).
        # (zipfile cuts a name at its first NUL.)
        stored = [(n or "unnamed").split("\x00")[0] for n in names]
        assert len(members) == sum(1 for n in stored if not n.endswith("/"))
        for f in members:
            assert Path(f.path).resolve().is_relative_to(work.resolve())
        assert sorted(p.name for p in base.iterdir()) == ["ev", "work"]
        assert [p.name for p in evidence.iterdir()] == ["p.zip"]


# --- the evidence tree walker --------------------------------------------------------------------

node_names = st.sampled_from(["a", "b", "c", "d.log", "e.aspx", "f.zip"])
link_targets = st.sampled_from(
    ["inside-file", "inside-dir", "outside-file", "outside-dir", "root", "dangling", "self", "parent"]
)
tree = st.lists(
    st.tuples(
        st.lists(node_names, min_size=1, max_size=3), st.sampled_from(["file", "dir", "link"]), link_targets
    ),
    max_size=12,
)


def _build(root: Path, outside: Path, spec: list[tuple[list[str], str, str]]) -> None:
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "x.txt").write_text("x")
    outside.mkdir()
    (outside / "shell.aspx").write_text("outside")
    for parts, kind, target in spec:
        p = root.joinpath(*parts)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.exists() or p.is_symlink():
                continue
            if kind == "file":
                p.write_text("data")
            elif kind == "dir":
                p.mkdir()
            else:
                to = {
                    "inside-file": root / "keep" / "x.txt",
                    "inside-dir": root / "keep",
                    "outside-file": outside / "shell.aspx",
                    "outside-dir": outside,
                    "root": root,
                    "dangling": root / "nowhere",
                    "self": p,
                    "parent": p.parent,
                }[target]
                p.symlink_to(to)
        except OSError:
            continue  # a part of the path is a file: that node cannot exist


@FUZZ
@given(spec=tree)
def test_walker_never_leaves_the_root(spec: list[tuple[list[str], str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "ev"
        outside = base / "outside"
        _build(root, outside, spec)
        work = base / "work"
        work.mkdir()
        errors: list[FileError] = []
        files = list(walk(root, str(work), ArchiveLimits(), errors))
        real_root = root.resolve()
        for f in files:
            real = Path(f.path).resolve()
            assert real.is_relative_to(real_root) or real.is_relative_to(work.resolve()), f.path
        assert "keep/x.txt" in {f.rel for f in files}
        outward = set()
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink() and p.exists() and not p.resolve().is_relative_to(real_root):
                    outward.add(p.relative_to(root).as_posix())
        refused = {e.file for e in errors if e.kind == "symlink_outside"}
        assert outward <= refused
        assert not any(f.rel.endswith("shell.aspx") for f in files)
    shutil.rmtree(tmp, ignore_errors=True)
