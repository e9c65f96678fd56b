"""Event-log reader: ``.evtx`` files through the ``evtx`` Rust bindings, with per-chunk recovery, and XML exports.

The binding (``evtx.PyEvtxParser``) stops iterating at the first damaged chunk with an exception. When
that happens the reader goes on chunk by chunk: it copies the file header plus one 64 KiB chunk (found
by its ``ElfChnk`` magic) into a temporary single-chunk file in a private temp dir, parses that, and
reports the chunks that could not be read. The evidence file is only ever opened for reading.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exwatch.hunt.sources.lines import parse_time

FILE_HEADER_SIZE = 4096
CHUNK_SIZE = 65536
CHUNK_MAGIC = b"ElfChnk\x00"

# Sysmon/Security field names, mapped to the Sigma process_creation/file_event taxonomy.
_SECURITY_4688 = {"NewProcessName": "Image", "ParentProcessName": "ParentImage", "CommandLine": "CommandLine"}


@dataclass
class EventRecord:
    """One event as a flat record for the Sigma matcher, with where it came from."""

    record_id: int
    offset: int | None  # byte offset of the event (XML) or of its chunk (recovered evtx); None if unknown
    time: Any
    source: str
    fields: dict[str, str]
    text: str
    parsed: bool = True


@dataclass
class EvtxReport:
    """What reading one event log gave: records read, records and chunks lost, odd times, limits."""

    records: int = 0
    bad_chunks: list[str] = field(default_factory=list)
    first: Any = None
    last: Any = None
    channels: set[str] = field(default_factory=set)
    # Records the chunk headers declare (None when no header could be trusted).
    declared: int | None = None
    # Records the parser gave up on, and records it gave whose content is no event (e.g. ``{"Event": null}``).
    record_errors: int = 0
    damaged_records: int = 0
    first_record_error: str = ""
    # Records whose time is before 1990 or more than a year ahead: not used for coverage or --since.
    impossible_times: int = 0
    # Set when the file is larger than the reader's limit: what was left unread.
    limit: str = ""
    # XML exports: event start tags without a parsable event.
    damaged_events: int = 0

    def problems(self) -> list[tuple[str, str]]:
        """(kind, message) for every loss worth an error entry."""
        out: list[tuple[str, str]] = [("evtx_chunk", b) for b in self.bad_chunks]
        lost = (self.declared or 0) - self.records - self.damaged_records
        if self.declared is not None and lost > 0:
            out.append(("evtx_lost", f"{lost:,} of {self.declared:,} records could not be read"))
        if self.record_errors:
            out.append(
                (
                    "evtx_record",
                    f"the parser stopped {self.record_errors:,} time(s) on a damaged record or chunk "
                    f"and went on (first: {self.first_record_error})",
                )
            )
        if self.damaged_records:
            out.append(("evtx_record", f"{self.damaged_records:,} record(s) read without a usable event"))
        if self.impossible_times:
            out.append(
                (
                    "evtx_time",
                    f"{self.impossible_times:,} record(s) with an impossible time (before 1990 or more than "
                    "a year ahead): hunted, not used for coverage",
                )
            )
        if self.damaged_events:
            out.append(
                ("evtx_xml", f"{self.damaged_events:,} event(s) without an end or not well-formed, skipped")
            )
        if self.limit:
            out.append(("file_limit", self.limit))
        return out


EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)


def plausible(t: datetime | None) -> datetime | None:
    """``t`` if a real event could have been written then (1990 .. a year from now), else None."""
    if t is None:
        return None
    if t < EARLIEST or t > datetime.now(UTC) + timedelta(days=366):
        return None
    return t


def _flatten_event(event: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    system = event.get("System")
    if not isinstance(system, dict):
        system = {}
    fields: dict[str, str] = {}
    provider = system.get("Provider", {})
    if isinstance(provider, dict):
        attrs = provider.get("#attributes")
        fields["Provider_Name"] = str(attrs.get("Name", "")) if isinstance(attrs, dict) else ""
    event_id = system.get("EventID")
    if isinstance(event_id, dict):
        event_id = event_id.get("#text")
    fields["EventID"] = str(event_id or "")
    fields["Level"] = str(system.get("Level", ""))
    fields["Channel"] = str(system.get("Channel", ""))
    fields["Computer"] = str(system.get("Computer", ""))
    data_values: list[str] = []
    edata = event.get("EventData") or event.get("UserData") or {}
    if isinstance(edata, dict):
        data = edata.get("Data", edata)
        if isinstance(data, dict) and "#text" in data:
            texts = data["#text"]
            data_values = [str(x) for x in (texts if isinstance(texts, list) else [texts])]
        elif isinstance(data, dict):
            for k, v in data.items():
                if k == "#attributes":
                    continue
                value = v.get("#text", "") if isinstance(v, dict) else v
                fields[str(k)] = "" if value is None else str(value)
                data_values.append(fields[str(k)])
        elif isinstance(data, list):
            for item in data:
                if isinstance(item, dict):
                    attrs = item.get("#attributes")
                    name = attrs.get("Name") if isinstance(attrs, dict) else None
                    value = str(item.get("#text", ""))
                    if name:
                        fields[str(name)] = value
                    data_values.append(value)
                else:
                    data_values.append(str(item))
    for i, v in enumerate(data_values):
        fields.setdefault(f"Data{i}", v)
    for src, dst in _SECURITY_4688.items():
        if src in fields and dst not in fields:
            fields[dst] = fields[src]
    return fields, data_values


def source_families(fields: dict[str, str]) -> tuple[str, ...]:
    """The Sigma log-source families an event belongs to (see ``sigma_engine.SOURCE_LOGSOURCES``)."""
    channel = fields.get("Channel", "").lower()
    provider = fields.get("Provider_Name", "").lower()
    eid = fields.get("EventID", "")
    out = ["windows"]
    if "msexchange management" in channel or provider == "msexchange cmdletlogs":
        out.append("msexchange-management")
    if channel == "application":
        out.append("application")
    if channel == "microsoft-windows-powershell/operational" and eid == "4104":
        out.append("powershell")
    if channel == "microsoft-windows-windows defender/operational":
        out.append("windefend")
    if "sysmon" in channel or "sysmon" in provider:
        if eid == "1":
            out.append("process_creation")
        elif eid == "11":
            out.append("file_event")
    if channel == "security" and eid == "4688":
        out.append("process_creation")
    return tuple(out)


class _DamagedRecord(Exception):
    """A record the parser gave whose content is no event."""


def _record(raw: Any, offset: int | None, want: Callable[[bytes], bool] | None = None) -> EventRecord:
    """One record of the binding as an EventRecord; raises _DamagedRecord when it holds no event."""
    if not isinstance(raw, dict):
        raise _DamagedRecord("not a record")
    try:
        rid = int(raw.get("event_record_id", 0) or 0)
    except (TypeError, ValueError):
        rid = 0
    t = parse_time(str(raw.get("timestamp", "")))
    data = raw.get("data")
    if not isinstance(data, str):
        raise _DamagedRecord("record without data")
    if want is not None and not want(data.encode("utf-8", "replace")):
        return EventRecord(record_id=rid, offset=offset, time=t, source="", fields={}, text="", parsed=False)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _DamagedRecord("record is not well-formed") from exc
    event = doc.get("Event", doc) if isinstance(doc, dict) else None
    if not isinstance(event, dict) or not event:
        raise _DamagedRecord("record without an event")
    fields, values = _flatten_event(event)
    return EventRecord(
        record_id=rid,
        offset=offset,
        time=t,
        source=fields.get("Channel", ""),
        fields=fields,
        text=" ".join(values),
    )


# Chunk header (libevtx documentation, "Chunk header"): magic, first/last record number, first/last record
# identifier, header size. https://github.com/libyal/libevtx/blob/main/documentation/Windows%20XML%20Event%20Log%20(EVTX).asciidoc
_MAX_RECORDS_PER_CHUNK = (CHUNK_SIZE - 512) // 24


def _chunk_survey(path: Path, limit: int) -> tuple[list[int], int | None, list[str]]:
    """The offsets of the chunks with the ElfChnk magic (within ``limit`` bytes), the records their
    headers declare (None if none can be trusted), and a note for each damaged chunk.

    A slot of zeros after the last used chunk is free space, not damage; a slot that is neither a chunk
    nor zeros, or zeros followed by chunks, is a lost chunk."""
    size = min(path.stat().st_size, limit)
    offsets: list[int] = []
    declared = 0
    trusted = False
    damaged: list[int] = []
    zeros: list[int] = []
    notes: list[str] = []
    with path.open("rb") as fh:
        off = FILE_HEADER_SIZE
        while off < size:
            fh.seek(off)
            head = fh.read(512)
            if head[:8] == CHUNK_MAGIC and len(head) >= 40:
                damaged.extend(zeros)  # zeros before a used chunk: a wiped chunk
                zeros = []
                offsets.append(off)
                first = int.from_bytes(head[24:32], "little")
                last = int.from_bytes(head[32:40], "little")
                if first <= last and last - first < _MAX_RECORDS_PER_CHUNK:
                    declared += last - first + 1
                    trusted = True
                else:
                    notes.append(
                        f"chunk at offset {off}: header declares records {first}..{last}, not believable"
                    )
                if off + CHUNK_SIZE > size and path.stat().st_size <= limit:
                    notes.append(f"chunk at offset {off}: the file ends inside it (truncated copy?)")
            elif head[:8] == bytes(8):
                zeros.append(off)
            else:
                damaged.append(off)
            off += CHUNK_SIZE
    if damaged:
        where = ", ".join(str(o) for o in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
        notes.append(
            f"{len(damaged)} chunk slot(s) without a chunk header (ElfChnk magic) at offset {where}: "
            "their records, if any, are lost"
        )
    return offsets, (declared if trusted else None), notes


def _iter_binding(path: Path, report: EvtxReport) -> Iterator[Any]:
    """The binding's records, going on after each error (the binding resumes at the next record or chunk)."""
    from evtx import PyEvtxParser

    try:
        it = PyEvtxParser(str(path)).records_json()
    except (RuntimeError, OSError, ValueError) as exc:
        report.bad_chunks.append(f"the file header cannot be read: {str(exc).splitlines()[0][:200]}")
        return
    errors_in_a_row = 0
    while True:
        try:
            raw = next(it)
        except StopIteration:
            return
        except (RuntimeError, OSError, ValueError) as exc:
            report.record_errors += 1
            if not report.first_record_error:
                report.first_record_error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            errors_in_a_row += 1
            if errors_in_a_row > 100_000:  # the binding no longer moves on: stop, the loss is reported
                return
            continue
        errors_in_a_row = 0
        yield raw


