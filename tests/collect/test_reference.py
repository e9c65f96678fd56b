"""The Python reference collection over a lab triage tree (as a mounted system drive would be): the file list
its rules give, checked against the data by an independent matcher, and the package hunted like the folder."""

from __future__ import annotations

import fnmatch
import json
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exwatch.cli.main import main
from exwatch.collect.families import MANIFEST_NAME
from exwatch.collect.hunthook import observation
from exwatch.collect.manifest import verify
from exwatch.collect.reference import iis_log_folders, select
from exwatch.hunt import HuntOptions, hunt_paths

BASES = {
    "exchange": ["Program Files/Microsoft/Exchange Server/V15"],
    "iis_logs": ["inetpub/logs/LogFiles/W3SVC1", "inetpub/logs/LogFiles/W3SVC2"],
    "system_drive": [""],
    "windir": ["Windows"],
    "programdata": ["ProgramData"],
    "user_profiles": [],
}


def _expected(root: Path) -> tuple[set[str], set[str]]:
    """(copied, listed only) by reading the data with fnmatch, independently of the collector's code."""
    raw = json.loads((Path(__file__).parents[2] / "src/exwatch/collect/data/families.json").read_text())
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    owner: dict[str, dict[str, Any]] = {}
    for fam in raw["families"]:
        if fam["kind"] == "eventlog":
            for ch in fam["channels"]:
                for ext in (".evtx", ".xml"):
                    rel = f"{fam['folder']}/{ch['file']}{ext}"
                    if rel in files:
                        owner.setdefault(rel, fam)
            continue
        for base in BASES[fam["base"]]:
            for sub in fam["paths"]:
                folder = "/".join(x for x in (base, sub) if x)
                for rel in files:
                    parent, _, name = rel.rpartition("/")
                    inside = parent == folder or (
                        fam["recurse"] and (folder == "" or parent.startswith(folder + "/"))
                    )
                    if inside and any(fnmatch.fnmatch(name.lower(), p.lower()) for p in fam["include"]):
                        owner.setdefault(rel, fam)
    copied, listed = set(), set()
    for rel, fam in owner.items():
        name = rel.rsplit("/", 1)[-1].lower()
        if fam["kind"] == "listing" and (
            any(fnmatch.fnmatch(name, p.lower()) for p in fam["never_copy"])
            or (root / rel).stat().st_size > fam["copy_up_to"]
        ):
            listed.add(rel)
        else:
            copied.add(rel)
    return copied, listed


def test_selection_matches_the_data(lab_tree: Path) -> None:
    chosen, skipped, listing = select(lab_tree)
    copied, listed = _expected(lab_tree)
    assert {c.path for c in chosen} == copied
    assert {i.path for i in listing if not i.copied} == listed
    assert listed == {"Windows/Temp/lsass.dmp", "root/lsass.dmp"}  # dumps are listed, never copied
    # Every family with files in the lab tree contributes; absent ones are recorded, not guessed.
    names = {c.family.name for c in chosen}
    assert {
        "httpproxy",
        "ecp_server",
        "oabgenerator",
        "iis",
        "eventlogs",
        "owa_auth",
        "aspnet_client",
        "iis_config",
    } <= names
    assert {"path": "EventLogs/System.evtx", "reason": "channel absent"} in skipped


def test_every_planted_file_is_collected_or_listed(lab_tree: Path) -> None:
    truth = json.loads((lab_tree / "truth.json").read_text())
    chosen, _, listing = select(lab_tree)
    taken = {c.path for c in chosen} | {i.path for i in listing}
    planted = {it["file"].split("!/")[0] for it in truth["items"]}
    assert planted and planted <= taken, sorted(planted - taken)


def test_iis_log_folders_come_from_the_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "Windows/System32/inetsrv/config/applicationHost.config"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(
        "<configuration><system.applicationHost><sites>"
        '<site name="Default Web Site" id="1"/>'
        '<site name="Exchange Back End" id="2"><logFile directory="D:\\IISLogs" /></site>'
        '<siteDefaults><logFile directory="%SystemDrive%\\Logs\\IIS" /></siteDefaults>'
        "</sites></system.applicationHost></configuration>"
    )
    assert iis_log_folders(tmp_path) == ["C:\\Logs\\IIS\\W3SVC1", "D:\\IISLogs\\W3SVC2"]
    assert iis_log_folders(tmp_path / "nothing") == []


