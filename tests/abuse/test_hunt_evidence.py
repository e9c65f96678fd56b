"""Hostile evidence for the hunt's readers: event exports, damaged .evtx, links out of the evidence,
padded web shells and store URLs that point into the evidence.

Every test runs the real ``exwatch hunt`` on generated files and checks that the evidence is unchanged
and that nothing was written outside the hunt's temp folder (which must be empty again afterwards).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli

SHELL = '<%@ Page Language="Jscript"%><%eval(Request.Item["p"],"unsafe");%>\n'
SHELL_DIR = "inetpub/wwwroot/aspnet_client"


class Sandbox:
    """A test folder with the evidence, a temp folder the hunt must use and clean, and a working folder."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.base = tmp_path
        self.evidence = tmp_path / "EXCH01"
        self.evidence.mkdir()
        self.temp = tmp_path / "temp"
        self.temp.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(self.temp))
        monkeypatch.setenv("TMPDIR", str(self.temp))
        (tmp_path / "cwd").mkdir()
        monkeypatch.chdir(tmp_path / "cwd")

    def snapshot(self) -> dict[str, str]:
        """Every entry under the test folder but the temp folder: file hashes, link targets, folders."""
        out: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.base):
            d = Path(dirpath)
            if d == self.temp:
                dirnames[:] = []
                continue
            for name in dirnames + filenames:
                p = d / name
                key = str(p.relative_to(self.base))
                if p.is_symlink():
                    out[key] = "link:" + os.readlink(p)
                elif p.is_dir():
                    out[key] = "dir"
                else:
                    out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    def hunt(self, *args: str, path: Path | None = None) -> tuple[int, dict[str, Any], str]:
        before = self.snapshot()
        res = CliRunner().invoke(
            cli,
            ["hunt", str(path or self.evidence), "--format", "json", "--no-store", "--jobs", "1", *args],
        )
        assert self.snapshot() == before, "the hunt changed the evidence or wrote outside its temp folder"
        assert not any(self.temp.iterdir()), "the hunt left files in its temp folder"
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
        doc = json.loads(res.stdout) if res.stdout.strip() else {}
        return res.exit_code, doc, res.stderr


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    return Sandbox(tmp_path, monkeypatch)


def _errors(doc: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in doc.get("errors", []) if kind is None or e["kind"] == kind]


# --- XML event exports ------------------------------------------------------------------------


def test_xml_export_of_unclosed_events_is_linear_and_not_clean(box: Sandbox) -> None:
    """``<Events>`` then 40,000 ``<Event>`` lines (160 KB) took 39 s and ended clean."""
    (box.evidence / "Security.xml").write_bytes(b"<Events>\n" + b"<Event>\n" * 40_000)
    started = time.perf_counter()
    code, doc, _ = box.hunt()
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"{elapsed:.1f} s for 320 KB"
    assert code == 3
    damaged = _errors(doc, "evtx_xml")
    assert damaged and "40000" in damaged[0]["error"].replace(",", "")
    assert doc["hosts"][0]["verdict"] == "incomplete"


def _xml_event(i: int) -> str:
    return (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        '<Provider Name="MSExchange CmdletLogs"/><EventID>1</EventID>'
        f'<TimeCreated SystemTime="2021-03-05T08:{i // 60 % 60:02d}:{i % 60:02d}.000Z"/>'
        f"<EventRecordID>{i}</EventRecordID><Channel>MSExchange Management</Channel>"
        "<Computer>EXCH01</Computer></System><EventData><Data>Get-Mailbox</Data></EventData></Event>\n"
    )


def test_xml_export_over_the_file_limit_is_reported(box: Sandbox) -> None:
    body = "".join(_xml_event(i) for i in range(1, 2001))
    (box.evidence / "Mgmt.xml").write_text("<Events>\n" + body + "</Events>\n")
    code, doc, _ = box.hunt("--max-file-bytes", "64K")
    limit = _errors(doc, "file_limit")
    assert code == 3 and limit and "65536" in limit[0]["error"].replace(",", "")
    read = doc["coverage"]["EXCH01"]["evtx"]["records"]
    assert 0 < read < 2000
    code, doc, _ = box.hunt("--max-file-bytes", "1M")
    assert code == 0 and not _errors(doc)
    assert doc["coverage"]["EXCH01"]["evtx"]["records"] == 2000