def _single_chunk_header() -> bytes:
    """A valid file header for a file of one chunk (used to read chunks one by one)."""
    hdr = bytearray(FILE_HEADER_SIZE)
    hdr[0:8] = b"ElfFile\x00"
    hdr[32:36] = (128).to_bytes(4, "little")  # header size
    hdr[36:38] = (1).to_bytes(2, "little")  # minor version
    hdr[38:40] = (3).to_bytes(2, "little")  # major version
    hdr[40:42] = (4096).to_bytes(2, "little")  # header block size
    hdr[42:44] = (1).to_bytes(2, "little")  # chunk count
    hdr[124:128] = zlib.crc32(bytes(hdr[:120])).to_bytes(4, "little")
    return bytes(hdr)


def _chunk_by_chunk(path: Path, offsets: list[int], report: EvtxReport) -> Iterator[tuple[Any, int]]:
    """Each chunk parsed on its own from a temporary file (a fresh header plus the chunk), for files whose
    header is damaged or that are larger than the limit."""
    tmpdir = tempfile.mkdtemp(prefix="exwatch-evtx-")
    header = _single_chunk_header()
    try:
        with path.open("rb") as fh:
            for index, off in enumerate(offsets):
                fh.seek(off)
                single = Path(tmpdir) / f"chunk{index}.evtx"
                single.write_bytes(header + fh.read(CHUNK_SIZE))
                try:
                    for raw in _iter_binding(single, report):
                        yield raw, off
                finally:
                    single.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def read_evtx(
    path: Path,
    report: EvtxReport,
    want: Callable[[bytes], bool] | None = None,
    max_bytes: int | None = None,
) -> Iterator[EventRecord]:
    """Every readable record of an ``.evtx`` file; what could not be read is counted in ``report``.

    The binding resumes after a damaged record or chunk, so one pass normally reads all that can be read.
    A file whose header is damaged, or that is larger than ``max_bytes``, is read chunk by chunk (within
    the limit). Records whose time is impossible keep no time (counted in ``report.impossible_times``)."""
    size = path.stat().st_size
    limit = size if max_bytes is None else max_bytes
    offsets, declared, notes = _chunk_survey(path, limit)
    report.declared = declared
    report.bad_chunks.extend(notes)
    with path.open("rb") as fh:
        magic_ok = fh.read(8) == b"ElfFile\x00"
    if size > limit:
        report.limit = (
            f"{size:,} bytes, larger than the limit of {limit:,} (--max-file-bytes): "
            f"only the chunks in the first {limit:,} bytes were read"
        )
    seen: set[int] = set()
    source: Iterator[tuple[Any, int | None]]
    if magic_ok and size <= limit:
        source = ((raw, None) for raw in _iter_binding(path, report))
    else:
        if not magic_ok:
            report.bad_chunks.append("the file header is damaged: chunks read one by one")
        source = _chunk_by_chunk(path, offsets, report)
    for raw, off in source:
        try:
            rec = _record(raw, off, want)
        except _DamagedRecord:
            report.damaged_records += 1
            continue
        if rec.record_id in seen and rec.record_id:
            continue
        seen.add(rec.record_id)
        if rec.time is not None and plausible(rec.time) is None:
            report.impossible_times += 1
            rec.time = None
        report.records += 1
        yield rec


