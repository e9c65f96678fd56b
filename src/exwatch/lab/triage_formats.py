"""Pure formatting of the log families a triage package holds: headers, field lists, single lines.

Every fact here is from ``shared/reference/log_formats.md`` (section numbers in the comments); where that
file has no sample (the OAB generator log) the choice made here is marked as ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from exwatch.logformats import ECP_FIELDS as ECP_FIELDS  # re-exported for the lab's writers
from exwatch.logformats import HTTPPROXY_FIELDS, IIS_FIELDS

# Relative locations inside a package (forward slashes; the collected tree mirrors C:\).
EXCHANGE = "Program Files/Microsoft/Exchange Server/V15"
LOGGING = f"{EXCHANGE}/Logging"
HTTPPROXY = f"{LOGGING}/HttpProxy"
ECP_SERVER = f"{LOGGING}/ECP/Server"
OABGEN = f"{LOGGING}/OABGeneratorLog"
W3SVC1 = "inetpub/logs/LogFiles/W3SVC1"
W3SVC2 = "inetpub/logs/LogFiles/W3SVC2"
EVENTLOGS = "EventLogs"
OWA_AUTH = f"{EXCHANGE}/FrontEnd/HttpProxy/owa/auth"
ECP_AUTH = f"{EXCHANGE}/FrontEnd/HttpProxy/ecp/auth"
OAB_FE = f"{EXCHANGE}/FrontEnd/HttpProxy/OAB"
ASPNET_CLIENT = "inetpub/wwwroot/aspnet_client"
WIN_INSTALL = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"

# log_formats.md 2.1: the protocol folders Test-ProxyLogon and the Sentinel connector enumerate.
HTTPPROXY_PROTOCOLS = (
    "Autodiscover",
    "Eas",
    "Ecp",
    "Ews",
    "Mapi",
    "Oab",
    "Owa",
    "OwaCalendar",
    "PowerShell",
    "RpcHttp",
)


# The field list written after the one restart we plant: the last two fields missing, as a reader
# that maps columns by position would get wrong (log_formats.md 2.3: "re-read the mapping if a
# #Fields: line appears again inside a file"). The shape of the change is ours, not from a sample.
HTTPPROXY_FIELDS_AFTER_RESTART: tuple[str, ...] = HTTPPROXY_FIELDS[:-2]

# Our choice (log_formats.md 5 has no sample): Exchange-style header, four comma-separated fields.
OABGEN_FIELDS: tuple[str, ...] = ("DateTime", "ThreadId", "Level", "Message")


@dataclass(frozen=True)
class ServerInfo:
    """The server a package comes from: name, domain, build and addresses."""

    host: str = "EXCH01"
    domain: str = "contoso.com"
    netbios: str = "CONTOSO"
    build: tuple[int, int, int, int] = (15, 1, 2176, 2)  # Exchange 2016 CU19, before the March 2021 SU
    address: str = "10.0.0.10"
    url_host: str = "mail.contoso.com"

    @property
    def fqdn(self) -> str:
        return f"{self.host}.{self.domain}"

    @property
    def version_long(self) -> str:
        """Zero-padded long form used by ``#Version:`` (log_formats.md 2.2), e.g. 15.01.2176.002."""
        a, b, c, d = self.build
        return f"{a}.{b:02d}.{c:04d}.{d:03d}"

    @property
    def version_short(self) -> str:
        a, b, c, d = self.build
        return f"{a}.{b}.{c}.{d}"


