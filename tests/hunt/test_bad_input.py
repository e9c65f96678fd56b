"""Bad input: each problem is named, the run goes on, exit code 3, evidence never modified."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli
from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.hunt.model import ArchiveLimits

IIS_HEAD = "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: 2021-03-05 00:00:00\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"
SHELL_LINE = (
    "2021-03-05 08:01:00 10.0.0.5 POST /ecp/y.js - 443 - 192.0.2.10 python-requests/2.25.1 - 200 0 0 20\n"
)
NORMAL = "2021-03-05 08:00:00 10.0.0.5 GET /owa/ - 443 - 10.0.0.9 Mozilla/5.0 - 200 0 0 20\n"


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run(path: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    res = CliRunner().invoke(
        cli, ["hunt", str(path), "--format", "json", "--no-store", "--jobs", "1", *extra]
    )
    return res.exit_code, json.loads(res.stdout) if res.stdout.strip() else {}


def _errors_for(doc: dict, name: str) -> list[str]:  # type: ignore[type-arg]
    return [e["error"] for e in doc["errors"] if name in e["file"]]


def test_truncated_gzip_and_corrupt_zip(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "W3SVC1").mkdir(parents=True)
    data = gzip.compress((IIS_HEAD + NORMAL * 2000).encode())
    (root / "W3SVC1" / "u_ex210305.log.gz").write_bytes(data[: len(data) // 2])
    (root / "bad.zip").write_bytes(b"PK\x03\x04" + os.urandom(200))
    (root / "W3SVC1" / "u_ex210306.log").write_text(IIS_HEAD + NORMAL)
    before = _hashes(root)
    code, doc = _run(root)
    assert code == 3
    assert (
        _errors_for(doc, "u_ex210305.log.gz")
        and "damaged archive" in _errors_for(doc, "u_ex210305.log.gz")[0]
    )
    assert _errors_for(doc, "bad.zip")
    assert doc["coverage"]["t"]["iis"]["files"] >= 1
    assert _hashes(root) == before


def test_encodings_nul_and_header_change(tmp_path: Path) -> None:
    root = tmp_path / "enc" / "W3SVC1"
    root.mkdir(parents=True)
    (root / "u_ex1.log").write_bytes((IIS_HEAD + SHELL_LINE).encode("utf-16"))
    (root / "u_ex2.log").write_bytes(
        IIS_HEAD.encode()
        + b"\x00\x00\x00\n"
        + NORMAL.replace("Mozilla/5.0", "Mozilla/5.0\xe9").encode("latin-1")
        + SHELL_LINE.encode()
    )
    # The header changes mid-file after a restart: a new field order must be used for later lines.
    new_head = "#Fields: time date cs-uri-stem cs-method s-ip cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"
    moved = (
        "08:09:00 2021-03-05 /ecp/y.js POST 10.0.0.5 - 443 - 192.0.2.10 python-requests/2.25.1 - 200 0 0 20\n"
    )
    (root / "u_ex3.log").write_text(IIS_HEAD + NORMAL + new_head + moved)
    res = hunt_paths([root.parent], HuntOptions(jobs=1))
    hits = {
        (f.evidence.file, f.evidence.line) for f in res.findings if f.rule == "proxylogon.iis_static_post"
    }
    assert ("W3SVC1/u_ex1.log", 5) in hits
    assert ("W3SVC1/u_ex2.log", 7) in hits
    assert ("W3SVC1/u_ex3.log", 7) in hits
    moved_hit = next(f for f in res.findings if f.evidence.file == "W3SVC1/u_ex3.log")
    assert moved_hit.time is not None and moved_hit.time.isoformat().startswith("2021-03-05T08:09:00")


def test_huge_line_is_capped(tmp_path: Path) -> None:
    root = tmp_path / "big" / "W3SVC1"
    root.mkdir(parents=True)
    with (root / "u_ex1.log").open("wb") as fh:
        fh.write(IIS_HEAD.encode())
        fh.write(b"2021-03-05 08:00:00 10.0.0.5 GET /owa/ ")
        block = b"A" * (1 << 20)
        for _ in range(200):
            fh.write(block)
        fh.write(b" 443 - 10.0.0.9 x - 200 0 0 1\n")
        fh.write(SHELL_LINE.encode())
    res = hunt_paths([root.parent], HuntOptions(jobs=1))
    hit = [f for f in res.findings if f.rule == "proxylogon.iis_static_post"]
    assert hit and hit[0].evidence.line == 6
    assert hit[0].evidence.offset == (root / "u_ex1.log").stat().st_size - len(SHELL_LINE)


def test_huge_line_with_literal_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "big2" / "W3SVC1"
    root.mkdir(parents=True)
    with (root / "u_ex1.log").open("wb") as fh:
        fh.write(IIS_HEAD.encode())
        fh.write(b"2021-03-05 08:00:00 10.0.0.5 POST /ecp/y.js ")
        fh.write(b"B" * (3 << 20))
        fh.write(b" 443 - 10.0.0.9 x - 200 0 0 1\n")
    res = hunt_paths([root.parent], HuntOptions(jobs=1, max_line=1 << 20, chunk_size=1 << 20))
    assert any(e.kind == "long_line" and "u_ex1.log" in e.error for e in res.errors)


def test_damaged_evtx_recovers_later_chunks(tmp_path: Path, shared_reference: Path) -> None:
    root = tmp_path / "ev"
    root.mkdir()
    shutil.copy(shared_reference / "evtx" / "sample_with_a_bad_chunk_magic.evtx", root)
    before = _hashes(root)
    code, doc = _run(root)
    assert code == 3
    assert doc["coverage"]["ev"]["evtx"]["records"] > 14  # the binding alone stops after 14 records
    assert _errors_for(doc, "sample_with_a_bad_chunk_magic.evtx")
    assert _hashes(root) == before


def test_unreadable_fifo_dangling_symlink_and_loop(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    root.mkdir()
    (root / "W3SVC1").mkdir()
    (root / "W3SVC1" / "u_ex1.log").write_text(IIS_HEAD + NORMAL)
    os.mkfifo(root / "pipe.log")
    (root / "gone.log").symlink_to(root / "nowhere.log")
    (root / "W3SVC1" / "loop").symlink_to(root)
    code, doc = _run(root)
    assert code == 3
    kinds = {e["kind"] for e in doc["errors"]}
    assert {"not_regular", "dangling_symlink", "symlink_loop"} <= kinds
    if os.geteuid() != 0:
        secret = root / "secret.log"
        secret.write_text("x")
        secret.chmod(0)
        code, doc = _run(root)
        assert _errors_for(doc, "secret.log")


def test_zip_bomb_is_stopped(tmp_path: Path) -> None:
    root = tmp_path / "bomb"
    root.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (64 << 20))
    (root / "bomb.zip").write_bytes(buf.getvalue())
    res = hunt_paths(
        [root], HuntOptions(jobs=1, limits=ArchiveLimits(ratio_floor_bytes=1 << 20, max_ratio=100))
    )
    assert any("archive bomb" in e.error and "bomb.zip" in e.error for e in res.errors)
    assert res.verdict == "incomplete"


def test_missing_path_is_usage_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["hunt", str(tmp_path / "nope"), "--no-store"])
    assert res.exit_code == 2
    assert "no such file" in res.output


@pytest.mark.skipif(os.name == "nt", reason="the live path exists on Windows")
def test_live_hunt_needs_windows() -> None:
    res = CliRunner().invoke(cli, ["hunt", "--no-store"])
    assert res.exit_code == 2
    assert "needs Windows" in res.output


def test_httpproxy_header_changes_mid_file(tmp_path: Path) -> None:
    root = tmp_path / "hp" / "Logging" / "HttpProxy" / "Ecp"
    root.mkdir(parents=True)
    head = "#Software: Microsoft Exchange Server\n#Version: 15.01.2176.002\n#Log-type: HttpProxy Logs\n#Date: 2021-03-03T06:00:00.000Z\n"
    first = (
        head
        + "#Fields: DateTime,RequestId,AnchorMailbox,HttpStatus,UrlStem\n"
        + "2021-03-03T06:00:01.000Z,1,Sid~S-1-5-21-1,200,/ecp/\n"
    )
    # After a restart the same file gets a new header with another column order.
    second = head + "#Fields: DateTime,AnchorMailbox,UrlStem,HttpStatus,RequestId\n"
    row = '2021-03-03T06:59:11.840Z,"ServerInfo~a]@exch01.example.test:444/mapi/emsmdb/?#",/ecp/y.js,200,2\n'
    (root / "HttpProxy_2021030306-1.LOG").write_text(first + second + row)
    res = hunt_paths([tmp_path / "hp"], HuntOptions(jobs=1))
    hit = [f for f in res.findings if f.rule == "proxylogon.ssrf_progressed"]
    assert [(f.evidence.line, f.time.isoformat()[:19]) for f in hit if f.time] == [
        (12, "2021-03-03T06:59:11")
    ]


def test_peak_memory_with_a_200mb_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "mem" / "W3SVC1"
    root.mkdir(parents=True)
    with (root / "u_ex1.log").open("wb") as fh:
        fh.write(IIS_HEAD.encode() + b"2021-03-05 08:00:00 10.0.0.5 POST /ecp/y.js ")
        for _ in range(200):
            fh.write(b"C" * (1 << 20))
        fh.write(b" 443 - 10.0.0.9 x - 200 0 0 1\n")
    code = (
        "import sys;from pathlib import Path;from exwatch.hunt import hunt_paths,HuntOptions;"
        f"r=hunt_paths([Path({str(root.parent)!r})],HuntOptions(jobs=1));"
        # VmHWM, the peak RSS of this process's own memory: ru_maxrss would also count the pytest
        # process it was forked from (Linux keeps the pre-exec high-water mark across execve).
        "hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1];"
        "print(hwm, len(r.errors))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    peak_kb, n_errors = int(out[0]), int(out[1])
    assert n_errors == 1  # the long line is reported
    assert peak_kb < 500 * 1024


def test_httpproxy_without_header_uses_the_documented_fields(tmp_path: Path) -> None:
    from exwatch.hunt.sources.lines import HTTPPROXY_FIELDS

    root = tmp_path / "nohead" / "Logging" / "HttpProxy" / "Owa"
    root.mkdir(parents=True)
    values = dict.fromkeys(HTTPPROXY_FIELDS, "")
    values.update(
        DateTime="2021-03-03T06:59:11.840Z",
        AnchorMailbox="ServerInfo~a]@exch01.example.test:444/mapi/emsmdb/?#",
        HttpStatus="200",
    )
    (root / "HttpProxy_2021030306-2.LOG").write_text(",".join(values[f] for f in HTTPPROXY_FIELDS) + "\n")
    res = hunt_paths([tmp_path / "nohead"], HuntOptions(jobs=1))
    assert [f.evidence.line for f in res.findings if f.rule == "proxylogon.ssrf_progressed"] == [1]


def test_store_inside_the_evidence_is_refused(tmp_path: Path) -> None:
    """A --db inside (or equal to) the evidence is bad input: nothing is created or changed there."""
    evidence = tmp_path / "EXCH01"
    (evidence / "Logging").mkdir(parents=True)
    empty = evidence / "Logging" / "empty.log"
    empty.write_bytes(b"")  # SQLite would happily turn an empty file into a database
    before = sorted(p.name for p in evidence.rglob("*"))
    for db in (evidence / "store.db", empty):
        res = CliRunner().invoke(cli, ["hunt", str(evidence), "--db", f"sqlite:///{db}"])
        assert res.exit_code == 2, res.output
        assert "inside the evidence" in res.output
    assert sorted(p.name for p in evidence.rglob("*")) == before
    assert empty.read_bytes() == b""
    outside = tmp_path / "store.db"
    res = CliRunner().invoke(cli, ["hunt", str(evidence), "--db", f"sqlite:///{outside}"])
    assert res.exit_code in (0, 3), res.output
    assert outside.stat().st_size > 0
