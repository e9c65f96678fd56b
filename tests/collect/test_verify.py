"""exwatch collect verify, and exwatch hunt's refusal of a package that does not match its manifest."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from exwatch.cli.main import main
from exwatch.collect.families import MANIFEST_NAME
from exwatch.collect.manifest import CollectionError, verify


def _rewrite(
    src: Path, dst: Path, *, members: dict[str, bytes | None] | None = None, manifest: Any = None
) -> None:
    """A copy of ``src`` with some members replaced (None drops one) and/or another manifest."""
    members = members or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            name = info.filename
            if name == MANIFEST_NAME and manifest is not None:
                zout.writestr(name, manifest if isinstance(manifest, bytes) else json.dumps(manifest))
            elif name in members:
                if members[name] is not None:
                    zout.writestr(info, members[name])
            else:
                zout.writestr(info, zin.read(info))
        for name, data in members.items():
            if data is not None and name not in zin.namelist():
                zout.writestr(name, data)


def _manifest(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        return dict(json.loads(zf.read(MANIFEST_NAME)))


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_intact_package_exits_0(lab_zip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["collect", "verify", str(lab_zip)], capsys)
    assert code == 0 and "intact, host EXCH01" in out
    code, out, _ = _run(["collect", "verify", str(lab_zip), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["files"] == len(_manifest(lab_zip)["files"])


def test_a_flipped_byte_names_the_member(
    lab_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = next(f["path"] for f in _manifest(lab_zip)["files"] if f["path"].endswith(".aspx"))
    data = bytearray(zipfile.ZipFile(lab_zip).read(victim))
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "flipped.zip"
    _rewrite(lab_zip, bad, members={victim: bytes(data)})
    code, out, err = _run(["collect", "verify", str(bad)], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"exwatch: error: {victim}: SHA-256 differs from the manifest"]


def test_a_flipped_byte_in_the_compressed_stream_is_caught(zip_copy: Path) -> None:
    """Damage inside the zip file itself (not a re-packed member) is caught too (CRC or SHA-256)."""
    m = _manifest(zip_copy)
    big = max(m["files"], key=lambda f: f["size"])
    with zipfile.ZipFile(zip_copy) as zf:
        info = zf.getinfo(big["path"])
    raw = bytearray(zip_copy.read_bytes())
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    raw[at] ^= 0xFF
    zip_copy.write_bytes(bytes(raw))
    with pytest.raises(CollectionError, match=big["path"].replace("(", r"\(")):
        verify(zip_copy)


def test_a_missing_member(lab_zip: Path, tmp_path: Path) -> None:
    victim = _manifest(lab_zip)["files"][3]["path"]
    bad = tmp_path / "missing.zip"
    _rewrite(lab_zip, bad, members={victim: None})
    with pytest.raises(CollectionError, match="missing member") as exc:
        verify(bad)
    assert victim in str(exc.value)


def test_an_extra_member(lab_zip: Path, tmp_path: Path) -> None:
    bad = tmp_path / "extra.zip"
    _rewrite(lab_zip, bad, members={"inetpub/wwwroot/aspnet_client/planted.aspx": b"<%@ Page %>"})
    with pytest.raises(CollectionError, match=r"inetpub/wwwroot/aspnet_client/planted.aspx: extra member"):
        verify(bad)


def test_a_member_twice(lab_zip: Path, tmp_path: Path) -> None:
    first = _manifest(lab_zip)["files"][0]["path"]
    bad = tmp_path / "twice.zip"
    _rewrite(lab_zip, bad)
    with zipfile.ZipFile(bad, "a") as zf, pytest.warns(UserWarning):
        zf.writestr(first, b"other")
    with pytest.raises(CollectionError, match="appears twice"):
        verify(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (b"{not json", "not JSON"),
        ("format2", "format 2"),
        ("traversal", "is not a relative path"),
        ("absolute", "is not a relative path"),
        ("backslash", "is not a relative path"),
        ("badsha", "is not a SHA-256"),
        ("negative", "is not a byte count"),
        ("nohost", "no host"),
        ("list", "not a JSON object"),
    ],
)
def test_bad_manifests(
    lab_zip: Path, tmp_path: Path, change: Any, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _manifest(lab_zip)
    if change == "format2":
        m["format"] = 2
    elif change == "traversal":
        m["files"][0]["path"] = "../../etc/cron.d/x"
    elif change == "absolute":
        m["files"][0]["path"] = "/etc/passwd"
    elif change == "backslash":
        m["files"][0]["path"] = "C:\\Windows\\x.aspx"
    elif change == "badsha":
        m["files"][0]["sha256"] = "00"
    elif change == "negative":
        m["files"][0]["size"] = -1
    elif change == "nohost":
        m["host"] = ""
    elif change == "list":
        m = [m]
    bad = tmp_path / "bad.zip"
    _rewrite(lab_zip, bad, manifest=change if isinstance(change, bytes) else m)
    code, out, err = _run(["collect", "verify", str(bad)], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("exwatch: error: malformed manifest") and message in lines[0]
    )


def test_not_a_collection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("a.log", "x")
    code, _, err = _run(["collect", "verify", str(plain)], capsys)
    assert code == 2 and "not an exwatch collection" in err
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    code, _, err = _run(["collect", "verify", str(junk)], capsys)
    assert code == 2 and "not a readable zip" in err
    code, _, err = _run(["collect", "verify", str(tmp_path / "nope.zip")], capsys)
    assert code == 2 and "no such file" in err


def test_hunt_refuses_a_tampered_package_unless_no_verify(
    lab_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "EXCH01.zip"
    _rewrite(lab_zip, bad, members={"inetpub/wwwroot/aspnet_client/planted.aspx": b"<%@ Page %>"})
    code, out, err = _run(["hunt", str(bad), "--no-store", "--format", "json"], capsys)
    assert code == 2 and out == ""
    assert "planted.aspx: extra member" in err
    code, out, _ = _run(
        ["hunt", str(bad), "--no-store", "--format", "json", "--no-verify", "--jobs", "1"], capsys
    )
    assert code == 1
    data = json.loads(out)
    assert data["hosts"][0]["host"] == "EXCH01"
    assert any(
        f["evidence"]["file"] == "inetpub/wwwroot/aspnet_client/planted.aspx" for f in data["findings"]
    )


def test_hunt_stores_the_collected_build(
    lab_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import select

    from exwatch.fleet import open_store
    from exwatch.fleet import schema as t

    url = f"sqlite:///{tmp_path / 'store.db'}"
    code, _, _ = _run(["--db", url, "hunt", str(lab_zip), "--jobs", "1", "--format", "json"], capsys)
    assert code == 1
    with open_store(url) as store, store.connect() as conn:
        rows = conn.execute(
            select(t.observations.c.build, t.observations.c.build_source, t.observations.c.host_id)
        ).all()
        hunts = conn.execute(select(t.hunts.c.host, t.hunts.c.host_id)).all()
        kinds = conn.execute(select(t.scans.c.kind)).scalars().all()
    assert [(r.build, r.build_source) for r in rows] == [("15.1.2176.2", "collector")]
    assert kinds == ["collect"]
    # The hunt is linked to the host the observation created.
    assert hunts == [("EXCH01", rows[0].host_id)] and rows[0].host_id is not None