def test_budget_keeps_the_newest_logs_and_records_the_rest(lab_tree: Path) -> None:
    full, _, _ = select(lab_tree)
    logs = sorted((c for c in full if c.family.bounded and c.family.kind == "files"), key=lambda c: -c.mtime)
    fixed = sum(c.size for c in full if not (c.family.bounded and c.family.kind == "files"))
    budget = fixed + sum(c.size for c in logs[:10])
    chosen, skipped, _ = select(lab_tree, max_bytes=budget)
    kept = [c for c in chosen if c.family.bounded and c.family.kind == "files"]
    assert [c.path for c in kept] == [c.path for c in logs[:10]]
    assert sum(c.size for c in chosen) <= budget
    assert {s["path"] for s in skipped if s["reason"] == "max_bytes"} == {c.path for c in logs[10:]}
    since = datetime(2021, 3, 2, tzinfo=UTC)
    chosen, skipped, _ = select(lab_tree, since=since)
    old = {c.path for c in logs if c.mtime < since.timestamp()}
    assert old and not old & {c.path for c in chosen}
    assert {s["path"] for s in skipped if s["reason"] == "older than --since"} == old


def test_the_package_verifies_and_is_laid_out_like_the_tree(lab_tree: Path, lab_zip: Path) -> None:
    m = verify(lab_zip)
    assert m.host == "EXCH01" and m.build == "15.1.2176.2"
    with zipfile.ZipFile(lab_zip) as zf:
        names = set(zf.namelist())
    assert MANIFEST_NAME in names
    for f in m.files:
        assert (lab_tree / f.path).read_bytes() == zipfile.ZipFile(lab_zip).read(f.path)
    # Evidence is never modified: the tree's files keep their times.
    st = os.stat(lab_tree / m.files[0].path)
    assert (
        abs(datetime.fromisoformat(m.files[0].mtime.replace("Z", "+00:00")).timestamp() - st.st_mtime) < 1e-3
    )


def _key(f: Any) -> tuple[Any, ...]:
    ev = f.evidence
    return (f.rule, ev.file, ev.line, ev.record, ev.offset, f.time, f.confidence)


def test_hunting_the_zip_finds_what_hunting_the_folder_finds(lab_tree: Path, lab_zip: Path) -> None:
    folder = hunt_paths([lab_tree], HuntOptions(jobs=1))
    package = hunt_paths([lab_zip], HuntOptions(jobs=1))
    assert len(folder.findings) > 50
    assert sorted(map(_key, folder.findings), key=str) == sorted(map(_key, package.findings), key=str)
    (host,) = package.hosts
    assert host.host == "EXCH01" and host.verdict == folder.hosts[0].verdict == "compromised"
    # Coverage per log family is the same; the collection's own account is added.
    assert host.coverage.logs == folder.hosts[0].coverage.logs
    assert host.coverage.collection is not None and host.coverage.collection.listed_not_copied == 2
    # The build the collector read goes to the store with the hunt (record_hunt).
    assert (
        host.collection is not None
        and observation(host.collection)[0].to_record()["build_source"] == "collector"
    )
    assert not package.errors


def test_collect_tree_cli(lab_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.zip"
    with pytest.raises(SystemExit) as exc:
        main(
            ["collect", "tree", str(lab_tree), "--out", str(out), "--host", "EXCH01", "--max-bytes", "300KB"]
        )
    assert exc.value.code == 0
    m = verify(out)
    assert sum(f.size for f in m.files) <= 300_000
    assert any(s["reason"] == "max_bytes" for s in m.skipped)
    with pytest.raises(SystemExit) as exc:
        main(["collect", "tree", str(lab_tree), "--out", str(out), "--host", "EXCH01"])
    assert exc.value.code == 2
    assert "exists already" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["collect", "tree", str(lab_tree), "--out", str(lab_tree / "in.zip"), "--host", "EXCH01"])
    assert exc.value.code == 2
    assert not (lab_tree / "in.zip").exists()
