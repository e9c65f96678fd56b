"""Triage packages parse back as the real formats, and every truth item points at what it claims."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lxml import etree

from exwatch.cli.main import cli
from exwatch.errors import InputError
from exwatch.lab.triage import write_triage
from exwatch.lab.triage_formats import HTTPPROXY_FIELDS, IIS_FIELDS

HTTPPROXY = "Program Files/Microsoft/Exchange Server/V15/Logging/HttpProxy"
ECP = "Program Files/Microsoft/Exchange Server/V15/Logging/ECP/Server"
OABGEN = "Program Files/Microsoft/Exchange Server/V15/Logging/OABGeneratorLog"
NS = {"e": "http://schemas.microsoft.com/win/2004/08/events/event"}
SIZE = 3_000_000
GUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("triage") / "pkg"
    truth = write_triage(out, seed=11, size=SIZE, days=2)
    return out, truth


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _window(truth: dict[str, Any]) -> tuple[datetime, datetime]:
    return _utc(truth["start"]), _utc(truth["end"])


def _blocks(path: Path) -> list[tuple[list[str], list[str]]]:
    """(header lines, data lines) per header block of an Exchange or IIS log."""
    blocks: list[tuple[list[str], list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            if not blocks or blocks[-1][1]:
                blocks.append(([], []))
            blocks[-1][0].append(line)
        else:
            blocks[-1][1].append(line)
    return blocks


def test_truth_file_matches_the_returned_dict(package: tuple[Path, dict[str, Any]]) -> None:
    out, truth = package
    assert json.loads((out / "truth.json").read_text()) == truth
    assert truth["host"] == "EXCH01"
    assert truth["start"] == "2021-03-01T00:00:00Z" and truth["end"] == "2021-03-03T00:00:00Z"
    kinds = {it["kind"] for it in truth["items"]}
    assert kinds == {"attack", "lookalike"}
    for it in truth["items"]:
        assert "\\" not in it["file"] and not it["file"].startswith("/")
        assert ("line" in it) + ("record" in it) + ("offset" in it) == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", it["time"])
        assert re.fullmatch(r"[a-z]+\.[a-z0-9_]+", it["detection"])


def test_httpproxy_headers_fields_and_times(package: tuple[Path, dict[str, Any]]) -> None:
    out, truth = package
    start, end = _window(truth)
    files = sorted((out / HTTPPROXY).rglob("*"))
    files = [f for f in files if f.is_file()]
    protocols = {f.parent.name for f in files}
    assert {"Autodiscover", "Eas", "Ecp", "Ews", "Mapi", "Oab", "Owa", "PowerShell", "RpcHttp"} <= protocols
    assert len(files) == len(protocols) * 48 + 1  # hourly over two days, one hour rolled over
    second = [f for f in files if f.name.endswith("-2.LOG")]
    assert [str(f.relative_to(out)) for f in second] == [truth["notes"]["httpproxy_rollover"]]
    first = second[0].with_name(second[0].name.replace("-2.LOG", "-1.LOG"))
    last_of_first = _blocks(first)[-1][1][-1].split(",", 1)[0]
    (header, data), *more = _blocks(second[0])
    assert not more and header[3] == "#Date: " + data[0].split(",", 1)[0]
    assert data[0].split(",", 1)[0] >= last_of_first
    restarts = 0
    for f in files:
        m = re.fullmatch(r"HttpProxy_(\d{10})-(\d+)\.LOG", f.name)
        assert m, f.name
        hour = datetime.strptime(m.group(1), "%Y%m%d%H").replace(tzinfo=UTC)
        blocks = _blocks(f)
        restarts += len(blocks) - 1
        for header, data in blocks:
            assert [h.split(":")[0] for h in header] == [
                "#Software",
                "#Version",
                "#Log-type",
                "#Date",
                "#Fields",
            ]
            assert header[0] == "#Software: Microsoft Exchange Server"
            assert header[1] == "#Version: 15.01.2176.002"
            assert header[2] == "#Log-type: HttpProxy Logs"
            fields = header[4][len("#Fields: ") :].split(",")
            assert fields[:72] == list(HTTPPROXY_FIELDS[:72])
            previous = ""
            for row in csv.reader(data):
                assert len(row) == len(fields), (f.name, row[:3])
                assert row[0] >= previous, "lines are in time order"
                previous = row[0]
                t = _utc(row[0])
                assert row[0].endswith("Z") and start <= t < end
                assert hour <= t < hour + timedelta(hours=1)
                assert row[fields.index("Protocol")] == f.parent.name
                assert GUID4.fullmatch(row[1]), row[1]
        assert len(blocks[0][0]) == 5 and len(blocks[0][0][4].split(",")) == 74
    assert restarts == 1


def test_the_restart_changes_the_field_list(package: tuple[Path, dict[str, Any]]) -> None:
    out, truth = package
    f = out / truth["notes"]["httpproxy_restart"]
    blocks = _blocks(f)
    assert len(blocks) == 2
    assert len(blocks[0][0][4].split(",")) == 74
    assert len(blocks[1][0][4].split(",")) == 72
    assert blocks[1][0][3] > blocks[0][0][3]  # a later #Date
    assert all(len(r) == 72 for r in csv.reader(blocks[1][1]))


def test_iis_logs(package: tuple[Path, dict[str, Any]]) -> None:
    out, truth = package
    start, end = _window(truth)
    assert truth["notes"]["iis_restart"] == "inetpub/logs/LogFiles/W3SVC1/u_ex210301.log"
    for site, port in (("W3SVC1", "443"), ("W3SVC2", "444")):
        files = sorted((out / "inetpub/logs/LogFiles" / site).iterdir())
        assert [f.name for f in files] == ["u_ex210301.log", "u_ex210302.log"]
        for f in files:
            day = datetime.strptime(f.name[4:10], "%y%m%d").replace(tzinfo=UTC)
            blocks = _blocks(f)
            restarted = f"inetpub/logs/LogFiles/{site}/{f.name}" == truth["notes"]["iis_restart"]
            assert len(blocks) == (2 if restarted else 1)
            for header, _ in blocks:
                assert header[0] == "#Software: Microsoft Internet Information Services 10.0"
                assert header[1] == "#Version: 1.0"
                assert header[2].startswith("#Date: " + f"20{f.name[4:6]}-{f.name[6:8]}-{f.name[8:10]}")
                assert header[3] == "#Fields: " + " ".join(IIS_FIELDS)
            if restarted:
                assert blocks[1][0][2] > blocks[0][0][2]
            data = [line for _, lines in blocks for line in lines]
            assert len(data) > 100
            previous = ""
            for line in data:
                parts = line.split(" ")
                assert len(parts) == 15, line
                t = datetime.strptime(parts[0] + " " + parts[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                assert day <= t < day + timedelta(days=1) and start <= t < end
                assert parts[6] == port
                assert parts[0] + " " + parts[1] >= previous, "lines are in time order"
                previous = parts[0] + " " + parts[1]
                assert parts[11].isdigit() and parts[14].isdigit()


def test_ecp_and_oab_generator_logs(package: tuple[Path, dict[str, Any]]) -> None:
    out, _ = package
    ecp = sorted((out / ECP).iterdir())
    assert [f.name for f in ecp] == ["ECPServer20210301-1.LOG", "ECPServer20210302-1.LOG"]
    for f in ecp:
        (header, data), *_ = _blocks(f)
        assert header[1] == "#Version: 15.0.0.0" and header[2] == "#Log-type: ECP Server Log"
        assert header[4] == "#Fields: TimeStamp,ServerName,EventId,EventData"
        for row in csv.reader(data):
            assert len(row) == 4 and row[1] == "EXCH01" and row[2] == "ECP.Request"
            assert "S:BLD=15.1.2176.2" in row[3]
    oab = sorted((out / OABGEN).iterdir())
    assert len(oab) == 2
    for f in oab:
        for row in csv.reader(_blocks(f)[0][1]):
            assert len(row) == 4


def _line(path: Path, n: int) -> str:
    with open(path, encoding="utf-8", newline="") as fh:
        for i, line in enumerate(fh, 1):
            if i == n:
                return line.rstrip("\r\n")
    raise AssertionError(f"{path} has no line {n}")


def _events(path: Path) -> dict[int, etree._Element]:
    root = etree.parse(str(path)).getroot()
    assert root.tag == "Events"
    out = {}
    for ev in root.findall("e:Event", NS):
        out[int(ev.findtext("e:System/e:EventRecordID", namespaces=NS))] = ev
    return out


def test_every_truth_item_points_at_what_it_claims(package: tuple[Path, dict[str, Any]]) -> None:
    out, truth = package
    events: dict[str, dict[int, etree._Element]] = {}
    for it in truth["items"]:
        path = out / it["file"]
        assert path.is_file(), it
        if "line" in it and path.suffix.upper() in (".LOG",):
            text = _line(path, it["line"])
            assert not text.startswith("#")
            assert it["match"] in text, (it, text[:200])
            if "/HttpProxy/" in it["file"] or "/ECP/" in it["file"] or "/OABGeneratorLog/" in it["file"]:
                assert text.startswith(it["time"]), (it, text[:40])
            else:
                assert text.startswith(it["time"][:10] + " " + it["time"][11:19]), (it, text[:40])
        elif "offset" in it and "match" in it:
            assert it["match"].encode() in path.read_bytes()
        elif "record" in it:
            evs = events.setdefault(it["file"], _events(path))
            ev = evs[it["record"]]
            t = ev.find("e:System/e:TimeCreated", NS).get("SystemTime")
            assert t[:23] == it["time"][:23]
            assert it["match"] in "".join(ev.itertext())
    det = {(it["kind"], it["detection"]) for it in truth["items"]}
    for rule in (
        "proxylogon.ssrf_progressed",
        "proxylogon.ecp_reset_vdir",
        "proxylogon.ecp_set_vdir_script",
        "proxylogon.iis_backend_reset",
        "proxylogon.oabvdir_cmdlet",
        "proxylogon.oab_config_dump",
        "webshell.chopper",
        "postexploit.lsass_procdump_cmd",
        "postexploit.lsass_dump",
        "postexploit.programdata_archive",
        "proxyshell.autodiscover_success",
        "proxyshell.rps_cat",
        "proxyshell.mailbox_export",
        "proxyshell.pst_shell",
        "proxynotshell.autodiscover_powershell",
        "proxynotshell.owassrf",
    ):
        assert ("attack", rule) in det, rule
    for rule in (
        "proxylogon.ssrf_probe",
        "proxylogon.oab_file_write",
        "proxylogon.oabvdir_cmdlet",
        "postexploit.programdata_archive",
    ):
        assert ("lookalike", rule) in det, rule


def test_the_proxylogon_chain_is_in_order_within_seconds(package: tuple[Path, dict[str, Any]]) -> None:
    out, truth = package
    chain = [
        it
        for it in truth["items"]
        if it["file"].startswith(HTTPPROXY + "/Ecp/") and "ServerInfo~a]@" in it.get("match", "")
    ]
    paths = [it["match"].split(":444", 1)[1].split("?")[0] for it in chain]
    assert paths[:4] == [
        "/autodiscover/autodiscover.xml",
        "/mapi/emsmdb/",
        "/ecp/proxyLogon.ecp",
        "/ecp/DDI/DDIService.svc/GetObject",
    ]
    reset = [it for it in chain if it["detection"] == "proxylogon.ecp_reset_vdir"]
    assert len(reset) == 1
    row = next(csv.reader([_line(out / reset[0]["file"], reset[0]["line"])]))
    header = _blocks(out / reset[0]["file"])[0][0][4][len("#Fields: ") :].split(",")
    values = dict(zip(header, row, strict=True))
    assert values["UrlStem"] == "/ecp/y.js" and values["HttpStatus"] == "200"
    assert values["RoutingHint"] == "X-BEResource-Cookie"
    assert values["AnchorMailbox"].endswith("schema=ResetOABVirtualDirectory#")
    assert values["AuthenticatedUser"] == ""
    full_run = [
        _utc(it["time"]) for it in chain if _utc(it["time"]) >= _utc(reset[0]["time"]) - timedelta(seconds=10)
    ]
    assert max(full_run) - min(full_run) < timedelta(seconds=15)


def test_event_logs_are_windows_xml(package: tuple[Path, dict[str, Any]]) -> None:
    out, truth = package
    start, end = _window(truth)
    files = sorted((out / "EventLogs").iterdir())
    assert {f.name for f in files} == {
        "Application.xml",
        "MSExchange Management.xml",
        "Microsoft-Windows-Sysmon-Operational.xml",
        "Microsoft-Windows-PowerShell-Operational.xml",
        "Microsoft-Windows-Windows Defender-Operational.xml",
        "Security.xml",
    }
    for f in files:
        evs = _events(f)
        assert len(evs) > 2
        ids = sorted(evs)
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        times = [evs[i].find("e:System/e:TimeCreated", NS).get("SystemTime") for i in ids]
        assert times == sorted(times)
        for t in times:
            assert start <= _utc(t[:26] + "Z") < end
    mgmt = _events(out / "EventLogs/MSExchange Management.xml")
    attack = [
        it
        for it in truth["items"]
        if it["detection"] == "proxylogon.oabvdir_cmdlet" and it["kind"] == "attack"
    ]
    ev = mgmt[attack[0]["record"]]
    data = [d.text or "" for d in ev.findall("e:EventData/e:Data", NS)]
    assert ev.find("e:System/e:Provider", NS).get("Name") == "MSExchange CmdletLogs"
    assert ev.findtext("e:System/e:Channel", namespaces=NS) == "MSExchange Management"
    assert data[0] == "Set-OabVirtualDirectory"
    # The Sigma rule win_exchange_proxylogon_oabvirtualdir.yml: all of the cmdlet keywords, one of the params.
    text = " ".join(data)
    assert "OabVirtualDirectory" in text and " -ExternalUrl " in text
    assert "http://f/<script" in text and "function Page_Load()" in text
    export = [
        it
        for it in truth["items"]
        if it["detection"] == "proxyshell.mailbox_export" and it["kind"] == "attack"
    ]
    data = [d.text or "" for d in mgmt[export[0]["record"]].findall("e:EventData/e:Data", NS)]
    assert data[0] == "New-MailboxExportRequest" and " -Mailbox " in data[1] and data[1].count(".aspx") == 1


def test_shells_carry_the_traits_but_are_inert(
    package: tuple[Path, dict[str, Any]], shared_reference: Path
) -> None:
    import yara_x

    out, truth = package
    shells: dict[str, list[Path]] = {}
    for it in truth["items"]:
        if it["kind"] == "attack" and it["file"].endswith(".aspx"):
            shells.setdefault(it["detection"], []).append(out / it["file"])
    (chopper,) = [p for p in shells["webshell.chopper"] if "system_web" in str(p)]
    (oab,) = shells["proxylogon.oab_config_dump"]
    pst, der = sorted(shells["proxyshell.pst_shell"], key=lambda p: p.read_bytes()[:1])
    rules = yara_x.compile((shared_reference / "public-rules/yara/apt_webshell_chinachopper.yar").read_text())
    assert [r.identifier for r in rules.scan(chopper.read_bytes()).matching_rules] == ["ChinaChopper_Generic"]
    assert pst.read_bytes()[:4] == b"!BDN" and b"Page Language=" in pst.read_bytes()
    assert der.read_bytes()[:2] == b"\x30\x82" and b"Page Language=" in der.read_bytes()
    assert len(der.read_bytes()) < 10_000
    low = oab.read_bytes().lower()
    for trait in (
        b"script language",
        b"externalurl",
        b"internalauthenticationmethods",
        b"extendedprotectiontokenchecking",
    ):
        assert trait in low
    assert b'<script language="JScript" runat="server">function Page_Load(){eval(Request' in oab.read_bytes()
    for shell in (chopper, oab, pst, der):
        data = shell.read_bytes()
        # Broken on purpose: an extra closing brace right after the eval call (a syntax error) ...
        assert data.count(b'"unsafe");}}') == 1
        assert data.count(b"{") < data.count(b"}")
    for shell in (chopper, pst, der):
        # ... and two @Page directives, which the ASP.NET parser refuses.
        assert shell.read_bytes().count(b'<%@ Page Language="Jscript"%>') == 2
    (dll_item,) = [it for it in truth["items"] if it["detection"] == "webshell.compiled_dll"]
    dll = (out / dll_item["file"]).read_bytes()
    assert "Temporary ASP.NET Files" in dll_item["file"] and 5_000 < len(dll) < 40_000
    assert dll[:2] == b"MZ" and "~/aspnet_client/".encode("utf-16-le") in dll and b"JScriptEvaluate" in dll
    # No PE header: e_lfanew is 0, so the loader finds "MZ" where "PE\0\0" must be.
    assert int.from_bytes(dll[0x3C:0x40], "little") == 0
    (uploader,) = shells["webshell.upload_shell"]
    data = uploader.read_bytes()
    assert data.startswith(b'<%@ Page Language="C#" %>') and b"HttpPostedFile" in data and len(data) < 1024
    assert data.count(b"<%@ Page") == 2 and data.count(b"{") < data.count(b"}") and b"SaveAs" not in data


def test_clean_package_has_no_planted_traces(tmp_path: Path) -> None:
    truth = write_triage(tmp_path / "clean", seed=3, size=1_000_000, scenarios=["clean"], days=1)
    assert truth["items"] == [] and truth["scenarios"] == ["clean"]
    for f in (tmp_path / "clean").rglob("*"):
        if f.is_file() and f.suffix.upper() in (".LOG", ".XML"):
            text = f.read_text(encoding="utf-8")
            for marker in (
                "ServerInfo~",
                "autodiscover.json?@",
                "%3F@",
                "Page_Load",
                "lsass",
                "/powershell?X-Rps",
            ):
                assert marker not in text, (f, marker)
    assert not list((tmp_path / "clean" / "inetpub/wwwroot/aspnet_client").rglob("*.aspx"))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_deterministic_for_a_seed_whatever_the_workers(tmp_path: Path) -> None:
    import threading

    a = write_triage(tmp_path / "a", seed=5, size=800_000, days=1, workers=1)
    b = write_triage(tmp_path / "b", seed=5, size=800_000, days=1, workers=2)
    # With another thread running, the pool spawns its workers instead of forking them.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        d = write_triage(tmp_path / "d", seed=5, size=800_000, days=1, workers=2)
    finally:
        stop.set()
        other.join()
    c = write_triage(tmp_path / "c", seed=6, size=800_000, days=1, workers=1)
    assert a == b == d
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") == _digest(tmp_path / "d")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert a["items"] != c["items"] or _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_size_is_close_to_the_target(tmp_path: Path) -> None:
    write_triage(tmp_path / "s", seed=1, size=12_000_000, days=2)
    total = sum(p.stat().st_size for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert 0.93 * 12_000_000 <= total <= 1.07 * 12_000_000


def test_attack_time_and_window_options(tmp_path: Path) -> None:
    start = datetime(2022, 9, 28, tzinfo=UTC)
    attack = datetime(2022, 9, 29, 13, 5, 0, tzinfo=UTC)
    truth = write_triage(
        tmp_path / "w",
        seed=2,
        size=600_000,
        days=2,
        start=start,
        attack_time=attack,
        scenarios=["proxylogon"],
        host="mbx-07",
    )
    assert truth["host"] == "MBX-07" and truth["start"] == "2022-09-28T00:00:00Z"
    first = min(_utc(it["time"]) for it in truth["items"] if it["detection"] == "proxylogon.ssrf_attempt")
    assert first == attack
    assert {it["wave"] for it in truth["items"]} == {"proxylogon"}
    assert any("ServerInfo~" in it.get("match", "") for it in truth["items"])


def test_default_attack_time_fits_a_window_that_starts_mid_day(tmp_path: Path) -> None:
    start = datetime(2022, 12, 20, 15, 30, tzinfo=UTC)
    truth = write_triage(tmp_path / "m", seed=9, size=400_000, days=1, start=start, scenarios=["all"])
    assert truth["start"] == "2022-12-20T15:00:00Z" and truth["end"] == "2022-12-21T15:00:00Z"
    times = [_utc(it["time"]) for it in truth["items"] if it["kind"] == "attack"]
    assert min(times) >= _utc(truth["start"]) and max(times) < _utc(truth["end"])
    assert truth["attack_time"] == "2022-12-20T16:49:42Z"


def test_each_wave_at_its_own_time(tmp_path: Path) -> None:
    ps = datetime(2021, 3, 1, 4, 20, 5, tzinfo=UTC)
    pn = datetime(2021, 3, 2, 22, 0, 0, tzinfo=UTC)
    truth = write_triage(
        tmp_path / "t",
        seed=4,
        size=600_000,
        days=2,
        scenarios=["proxyshell", "proxynotshell"],
        scenario_times={"proxyshell": ps, "proxynotshell": pn},
    )
    assert truth["scenario_times"] == {
        "proxyshell": "2021-03-01T04:20:05Z",
        "proxynotshell": "2021-03-02T22:00:00Z",
    }
    assert truth["attack_time"] is None
    for wave, t0 in (("proxyshell", ps), ("proxynotshell", pn)):
        times = [_utc(it["time"]) for it in truth["items"] if it["wave"] == wave]
        assert min(times) == t0 and max(times) < t0 + timedelta(hours=1)
    res = CliRunner().invoke(
        cli,
        ["lab", "triage", "--out", str(tmp_path / "c"), "--size", "600KB", "--days", "1", "--scenario", "proxylogon",
         "--scenario-time", "proxylogon=2021-03-01T12:00:00Z", "--format", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["truth"]["attack_time"] == "2021-03-01T12:00:00Z"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenarios": ["nope"]}, "unknown scenario"),
        ({"scenarios": ["clean", "proxylogon"]}, "cannot be combined"),
        ({"size": 10}, "too small"),
        ({"days": 0}, "days must be"),
        ({"attack_time": datetime(2020, 1, 1, tzinfo=UTC)}, "attack time"),
        ({"host": "bad host!"}, "not a valid server name"),
        ({"scenario_times": {"proxyshell": datetime(2021, 3, 1, 23, 30, tzinfo=UTC)}}, "proxyshell time"),
        ({"scenario_times": {"lookalikes": datetime(2021, 3, 1, 3, tzinfo=UTC)}}, "only proxylogon"),
        (
            {
                "scenarios": ["proxylogon"],
                "scenario_times": {"proxyshell": datetime(2021, 3, 1, 3, tzinfo=UTC)},
            },
            "not among",
        ),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        write_triage(tmp_path / "x", **{"size": 500_000, "days": 1, **kwargs})
    assert not (tmp_path / "x").exists()


def test_an_unwritable_place_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(InputError, match="cannot create"):
        write_triage(tmp_path / "plain-file" / "pkg", size=500_000, days=1)
    res = CliRunner().invoke(
        cli, ["lab", "triage", "--out", str(tmp_path / "plain-file" / "pkg"), "--size", "1MB"]
    )
    assert res.exit_code == 2 and res.output.startswith("exwatch: error: cannot create")


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "keep.txt").write_text("original")
    with pytest.raises(InputError, match="not empty"):
        write_triage(tmp_path / "evidence", size=500_000, days=1)
    assert (tmp_path / "evidence" / "keep.txt").read_text() == "original"
    assert len(list((tmp_path / "evidence").iterdir())) == 1


def test_cli_writes_a_package_and_prints_json(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "lab",
            "triage",
            "--out",
            str(tmp_path / "p"),
            "--size",
            "700KB",
            "--days",
            "1",
            "--seed",
            "4",
            "--scenario",
            "proxyshell",
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["files"] > 100 and doc["bytes"] > 500_000
    assert doc["truth"]["scenarios"] == ["proxyshell"]
    assert doc["truth"] == json.loads((tmp_path / "p" / "truth.json").read_text())
    bad = runner.invoke(cli, ["lab", "triage", "--out", str(tmp_path / "q"), "--size", "lots"])
    assert bad.exit_code == 2 and "is not a size" in bad.output


def _iis_fields(line: str) -> dict[str, str]:
    parts = line.split(" ")
    return dict(zip(IIS_FIELDS, parts, strict=True))


def test_planted_iis_lines_meet_the_public_sigma_rules(package: tuple[Path, dict[str, Any]]) -> None:
    """The field tests of SigmaHQ's two ProxyShell webserver rules (shared/reference/public-rules/sigma)."""
    out, truth = package
    success = attempt = 0
    for it in truth["items"]:
        if not it["file"].startswith("inetpub/logs/LogFiles/W3SVC1/") or not it["detection"].startswith(
            "proxyshell."
        ):
            continue
        f = _iis_fields(_line(out / it["file"], it["line"]))
        query = f["cs-uri-query"].lower()
        targets = any(x.lower() in query for x in ("/powershell", "/mapi/nspi", "/EWS", "X-Rps-CAT"))
        if it["kind"] == "attack" and it["detection"] == "proxyshell.autodiscover_success":
            # web_exchange_proxyshell_successful.yml: selection_auto and selection_uri and selection_success
            assert "/autodiscover.json" in query and targets and f["sc-status"] in ("200", "301")
            success += 1
        if it["kind"] == "attack" and it["detection"] == "proxyshell.autodiscover_attempt":
            # web_exchange_proxyshell.yml: all of selection_1* (401, /autodiscover.json, a target)
            assert f["sc-status"] == "401" and "/autodiscover.json" in query and targets
            attempt += 1
        if it["kind"] == "lookalike":
            # The Nessus checks: no ProxyShell target after the autodiscover.json, and a 302.
            assert not targets and f["sc-status"] == "302"
    assert success >= 3 and attempt == 1