def test_text_log_over_the_file_limit_is_hunted_in_part(box: Sandbox) -> None:
    web = box.evidence / "W3SVC1"
    web.mkdir()
    head = "#Software: Microsoft Internet Information Services 10.0\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"
    hit = (
        "2021-03-05 08:01:00 10.0.0.5 POST /ecp/y.js - 443 - 192.0.2.10 python-requests/2.25.1 - 200 0 0 20\n"
    )
    normal = "2021-03-05 08:00:00 10.0.0.5 GET /owa/ - 443 - 10.0.0.9 Mozilla/5.0 - 200 0 0 20\n"
    (web / "u_ex210305.log").write_text(head + hit + normal * 2000 + hit)
    code, doc, _ = box.hunt("--max-file-bytes", "16K")
    assert [e["kind"] for e in _errors(doc)] == ["file_limit"]
    lines = [f["evidence"]["line"] for f in doc["findings"] if f["rule"] == "proxylogon.iis_static_post"]
    assert lines == [3] and code == 1  # the hit in the first 16 KiB is found, the one after is not read


# --- damaged .evtx ----------------------------------------------------------------------------


def test_evtx_record_without_event_does_not_stop_the_hunt(box: Sandbox, shared_reference: Path) -> None:
    """Zeroing one byte of a real log gives a record ``{"Event": null}``; a ``|re`` rule crashed on it."""
    data = bytearray((shared_reference / "evtx" / "Application_no_crc32.evtx").read_bytes())
    data[4632] = 0
    (box.evidence / "Application.evtx").write_bytes(bytes(data))
    rules = box.base / "rules"
    rules.mkdir()
    (rules / "re.yml").write_text(
        "title: Any provider\nid: 6d1f2a8e-2b7e-4c1e-9a57-0b5c3f2d9e11\nstatus: test\nlevel: low\n"
        "logsource:\n  product: windows\ndetection:\n  sel:\n    Provider_Name|re: '.+'\n"
        "  condition: sel\ncustom:\n  exwatch:\n    id: test.any_provider\n"
    )
    code, doc, stderr = box.hunt("--rules", str(rules), "--no-builtin")
    assert code == 3, stderr
    assert any("record" in e["error"] for e in _errors(doc, "evtx_record"))
    hits = [f for f in doc["findings"] if f["title"] == "Any provider"]
    assert len(hits) >= 10  # the other records are still hunted


def test_truncated_evtx_is_not_read_as_clean(box: Sandbox, shared_reference: Path) -> None:
    """A log cut inside its first chunk read as 0 records with no error."""
    data = (shared_reference / "evtx" / "security_bad_string_cache.evtx").read_bytes()
    (box.evidence / "Security.evtx").write_bytes(data[: 4096 + 1000])
    code, doc, _ = box.hunt()
    assert code == 3
    assert _errors(doc, "evtx_chunk") or _errors(doc, "evtx_lost")
    assert doc["hosts"][0]["verdict"] == "incomplete"


def test_damaged_evtx_counts_lost_records_and_ignores_impossible_times(
    box: Sandbox, shared_reference: Path
) -> None:
    data = bytearray((shared_reference / "evtx" / "security_bad_string_cache.evtx").read_bytes())
    first = 4096 + 512
    assert data[first : first + 4] == b"**\x00\x00"
    data[first + 16 : first + 24] = bytes(8)  # record 1 written at FILETIME 0: 1601-01-01
    data[268785 : 268785 + 16] = bytes(x ^ 0xFF for x in data[268785 : 268785 + 16])  # a damaged record
    (box.evidence / "Security.evtx").write_bytes(bytes(data))
    code, doc, _ = box.hunt()
    assert code == 3
    cov = doc["coverage"]["EXCH01"]["evtx"]
    assert cov["first"].startswith("2016-07-08"), cov
    lost = _errors(doc, "evtx_lost")
    assert lost and "of 2261" in lost[0]["error"].replace(",", "")
    assert any("impossible time" in e["error"] for e in _errors(doc))
    assert 2000 < cov["records"] < 2261


