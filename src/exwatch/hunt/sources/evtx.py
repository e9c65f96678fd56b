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
    """What reading one event log gave: records read, chunks lost, first and last times."""

    records: int = 0
    bad_chunks: list[str] = field(default_factory=list)
    first: Any = None
    last: Any = None
    channels: set[str] = field(default_factory=set)


def _flatten_event(event: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    system = event.get("System", {}) or {}
    fields: dict[str, str] = {}
    provider = system.get("Provider", {})
    if isinstance(provider, dict):
        attrs = provider.get("#attributes", {}) or {}
        fields["Provider_Name"] = str(attrs.get("Name", ""))
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
                    name = (item.get("#attributes") or {}).get("Name")
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


def _record(raw: Any, offset: int | None, want: Callable[[bytes], bool] | None = None) -> EventRecord | None:
    if want is not None and not want(str(raw.get("data", "")).encode("utf-8", "replace")):
        return EventRecord(
            record_id=int(raw.get("event_record_id", 0) or 0),
            offset=offset,
            time=parse_time(str(raw.get("timestamp", ""))),
            source="",
            fields={},
            text="",
            parsed=False,
        )
    try:
        doc = json.loads(raw["data"])
    except (KeyError, ValueError):
        return None
    event = doc.get("Event", doc)
    fields, values = _flatten_event(event)
    ts = str(raw.get("timestamp", ""))
    return EventRecord(
        record_id=int(raw.get("event_record_id", 0) or 0),
        offset=offset,
        time=parse_time(ts),
        source=fields.get("Channel", ""),
        fields=fields,
        text=" ".join(values),
    )


def _chunk_offsets(path: Path) -> list[int]:
    size = path.stat().st_size
    out = []
    with path.open("rb") as fh:
        off = FILE_HEADER_SIZE
        while off + 8 <= size:
            fh.seek(off)
            if fh.read(8) == CHUNK_MAGIC:
                out.append(off)
            off += CHUNK_SIZE
    return out


def read_evtx(
    path: Path, report: EvtxReport, want: Callable[[bytes], bool] | None = None
) -> Iterator[EventRecord]:
    """Every readable record of an ``.evtx`` file; damaged chunks are recorded in ``report``."""
    from evtx import PyEvtxParser

    seen: set[int] = set()
    try:
        parser = PyEvtxParser(str(path))
        for raw in parser.records_json():
            rec = _record(raw, None, want)
            if rec is not None:
                seen.add(rec.record_id)
                yield rec
        return
    except (RuntimeError, OSError, ValueError) as exc:
        first_error = str(exc)
    # Per-chunk recovery: parse each chunk on its own, from a temporary copy of header + chunk.
    tmpdir = tempfile.mkdtemp(prefix="exwatch-evtx-")
    try:
        with path.open("rb") as fh:
            header = fh.read(FILE_HEADER_SIZE)
            offsets = _chunk_offsets(path)
            size = path.stat().st_size
            n_chunks_declared = (size - FILE_HEADER_SIZE) // CHUNK_SIZE
            missing = n_chunks_declared - len(offsets)
            for index, off in enumerate(offsets):
                fh.seek(off)
                chunk = fh.read(CHUNK_SIZE)
                single = Path(tmpdir) / f"chunk{index}.evtx"
                # Patch the header so it describes one chunk (first/last chunk numbers, chunk count).
                hdr = bytearray(header)
                hdr[8:16] = (0).to_bytes(8, "little")
                hdr[16:24] = (0).to_bytes(8, "little")
                hdr[42:44] = (1).to_bytes(2, "little")
                hdr[124:128] = zlib.crc32(bytes(hdr[:120])).to_bytes(4, "little")
                single.write_bytes(bytes(hdr) + chunk)
                try:
                    for raw in PyEvtxParser(str(single)).records_json():
                        rec = _record(raw, off, want)
                        if rec is not None and rec.record_id not in seen:
                            seen.add(rec.record_id)
                            yield rec
                except (RuntimeError, OSError, ValueError) as exc:
                    report.bad_chunks.append(f"chunk at offset {off}: {str(exc).splitlines()[0][:200]}")
                finally:
                    single.unlink(missing_ok=True)
            if missing > 0:
                report.bad_chunks.append(
                    f"{missing} chunk(s) without the ElfChnk magic skipped (first error: {first_error.splitlines()[0][:200]})"
                )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


_XML_EVENT = re.compile(rb"<Event[\s>].*?</Event>", re.DOTALL)
_XML_TIME = re.compile(rb"SystemTime=[\"']([^\"']+)")
_XML_RID = re.compile(rb"<EventRecordID>(\d+)<")
XML_BLOCK = 8 * 1024 * 1024
XML_MAX_EVENT = 16 * 1024 * 1024


def _local(tag: Any) -> str:
    t = str(tag)
    return t.rsplit("}", 1)[-1]


def _parse_xml_event(block: bytes, offset: int, index: int) -> EventRecord | None:
    from lxml import etree

    try:
        el = etree.fromstring(block)
    except etree.XMLSyntaxError:
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
        record_id=int(rid) if rid.isdigit() else index,
        offset=offset,
        time=parse_time(time_text),
        source=fields.get("Channel", ""),
        fields=fields,
        text=" ".join(values),
    )


def read_event_xml(path: Path, want: Callable[[bytes], bool] | None = None) -> Iterator[EventRecord]:
    """Records of an XML export (``wevtutil qe /f:xml`` or Event Viewer "Save as XML"), streamed.

    Events whose raw bytes ``want`` rejects come back unparsed (time and record id only, ``parsed`` False):
    they count for coverage and are not matched.
    """
    index = 0
    base = 0
    buf = b""
    with path.open("rb") as fh:
        while True:
            data = fh.read(XML_BLOCK)
            buf += data
            pos = 0
            for m in _XML_EVENT.finditer(buf):
                index += 1
                block = m.group(0)
                pos = m.end()
                if want is None or want(block):
                    rec = _parse_xml_event(block, base + m.start(), index)
                    if rec is not None:
                        yield rec
                        continue
                t = _XML_TIME.search(block)
                r = _XML_RID.search(block)
                yield EventRecord(
                    record_id=int(r.group(1)) if r else index,
                    offset=base + m.start(),
                    time=parse_time(t.group(1).decode("ascii", "replace")) if t else None,
                    source="",
                    fields={},
                    text="",
                    parsed=False,
                )
            buf = buf[pos:]
            base += pos
            if len(buf) > XML_MAX_EVENT:
                # No event end in sight: drop what cannot be one event and go on.
                base += len(buf)
                buf = b""
            if not data:
                return