_XML_START = re.compile(rb"<Event[\s>/]")
_XML_END = b"</Event>"
_XML_TIME = re.compile(rb"SystemTime=[\"']([^\"']{1,64})")
_XML_RID = re.compile(rb"<EventRecordID>(\d{1,20})<")
XML_BLOCK = 8 * 1024 * 1024
XML_MAX_EVENT = 16 * 1024 * 1024


def _local(tag: Any) -> str:
    t = str(tag)
    return t.rsplit("}", 1)[-1]


def _xml_parser() -> Any:
    from lxml import etree

    # No entities, no network, no huge trees: an event is plain data written by the attacker's server.
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=False)


def _parse_xml_event(block: bytes, offset: int, index: int, parser: Any = None) -> EventRecord | None:
    from lxml import etree

    try:
        el = etree.fromstring(block, parser if parser is not None else _xml_parser())
    except (etree.XMLSyntaxError, ValueError):
        return None
    fields: dict[str, str] = {}
    values: list[str] = []
    time_text = ""
    rid = ""
    for section in el:
        name = _local(section.tag)
        if name == "System":
            for item in section:
                tag = _local(item.tag)
                if tag == "Provider":
                    fields["Provider_Name"] = item.get("Name", "")
                elif tag == "TimeCreated":
                    time_text = item.get("SystemTime", "")
                elif tag == "EventRecordID":
                    rid = (item.text or "").strip()
                elif tag in ("EventID", "Level", "Channel", "Computer"):
                    fields[tag] = (item.text or "").strip()
        elif name in ("EventData", "UserData"):
            for j, d in enumerate(section):
                v = d.text or ""
                key = d.get("Name")
                if key:
                    fields[key] = v
                fields[f"Data{j}"] = v
                values.append(v)
    for src, dst in _SECURITY_4688.items():
        if src in fields and dst not in fields:
            fields[dst] = fields[src]
    return EventRecord(
        record_id=int(rid) if rid.isdigit() and len(rid) < 20 else index,
        offset=offset,
        time=parse_time(time_text),
        source=fields.get("Channel", ""),
        fields=fields,
        text=" ".join(values),
    )