def test_zeroed_preallocated_chunks_are_not_errors(box: Sandbox, shared_reference: Path) -> None:
    """A log Windows pre-allocated (empty chunks after the used ones) reads clean: nothing was lost."""
    shutil.copy(shared_reference / "evtx" / "security_bad_string_cache.evtx", box.evidence / "Security.evtx")
    code, doc, _ = box.hunt()
    assert not _errors(doc), doc["errors"]
    assert doc["coverage"]["EXCH01"]["evtx"]["records"] == 2261


# --- links out of the evidence ----------------------------------------------------------------


def test_links_out_of_the_evidence_are_refused(box: Sandbox) -> None:
    outside = box.base / "elsewhere"
    outside.mkdir()
    (outside / "shell.aspx").write_text(SHELL)
    web = box.evidence / SHELL_DIR
    web.mkdir(parents=True)
    (web / "elsewhere").symlink_to(outside)
    (web / "one.aspx").symlink_to(outside / "shell.aspx")
    (box.evidence / "etc").symlink_to("/etc")
    # A link that stays inside the evidence is followed as before.
    (box.evidence / "inside").mkdir()
    (box.evidence / "Logging").mkdir()
    (box.evidence / "Logging" / "real.txt").write_text("hello\n")
    (box.evidence / "inside" / "copy.txt").symlink_to(Path("..") / "Logging" / "real.txt")
    code, doc, _ = box.hunt()
    refused = {e["file"] for e in _errors(doc, "symlink_outside")}
    assert refused == {f"{SHELL_DIR}/elsewhere", f"{SHELL_DIR}/one.aspx", "etc"}
    assert not [
        f for f in doc["findings"] if "shell" in f["evidence"]["file"] or "one.aspx" in f["evidence"]["file"]
    ]
    assert doc["coverage"]["EXCH01"]["files"]["files"] == 2  # Logging/real.txt and inside/copy.txt only
    assert code == 3


def test_evidence_given_through_a_link_is_hunted(box: Sandbox) -> None:
    web = box.evidence / SHELL_DIR
    web.mkdir(parents=True)
    (web / "s.aspx").write_text(SHELL)
    link = box.base / "link-to-evidence"
    link.symlink_to(box.evidence)
    code, doc, _ = box.hunt(path=link)
    assert code == 1 and any(f["evidence"]["file"] == f"{SHELL_DIR}/s.aspx" for f in doc["findings"])


# --- large script files -----------------------------------------------------------------------


def test_padded_web_shells_are_scanned_head_and_tail(box: Sandbox) -> None:
    web = box.evidence / SHELL_DIR
    web.mkdir(parents=True)
    pad = b"<!-- " + b"A" * (11 << 20) + b" -->\n"
    (web / "head.aspx").write_bytes(SHELL.encode() + pad)
    (web / "tail.aspx").write_bytes(pad + SHELL.encode())
    code, doc, _ = box.hunt()
    found = {f["evidence"]["file"] for f in doc["findings"] if f["rule"].startswith("webshell.")}
    assert {f"{SHELL_DIR}/head.aspx", f"{SHELL_DIR}/tail.aspx"} <= found
    tail_hit = next(
        f for f in doc["findings"] if f["evidence"]["file"].endswith("tail.aspx") and f["evidence"]["offset"]
    )
    # Offsets are in the file, not in the part scanned.
    assert tail_hit["evidence"]["offset"] == len(pad) + SHELL.index("eval")
    skipped = _errors(doc, "partial_scan")
    assert {e["file"] for e in skipped} == {f"{SHELL_DIR}/head.aspx", f"{SHELL_DIR}/tail.aspx"}
    assert code == 1


# --- the store must not be inside the evidence -------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "sqlite+pysqlite:///{db}",
        "sqlite:///file:{db}?uri=true",
        "sqlite+pysqlite:///file:{db}?mode=rwc&uri=true",
        "sqlite:///../EXCH01/Logging/store.db",
    ],
)
def test_store_url_spellings_inside_the_evidence_are_refused(box: Sandbox, spelling: str) -> None:
    (box.evidence / "Logging").mkdir()
    db = box.evidence / "Logging" / "store.db"
    before = box.snapshot()
    res = CliRunner().invoke(cli, ["hunt", str(box.evidence), "--db", spelling.format(db=db)])
    assert res.exit_code == 2, res.output
    assert "inside the evidence" in res.output
    assert box.snapshot() == before and not db.exists()
