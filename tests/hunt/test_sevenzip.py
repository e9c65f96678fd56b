"""7z archives: hunted in place like folders, and stopped by the real bytes they expand to."""

from __future__ import annotations

from pathlib import Path

import py7zr
import pytest

from exwatch.hunt import HuntOptions, hunt_paths
from exwatch.hunt.model import ArchiveLimits
from exwatch.hunt.sources.files import _ArchiveBomb, _Budget, _limited_7z_factory

DATA = Path(__file__).parent / "data" / "realworld"


def _key(res):  # type: ignore[no-untyped-def]
    return {(f.rule, f.evidence.file, f.evidence.line) for f in res.findings}


def test_7z_gives_same_findings_as_the_folder(tmp_path: Path) -> None:
    archive = tmp_path / "EXCH01.7z"
    with py7zr.SevenZipFile(archive, "w") as zf:
        for f in sorted(DATA.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(DATA).as_posix())
    before = archive.read_bytes()
    folder = hunt_paths([DATA], HuntOptions(jobs=1))
    packed = hunt_paths([archive], HuntOptions(jobs=1))
    assert _key(folder) and _key(packed) == _key(folder)
    assert packed.hosts[0].host == "EXCH01"
    assert archive.read_bytes() == before


def test_writer_counts_real_bytes_not_declared_ones(tmp_path: Path) -> None:
    """An archive whose headers understate its members is stopped while it expands."""
    budget = _Budget(ArchiveLimits(max_total_bytes=1000, max_member_bytes=600), compressed=10)
    factory = _limited_7z_factory(tmp_path, budget, "bomb.7z")
    first = factory.create("a/one.log")
    first.write(b"x" * 500)
    first.close()
    assert (tmp_path / "a" / "one.log").stat().st_size == 500
    second = factory.create("two.log")
    with pytest.raises(_ArchiveBomb, match="expand to more than 1000 bytes"):
        second.write(b"y" * 550)
    third = factory.create("three.log")
    with pytest.raises(_ArchiveBomb, match="member larger than 600 bytes"):
        third.write(b"z" * 700)


def test_writer_drops_escaping_names(tmp_path: Path) -> None:
    budget = _Budget(ArchiveLimits(), compressed=10)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("../../escape.txt", str(tmp_path / "escape.txt")):
        w = _limited_7z_factory(out, budget, "evil.7z").create(name)
        w.write(b"data")
        w.close()
    assert not (tmp_path / "escape.txt").exists() and not any(out.rglob("*"))
    inside = _limited_7z_factory(out, budget, "ok.7z").create(str(out / "Logging" / "a.log"))
    inside.write(b"line\n")
    inside.close()
    assert (out / "Logging" / "a.log").read_bytes() == b"line\n"


def test_7z_bomb_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    archive = tmp_path / "EXCH02.7z"
    big = tmp_path / "zeros.log"
    big.write_bytes(b"\0" * (40 * 1024**2))
    with py7zr.SevenZipFile(archive, "w") as zf:
        zf.write(big, "zeros.log")
    big.unlink()
    res = hunt_paths([archive], HuntOptions(jobs=1, limits=ArchiveLimits(max_ratio=50.0)))
    assert any("archive bomb" in e.error and "EXCH02.7z" in e.file for e in res.errors), res.errors
