"""The families data against the hunt: every family the hunt reads is collected, and every collected family
lands where the hunt's classifier puts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exwatch.collect import families as fam_mod
from exwatch.collect.families import families, hunt_families, package_path, wildcard
from exwatch.hunt.engine import TEXT_LOG_FAMILIES
from exwatch.hunt.sources.files import classify

# Header lines the hunt recognises, per family (log_formats.md 2.2, 3, 4, 6, 7).
HEADS = {
    "httpproxy": b"#Software: Microsoft Exchange Server\r\n#Log-type: HttpProxy Logs\r\n#Fields: DateTime,RequestId\r\n",
    "ecp": b"#Software: Microsoft Exchange Server\r\n#Log-type: ECP Server Log\r\n#Fields: TimeStamp,ServerName,EventId,EventData\r\n",
    "ecp_activity": b"#Log-type: ECP Activity Context Log\r\n#Fields: TimeStamp,ServerName,EventId,EventData\r\n",
    "oabgenerator": b"2021-03-03T07:02:22.817Z,OABGen,Download failed\r\n",
    "exchange_log": b"#Software: Microsoft Exchange Server\r\n#Log-type: EWS Logs\r\n#Fields: DateTime,RequestId\r\n",
    "iis": b"#Software: Microsoft Internet Information Services 10.0\r\n#Fields: date time s-ip\r\n",
    "evtx": b"ElfFile\x00",
    "file": b'<%@ Page Language="C#" %>',
}
INSTALL = "Program Files/Microsoft/Exchange Server/V15"
BASE_SAMPLE = {
    "exchange": INSTALL,
    "iis_logs": "inetpub/logs/LogFiles/W3SVC1",
    "system_drive": "",
    "windir": "Windows",
    "programdata": "ProgramData",
    "user_profiles": "Users/admin",
}


def _sample_name(pattern: str) -> str:
    return pattern.replace("*", "sample1").replace("?", "x")


def test_every_family_the_hunt_reads_is_collected() -> None:
    """A text-log family added to the hunt (engine.TEXT_LOG_FAMILIES) without a collector family fails here."""
    hunted = set(TEXT_LOG_FAMILIES) | {"evtx", "file"}
    missing = hunted - hunt_families()
    assert not missing, f"families the hunt reads but the collector does not collect: {sorted(missing)}"
    unknown = hunt_families() - hunted
    assert not unknown, f"collector families the hunt does not read: {sorted(unknown)}"


@pytest.mark.parametrize("fam", [f for f in families() if f.kind != "eventlog"], ids=lambda f: f.name)
def test_a_file_of_each_family_is_classified_as_its_hunt_family(fam: fam_mod.Family) -> None:
    for sub in fam.paths:
        for pattern in fam.include:
            base = BASE_SAMPLE[fam.base]
            rel = "/".join(x for x in (base, sub, _sample_name(pattern)) if x)
            head = HEADS[fam.hunt] if fam.hunt != "file" else b"MZ\x90\x00"
            got = classify(Path(rel), rel, head)
            assert got == fam.hunt, (rel, got)


def test_event_channels_export_to_evtx_the_hunt_reads() -> None:
    (ev,) = [f for f in families() if f.kind == "eventlog"]
    assert ev.hunt == "evtx"
    names = {c.channel for c in ev.channels}
    for required in (
        "MSExchange Management",
        "Application",
        "System",
        "Security",
        "Microsoft-Windows-Sysmon/Operational",
    ):
        assert required in names
    assert [c.optional for c in ev.channels if c.channel.startswith("Microsoft-Windows-Sysmon")] == [True]
    for c in ev.channels:
        rel = f"{ev.folder}/{c.file}.evtx"
        assert classify(Path(rel), rel, b"ElfFile\x00") == "evtx"
        assert "/" not in c.file and "\\" not in c.file


def test_every_family_has_the_keys_the_script_reads() -> None:
    """The script runs under Set-StrictMode 2.0: a key it reads and the data lacks stops it."""
    raw = json.loads(fam_mod.data_text())
    for f in raw["families"]:
        common = {"name", "hunt", "kind", "bounded"}
        need = common | (
            {"folder", "channels"} if f["kind"] == "eventlog" else {"base", "paths", "recurse", "include"}
        )
        if f["kind"] == "listing":
            need |= {"copy_up_to", "never_copy"}
        assert need <= set(f), (f["name"], need - set(f))
    assert len({f["name"] for f in raw["families"]}) == len(raw["families"])


def test_wildcards_follow_like_semantics() -> None:
    assert wildcard("*.log").match("HttpProxy_2021030306-1.LOG")
    assert wildcard("App_Web_*.dll").match("app_web_0vwccxf6.DLL")
    assert not wildcard("*.log").match("x.log.bak")
    assert wildcard("u_ex??????.log").match("u_ex210303.log")
    assert not wildcard("*.zip").match("a.zip\nb")


def test_package_paths_are_relative_to_the_system_drive() -> None:
    assert package_path("C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Logging\\x.LOG") == (
        "Program Files/Microsoft/Exchange Server/V15/Logging/x.LOG"
    )
    assert (
        package_path("c:\\inetpub\\logs\\LogFiles\\W3SVC1\\u_ex210303.log")
        == "inetpub/logs/LogFiles/W3SVC1/u_ex210303.log"
    )
    assert (
        package_path("D:\\Exchange\\Logging\\HttpProxy\\Owa\\a.LOG")
        == "_drive_D/Exchange/Logging/HttpProxy/Owa/a.LOG"
    )
    assert package_path("D:\\Logs\\W3SVC1\\u.log", system_drive="D:") == "Logs/W3SVC1/u.log"
