"""The plan of a triage package: what to plant, and the builders of planted lines and events.

A :class:`Plan` collects *plants*: log lines (placed by time into the right hourly or daily file),
Windows events, and files. Every plant carries its ground-truth items; :mod:`exwatch.lab.triage` fills
in the file and line (or record) when it writes the package. The scenarios that fill a plan are in
:mod:`exwatch.lab.triage_scenarios`; the builders here make one line or one event each, in the shapes
of ``shared/reference/log_formats.md`` and the event records it cites.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from exwatch.lab import triage_traffic as traffic
from exwatch.lab.triage_formats import (
    ECP_SERVER,
    EVENTLOGS,
    HTTPPROXY,
    OABGEN,
    W3SVC1,
    W3SVC2,
    EventSpec,
    ServerInfo,
    ecp_file_name,
    httpproxy_file_name,
    iis_file_name,
    iis_time,
    iso_ms,
    oabgen_file_name,
)

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


@dataclass(frozen=True)
class TruthItem:
    """One ground-truth item of ``truth.json``: what was planted (``kind`` attack or lookalike, ``wave``,
    ``cve``, the ``detection`` a hunt should make, ``time``), optionally the text it is found by
    (``match``), the highest confidence a correct hunt may give it (``expect``, look-alikes) and a
    ``note``; and where it went: ``file`` with its 1-based ``line``, event ``record`` or ``offset``
    (filled in when the package is written)."""

    kind: str
    wave: str
    cve: str | None
    detection: str
    time: str
    match: str | None = None
    expect: str | None = None
    note: str | None = None
    file: str | None = None
    line: int | None = None
    record: int | None = None
    offset: int | None = None

    def located(
        self, file: str, *, line: int | None = None, record: int | None = None, offset: int | None = None
    ) -> TruthItem:
        """This item in ``file`` at ``line``, ``record`` or ``offset``."""
        return replace(self, file=file, line=line, record=record, offset=offset)

    def to_dict(self) -> dict[str, object]:
        """The JSON form in ``truth.json`` (keys in this order; absent ones left out, ``cve`` kept)."""
        out: dict[str, object] = {
            "kind": self.kind,
            "wave": self.wave,
            "cve": self.cve,
            "detection": self.detection,
            "time": self.time,
        }
        optional = (
            ("match", self.match),
            ("expect", self.expect),
            ("note", self.note),
            ("file", self.file),
            ("line", self.line),
            ("record", self.record),
            ("offset", self.offset),
        )
        out.update((k, v) for k, v in optional if v is not None)
        return out

    def sort_key(self) -> tuple[str, str, int, int, str]:
        """The order of ``truth.json``: time, file, line, record, detection."""
        return (self.time, self.file or "", self.line or 0, self.record or 0, self.detection)


@dataclass
class LinePlant:
    """A log line to insert, by time, into ``file``."""

    file: str
    time: datetime
    text: str
    items: list[TruthItem]


@dataclass
class EventPlant:
    file: str
    spec: EventSpec
    items: list[TruthItem]


@dataclass
class FilePlant:
    """A file to write; items with a ``match`` get the 1-based line of its first occurrence."""

    path: str
    content: bytes
    time: datetime
    items: list[TruthItem]


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
) -> TruthItem:
    """One ground-truth item (file and line/record are added when the package is written)."""
    return TruthItem(kind, wave, cve, detection, iso_ms(t), match=match, expect=expect, note=note)


def _context_items(text: str, wave: str, kind: str, t: datetime) -> list[TruthItem]:
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


def add_line(
    plan: Plan, file: str, t: datetime, text: str, items: Iterable[TruthItem], wave: str, kind: str
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
                    EVT_SECURITY, security_4688(plan, p.spec), [replace(it, match=cmd[:40]) for it in p.items]
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