def _last_start(buf: bytes, lo: int, hi: int) -> int:
    """The offset of the last ``<Event`` start tag in ``buf[lo:hi]`` (not ``<EventData>`` and the like), or -1."""
    i = buf.rfind(b"<Event", lo, hi)
    while i >= 0:
        if buf[i + 6 : i + 7] in (b" ", b">", b"/", b"\t", b"\n", b"\r"):
            return i
        i = buf.rfind(b"<Event", lo, i)
    return -1


def _xml_record(
    block: bytes, offset: int, index: int, want: Callable[[bytes], bool] | None, parser: Any
) -> EventRecord | None:
    """One ``<Event>`` of an XML export: parsed when ``want`` takes its raw bytes (None when it is not
    well-formed), else its time and record id only (``parsed`` False)."""
    if want is None or want(block):
        return _parse_xml_event(block, offset, index, parser)
    t = _XML_TIME.search(block)
    r = _XML_RID.search(block)
    return EventRecord(
        record_id=int(r.group(1)) if r else index,
        offset=offset,
        time=parse_time(t.group(1).decode("ascii", "replace")) if t else None,
        source="",
        fields={},
        text="",
        parsed=False,
    )


def read_event_xml(
    path: Path,
    want: Callable[[bytes], bool] | None = None,
    report: EvtxReport | None = None,
    max_bytes: int | None = None,
) -> Iterator[EventRecord]:
    """Records of an XML export (``wevtutil qe /f:xml`` or Event Viewer "Save as XML"), streamed.

    Linear in the file size whatever its content: each ``</Event>`` closes the last ``<Event`` start
    before it, found with one backward search; start tags left without an end are counted as damaged
    events in ``report``, as are events that are not well-formed. Events whose raw bytes ``want``
    rejects come back unparsed (time and record id only, ``parsed`` False): they count for coverage.
    """
    report = report if report is not None else EvtxReport()
    size = path.stat().st_size
    limit = size if max_bytes is None else max_bytes
    if size > limit:
        report.limit = (
            f"{size:,} bytes, larger than the limit of {limit:,} (--max-file-bytes): "
            f"only the events in the first {limit:,} bytes were read"
        )
    parser = _xml_parser()
    index = 0
    base = 0  # file offset of buf[0]
    buf = b""
    scan_from = 0  # where in buf to look for the next end tag
    read = 0
    with path.open("rb") as fh:
        while True:
            data = fh.read(min(XML_BLOCK, max(limit - read, 0)))
            read += len(data)
            buf = buf + data if buf else data
            pos = 0
            while True:
                end = buf.find(_XML_END, max(pos, scan_from))
                if end < 0:
                    scan_from = max(pos, len(buf) - len(_XML_END) + 1)
                    break
                stop = end + len(_XML_END)
                start = _last_start(buf, pos, end)
                if start < 0:
                    pos = scan_from = stop  # an end tag without a start: nothing to read
                    continue
                report.damaged_events += len(_XML_START.findall(buf, pos, start))
                index += 1
                block = buf[start:stop]
                pos = scan_from = stop
                rec = _xml_record(block, base + start, index, want, parser)
                if rec is None:
                    report.damaged_events += 1
                    continue
                if rec.time is not None and plausible(rec.time) is None:
                    report.impossible_times += 1
                    rec.time = None
                report.records += 1
                yield rec
            buf = buf[pos:]
            base += pos
            scan_from -= pos
            if len(buf) > XML_MAX_EVENT:
                # No event end in sight: what is buffered cannot be one event.
                report.damaged_events += len(_XML_START.findall(buf))
                base += len(buf)
                buf = b""
                scan_from = 0
            if not data:
                report.damaged_events += len(_XML_START.findall(buf))
                return