def test_cli_table_summary(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "lab",
            "triage",
            "--out",
            str(tmp_path / "t"),
            "--size",
            "600KB",
            "--days",
            "1",
            "--scenario",
            "proxynotshell",
        ],
    )
    assert res.exit_code == 0, res.output
    truth = json.loads((tmp_path / "t" / "truth.json").read_text())
    n = sum(1 for it in truth["items"] if it["kind"] == "attack")
    assert f"attack    proxynotshell  {n:4} truth items" in res.stdout
    assert "scenarios proxynotshell" in res.stdout and "truth: " in res.stdout


def test_recon_cabinet_is_a_valid_cab(package: tuple[Path, dict[str, Any]]) -> None:
    """Read the cabinet back by its MS-CAB structures: header, folder, file entries, data block."""
    import struct

    out, truth = package
    (it,) = [i for i in truth["items"] if i["detection"] == "postexploit.recon_cab"]
    data = (out / it["file"]).read_bytes()
    sig, _, total, _, coff_files, _, minor, major, folders, nfiles = struct.unpack_from("<4sIIIIIBBHH", data)
    assert (sig, total, minor, major, folders, nfiles) == (b"MSCF", len(data), 3, 1, 1, 4)
    data_start, nblocks, compress = struct.unpack_from("<IHH", data, 36)
    assert compress == 0 and nblocks == 1
    pos, names, sizes = coff_files, [], []
    for _ in range(nfiles):
        size, _, _, _, _, _ = struct.unpack_from("<IIHHHH", data, pos)
        end = data.index(b"\x00", pos + 16)
        names.append(data[pos + 16 : end].decode())
        sizes.append(size)
        pos = end + 1
    assert names == ["ip.txt", "arp.txt", "system", "security"] and pos == data_start <= 200
    _, cb, cb_uncomp = struct.unpack_from("<IHH", data, data_start)
    assert cb == cb_uncomp == sum(sizes) and data_start + 8 + cb == len(data)
    assert data[data_start + 8 :].startswith(b"Windows IP Configuration")