def iso_ms(t: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (log_formats.md 2.4)."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def iis_time(t: datetime) -> str:
    """IIS ``date time`` pair (UTC, second resolution)."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def exchange_header(version: str, log_type: str, date: datetime, fields: Sequence[str]) -> str:
    """The five header lines of an Exchange CSV log (log_formats.md 2.2); Windows line ends (CRLF)."""
    return (
        "#Software: Microsoft Exchange Server\r\n"
        f"#Version: {version}\r\n"
        f"#Log-type: {log_type}\r\n"
        f"#Date: {iso_ms(date)}\r\n"
        f"#Fields: {','.join(fields)}\r\n"
    )


def iis_header(date: datetime) -> str:
    """The four IIS W3C directives (log_formats.md 6)."""
    return (
        "#Software: Microsoft Internet Information Services 10.0\r\n"
        "#Version: 1.0\r\n"
        f"#Date: {iis_time(date)}\r\n"
        f"#Fields: {' '.join(IIS_FIELDS)}\r\n"
    )


def httpproxy_file_name(hour: datetime, seq: int = 1) -> str:
    return f"HttpProxy_{hour:%Y%m%d%H}-{seq}.LOG"


def ecp_file_name(day: datetime, seq: int = 1) -> str:
    return f"ECPServer{day:%Y%m%d}-{seq}.LOG"


def oabgen_file_name(day: datetime, seq: int = 1) -> str:
    return f"OABGeneratorLog_{day:%Y%m%d}-{seq}.LOG"


def iis_file_name(day: datetime) -> str:
    return f"u_ex{day:%y%m%d}.log"


def csv_value(value: str) -> str:
    """One CSV value: quoted with doubled inner quotes when it holds a comma, a quote or a line end."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def httpproxy_clean(value: str) -> str:
    """HttpProxy writes commas inside values as spaces (log_formats.md 2.4, the ``(KHTML  like Gecko)`` fact)."""
    return value.replace(",", " ")


def iis_value(value: str) -> str:
    """IIS writes an empty value as ``-`` and spaces as ``+`` (log_formats.md 6)."""
    if value == "":
        return "-"
    return value.replace(" ", "+")


def httpproxy_line(values: Mapping[str, str], fields: Sequence[str] = HTTPPROXY_FIELDS) -> str:
    """One HttpProxy data line from a name -> value map (missing names are empty)."""
    return ",".join(httpproxy_clean(values.get(name, "")) for name in fields)


def iis_line(values: Mapping[str, str]) -> str:
    """One IIS W3C data line from a name -> value map."""
    return " ".join(iis_value(values.get(name, "")) for name in IIS_FIELDS)


def ecp_item(key: str, value: str) -> str:
    """One typed ``S:KEY=value`` item of ECP EventData (log_formats.md 3).

    An item holding special characters is wrapped in single quotes with inner single quotes doubled;
    the published excerpt this follows had columns trimmed, so readers should parse defensively.
    """
    item = f"S:{key}={value}"
    if any(c in item for c in "';\"<>"):
        return "'" + item.replace("'", "''") + "'"
    return item


def ecp_event_data(items: Iterable[tuple[str, str]]) -> str:
    return ";".join(ecp_item(k, v) for k, v in items) + ";"


def ecp_line(t: datetime, server: str, event_id: str, event_data: str) -> str:
    return ",".join((iso_ms(t), server, event_id, csv_value(event_data)))


def ecp_cmd(cmdlet: str, params: Sequence[tuple[str, str]]) -> str:
    """``S:CMD`` text: ``Cmdlet.Param=Value.Param2=Value`` (log_formats.md 3)."""
    return cmdlet + "".join(f".{k}={v}" for k, v in params)


def ps_quote(value: str) -> str:
    """A string parameter value in ECP's ``S:CMD`` form: single quotes, inner single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


# --- Windows event XML -----------------------------------------------------------------------------

EVENT_NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def events_document_head() -> str:
    """Start of an Event Viewer "Save All Events As... XML" export: one ``<Events>`` root."""
    return '<?xml version="1.0" encoding="utf-8" standalone="yes"?>\r\n<Events>\r\n'


def events_document_tail() -> str:
    return "</Events>\r\n"


@dataclass(frozen=True)
class EventSpec:
    """One Windows event: the System block's values and the EventData items."""

    provider: str
    event_id: int
    channel: str
    time: datetime
    level: int = 4
    task: int = 0
    keywords: str = "0x80000000000000"
    qualifiers: int | None = None
    provider_guid: str | None = None
    version: int | None = None
    opcode: int | None = None
    process_id: int | None = None
    thread_id: int | None = None
    user_sid: str | None = None
    # Unnamed <Data> items (classic providers) or named ones (manifest providers such as Sysmon).
    data: tuple[str, ...] = ()
    named_data: tuple[tuple[str, str], ...] = ()


def _system_time(t: datetime) -> str:
    t = t.astimezone(UTC)
    # Windows writes 100-ns ticks: seven fractional digits.
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def event_xml(spec: EventSpec, record_id: int, computer: str) -> str:
    """One ``<Event>`` element on one line, shaped like Windows' own XML rendering of a record."""
    p = f"<Provider Name='{escape(spec.provider, {chr(39): '&apos;'})}'"
    if spec.provider_guid:
        p += f" Guid='{spec.provider_guid}'"
    p += "/>"
    eid = (
        f"<EventID Qualifiers='{spec.qualifiers}'>{spec.event_id}</EventID>"
        if spec.qualifiers is not None
        else f"<EventID>{spec.event_id}</EventID>"
    )
    parts = ["<Event xmlns='", EVENT_NS, "'><System>", p, eid]
    if spec.version is not None:
        parts.append(f"<Version>{spec.version}</Version>")
    parts.append(f"<Level>{spec.level}</Level><Task>{spec.task}</Task>")
    if spec.opcode is not None:
        parts.append(f"<Opcode>{spec.opcode}</Opcode>")
    parts.append(f"<Keywords>{spec.keywords}</Keywords>")
    parts.append(f"<TimeCreated SystemTime='{_system_time(spec.time)}'/>")
    parts.append(f"<EventRecordID>{record_id}</EventRecordID>")
    if spec.process_id is not None:
        parts.append(
            f"<Correlation/><Execution ProcessID='{spec.process_id}' ThreadID='{spec.thread_id or 0}'/>"
        )
    parts.append(f"<Channel>{escape(spec.channel)}</Channel><Computer>{escape(computer)}</Computer>")
    parts.append(f"<Security UserID='{spec.user_sid}'/>" if spec.user_sid else "<Security/>")
    parts.append("</System><EventData>")
    for value in spec.data:
        parts.append(f"<Data>{escape(value)}</Data>" if value else "<Data></Data>")
    for name, value in spec.named_data:
        parts.append(f"<Data Name='{name}'>{escape(value)}</Data>")
    parts.append("</EventData></Event>")
    return "".join(parts)
