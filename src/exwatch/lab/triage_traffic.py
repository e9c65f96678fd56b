"""Benign traffic for triage packages: line templates built once, then filled in bulk.

Each log family (an HttpProxy protocol folder, the front-end or back-end IIS site) has a few request
kinds with weights (OWA logons, EWS, ActiveSync, Autodiscover, MAPI, health probes...). Each kind is
expanded once into a few hundred *variants*: complete lines with a user, client, latencies and status
already written in, leaving only the time and the request id as ``%(t)s``/``%(d)s`` and ``%(r)s``. A
file is then ``variant % {"t": ..., "r": ...}`` per line, which keeps generation near disk speed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np

from exwatch.lab.triage_formats import (
    HTTPPROXY_FIELDS,
    IIS_FIELDS,
    ServerInfo,
    csv_value,
    ecp_event_data,
    ecp_line,
    httpproxy_clean,
    iis_value,
    iso_ms,
    ps_quote,
)

VARIANTS = 192
T_SLOT = "\x00T"  # placeholders that survive %-escaping of the constant parts
R_SLOT = "\x00R"

FIRST = [
    "alice",
    "anna",
    "ben",
    "carla",
    "david",
    "emma",
    "felix",
    "greta",
    "hannah",
    "ivan",
    "julia",
    "karl",
    "lena",
    "marco",
    "nina",
    "oscar",
    "paula",
    "quentin",
    "rosa",
    "stefan",
    "tina",
    "ulrich",
    "vera",
    "walter",
    "xenia",
    "yusuf",
    "zoe",
]
LAST = [
    "berg",
    "meyer",
    "novak",
    "larsen",
    "rossi",
    "dubois",
    "schmidt",
    "olsen",
    "weber",
    "fischer",
    "wagner",
    "becker",
    "hoffmann",
    "koch",
    "richter",
    "klein",
    "wolf",
    "neumann",
    "schwarz",
    "braun",
]

OUTLOOK_UA = (
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.13801; Pro)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.13628; Pro)",
    "Microsoft Office/15.0 (Windows NT 6.1; Microsoft Outlook 15.0.5319; Pro)",
)
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/88.0.4324.190 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:86.0) Gecko/20100101 Firefox/86.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/88.0.4324.190 Safari/537.36 Edg/88.0.705.81",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.0.3 Safari/605.1.15",
)
EAS_UA = (
    "Apple-iPhone12C1/1802.92",
    "Apple-iPhone11C8/1804.51",
    "Android-SAMSUNG-SM-G991B/101.10.200",
    "Outlook-iOS-Android/1.0",
)
PROBE_UA = "AMProbe/Local/ClientAccess"
WINRM_UA = "Microsoft WinRM Client"


@dataclass(frozen=True)
class User:
    sam: str
    upn: str
    sid: str
    ip: str
    mailbox_guid: str
    device: str


# Version-4 GUIDs, as Exchange's request ids are: the 13th digit is 4, the 17th one of 8, 9, a, b.
_VARIANT = {d: "89ab"[int(d, 16) % 4] for d in "0123456789abcdef"}


def guid(rnd: random.Random) -> str:
    """A version-4 GUID drawn from ``rnd`` (deterministic, unlike ``uuid4``)."""
    return guid_from_hex(f"{rnd.getrandbits(128):032x}")


def guid_from_hex(h: str) -> str:
    """A version-4 GUID from 32 random hex digits."""
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


@lru_cache(maxsize=8)
def users(seed: int, domain: str = "contoso.com") -> tuple[User, ...]:
    """The mailbox users of the package's organisation: deterministic for a seed."""
    rnd = random.Random(f"users-{seed}")
    out = []
    domain_sid = "S-1-5-21-{}-{}-{}".format(*(rnd.randrange(10**9, 4 * 10**9) for _ in range(3)))
    for i, (f, last) in enumerate((f, last) for last in LAST for f in FIRST):
        if i >= 300:
            break
        sam = f"{f}.{last}"
        out.append(
            User(
                sam=sam,
                upn=f"{sam}@{domain}",
                sid=f"{domain_sid}-{1105 + i}",
                ip=f"10.20.{rnd.randrange(0, 8)}.{rnd.randrange(2, 254)}",
                mailbox_guid=guid(rnd),
                device=f"{rnd.getrandbits(64):016X}"[:16],
            )
        )
    return tuple(out)


def health_mailbox(server: ServerInfo, rnd: random.Random) -> str:
    """A Managed Availability health mailbox (``HealthMailbox`` + 32 hex digits)."""
    return f"HealthMailbox{rnd.getrandbits(128):032x}@{server.domain}"


# --- HttpProxy ---------------------------------------------------------------------------------------


def latencies(rnd: random.Random, total: int) -> dict[str, str]:
    be = max(1, int(total * rnd.uniform(0.5, 0.9)))
    return {
        "ServerLocatorLatency": str(rnd.randint(0, 2)),
        "TargetOutstandingRequests": str(rnd.randint(0, 3)),
        "HttpPipelineLatency": str(rnd.randint(0, 3)),
        "CalculateTargetBackEndLatency": str(rnd.randint(0, 2)),
        "TotalAccountForestLatency": "0",
        "TotalGlsLatency": "0",
        "TotalResourceForestLatency": "0",
        "ADLatency": str(rnd.choice(("", "", "1", "2"))),
        "ActivityContextLifeTime": str(total + rnd.randint(0, 3)),
        "ModuleToHandlerSwitchingLatency": "0",
        "ClientReqStreamLatency": "0",
        "BackendReqInitLatency": str(rnd.randint(0, 2)),
        "BackendReqStreamLatency": "0",
        "BackendProcessingLatency": str(be),
        "BackendRespInitLatency": str(be + rnd.randint(0, 2)),
        "BackendRespStreamLatency": "0",
        "ClientRespStreamLatency": "0",
        "KerberosAuthHeaderLatency": "0",
        "HandlerCompletionLatency": "0",
        "RequestHandlerLatency": str(rnd.randint(0, 2)),
        "HandlerToModuleSwitchingLatency": "0",
        "ProxyTime": str(be + rnd.randint(0, 4)),
        "CoreLatency": str(rnd.randint(1, 6)),
        "RoutingLatency": str(rnd.randint(0, 2)),
        "HttpProxyOverhead": str(rnd.randint(1, 8)),
        "TotalRequestTime": str(total),
        "RouteRefresherLatency": "",
    }


def generic_info(anonymous: bool = False) -> str:
    """GenericInfo entries (log_formats.md 2.4), with the time placeholder for Begin/EndRequest."""
    extra = "Krb=UA;CT=An;" if anonymous else ""
    return (
        f"BeginRequest={T_SLOT};CorrelationID=<empty>;ProxyState-Run=None;FEAuth=BEVersion-1941997017;"
        f"{extra}ProxyToDownLevel=False;BeginGetResponse={T_SLOT};OnResponseReady={T_SLOT};EndGetResponse={T_SLOT};"
        f"EndRequest={T_SLOT};"
    )


# The PowerShell-proxy entries of a remote PowerShell POST (detections.md PN-2, signature-base Dec22_1).
RPS_POST_INFO = (
    "OnEndRequest.End.ContentType=application/soap+xml charset UTF-8;S:ServiceCommonMetadata.HttpMethod=POST;"
)


def proxy_values(server: ServerInfo, protocol: str, **overrides: str) -> dict[str, str]:
    """A full HttpProxy row for this server with the usual defaults, then ``overrides``."""
    a, b, c, d = server.build
    row = {
        "DateTime": T_SLOT,
        "RequestId": R_SLOT,
        "MajorVersion": str(a),
        "MinorVersion": str(b),
        "BuildVersion": str(c),
        "RevisionVersion": str(d),
        "Protocol": protocol,
        "UrlHost": server.url_host,
        "ServerHostName": server.host,
        "ProxyAction": "Proxy",
        "TargetServer": server.fqdn,
        "TargetServerVersion": server.version_long,
        "RoutingType": "IntraForest",
        "ServerLocatorHost": server.fqdn,
        "GenericInfo": generic_info(),
    }
    row.update(overrides)
    return row


def to_variant(line: str) -> str:
    """Escape ``%`` in a finished line and turn the placeholders into ``%(t)s``/``%(r)s``."""
    return line.replace("%", "%%").replace(T_SLOT, "%(t)s").replace(R_SLOT, "%(r)s")


def proxy_line(values: dict[str, str]) -> str:
    return ",".join(httpproxy_clean(values.get(name, "")) for name in HTTPPROXY_FIELDS)


ProxyKind = Callable[[random.Random, ServerInfo, tuple[User, ...]], dict[str, str]]


def _auth(u: User, server: ServerInfo, kind: str = "NTLM") -> dict[str, str]:
    return {
        "AuthenticationType": kind,
        "IsAuthenticated": "true",
        "AuthenticatedUser": f"{server.netbios}\\{u.sam}",
        "ClientIpAddress": u.ip,
    }


def _k_owa_service(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    action = rnd.choice(
        ("GetItem", "FindItem", "FindConversation", "GetFolder", "GetUserAvailability", "CreateItem")
    )
    total = rnd.randint(8, 400)
    v = proxy_values(
        s,
        "Owa",
        UrlStem="/owa/service.svc",
        ProtocolAction=action,
        Method="POST",
        HttpStatus="200",
        BackEndStatus="200",
        UserAgent=rnd.choice(BROWSER_UA),
        AnchorMailbox=f"Sid~{u.sid}",
        RoutingHint="OwaCookie" if rnd.random() < 0.5 else "WindowsIdentity",
        BackEndCookie=f"Database~{u.mailbox_guid}~~2021-03-01T00:00:00~{s.domain}~1",
        RequestBytes=str(rnd.randint(300, 4000)),
        ResponseBytes=str(rnd.randint(400, 60000)),
        UrlQuery=f"?action={action}&EP=1&ID=-{rnd.randint(10, 99)}&AC=1",
        DatabaseGuid=u.mailbox_guid,
        **_auth(u, s, "Forms"),
    )
    v.update(latencies(rnd, total))
    return v


def _k_owa_logon_page(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    stem, method, status = rnd.choice(
        (("/owa/auth/logon.aspx", "GET", "200"), ("/owa/auth.owa", "POST", "302"), ("/owa/", "GET", "302"))
    )
    v = proxy_values(
        s,
        "Owa",
        UrlStem=stem,
        Method=method,
        HttpStatus=status,
        BackEndStatus=status if stem != "/owa/auth.owa" else "",
        AuthenticationType="FBA",
        IsAuthenticated="false",
        UserAgent=rnd.choice(BROWSER_UA),
        ClientIpAddress=u.ip if rnd.random() < 0.7 else f"198.51.100.{rnd.randint(2, 254)}",
        RoutingType="Unknown" if stem == "/owa/auth.owa" else "IntraForest",
        ProxyAction="" if stem == "/owa/auth.owa" else "Proxy",
        TargetServer="" if stem == "/owa/auth.owa" else s.fqdn,
        RequestBytes=str(rnd.randint(0, 900)),
        ResponseBytes=str(rnd.randint(300, 30000)),
        UrlQuery="?url=https%3a%2f%2fmail.contoso.com%2fowa%2f&reason=0"
        if stem == "/owa/auth/logon.aspx"
        else "",
        GenericInfo=generic_info(anonymous=True),
    )
    v.update(latencies(rnd, rnd.randint(2, 60)))
    return v


def _k_probe(protocol: str, stem: str, method: str = "GET") -> ProxyKind:
    def make(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
        hm = health_mailbox(s, rnd)
        v = proxy_values(
            s,
            protocol,
            UrlStem=stem,
            Method=method,
            HttpStatus="200",
            BackEndStatus="200",
            AuthenticationType="" if stem.endswith(".htm") else "Basic",
            IsAuthenticated="false" if stem.endswith(".htm") else "true",
            AuthenticatedUser="" if stem.endswith(".htm") else hm,
            AnchorMailbox="" if stem.endswith(".htm") else f"SMTP:{hm}",
            UserAgent=PROBE_UA,
            ClientIpAddress=s.address,
            RoutingHint="" if stem.endswith(".htm") else "Smtp",
            RequestBytes="0" if method == "GET" else str(rnd.randint(400, 2000)),
            ResponseBytes=str(rnd.randint(100, 3000)),
        )
        v.update(latencies(rnd, rnd.randint(2, 40)))
        return v

    return make


def _k_ews(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    action = rnd.choice(
        ("GetItem", "FindItem", "SyncFolderItems", "GetUserAvailability", "Subscribe", "GetStreamingEvents")
    )
    ua = rnd.choice(
        OUTLOOK_UA
        + ("ExchangeServicesClient/15.00.0913.015", "MacOutlook/16.46.21021202 (Intelx64 Mac OS X 11.2.1)")
    )
    v = proxy_values(
        s,
        "Ews",
        UrlStem="/EWS/Exchange.asmx",
        ProtocolAction=action,
        Method="POST",
        HttpStatus="200",
        BackEndStatus="200",
        UserAgent=ua,
        AnchorMailbox=f"SMTP:{u.upn}",
        RoutingHint="WindowsIdentity",
        BackEndCookie=f"Database~{u.mailbox_guid}~~2021-03-01T00:00:00~{s.domain}~1",
        RequestBytes=str(rnd.randint(500, 5000)),
        ResponseBytes=str(rnd.randint(500, 90000)),
        DatabaseGuid=u.mailbox_guid,
        **_auth(u, s, "NTLM"),
    )
    v.update(latencies(rnd, rnd.randint(5, 900)))
    return v


def _k_mapi(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    stem = "/mapi/emsmdb/" if rnd.random() < 0.8 else "/mapi/nspi/"
    action = (
        rnd.choice(("Execute", "Execute", "Execute", "NotificationWait", "Connect"))
        if "emsmdb" in stem
        else "Bind"
    )
    v = proxy_values(
        s,
        "Mapi",
        UrlStem=stem,
        ProtocolAction=action,
        Method="POST",
        HttpStatus="200",
        BackEndStatus="200",
        UserAgent=rnd.choice(OUTLOOK_UA),
        AnchorMailbox=f"MailboxGuidWithDomain~{u.mailbox_guid}@{s.domain}",
        RoutingHint="",
        BackEndCookie=f"Database~{u.mailbox_guid}~~2021-03-01T00:00:00~{s.domain}~1",
        RequestBytes=str(rnd.randint(200, 20000)),
        ResponseBytes=str(rnd.randint(100, 120000)),
        UrlQuery=f"?mailboxId={u.mailbox_guid}@{s.domain}",
        DatabaseGuid=u.mailbox_guid,
        **_auth(u, s, "Negotiate" if rnd.random() < 0.5 else "NTLM"),
    )
    v.update(latencies(rnd, rnd.randint(2, 1200)))
    return v


def _k_eas(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    if rnd.random() < 0.12:
        # log_formats.md 2.6 fact 4: OPTIONS with Basic answered 403.
        v = proxy_values(
            s,
            "Eas",
            UrlStem="/Microsoft-Server-ActiveSync/default.eas",
            Method="OPTIONS",
            HttpStatus="403",
            BackEndStatus="403",
            AuthenticationType="Basic",
            IsAuthenticated="false",
            UserAgent=rnd.choice(EAS_UA),
            ClientIpAddress=f"203.0.113.{rnd.randint(2, 254)}",
            RequestBytes="0",
            ResponseBytes="0",
        )
    else:
        cmd = rnd.choice(("Sync", "Sync", "Ping", "Ping", "Ping", "FolderSync", "SendMail", "ItemOperations"))
        v = proxy_values(
            s,
            "Eas",
            UrlStem="/Microsoft-Server-ActiveSync/default.eas",
            ProtocolAction=cmd,
            Method="POST",
            HttpStatus="200",
            BackEndStatus="200",
            UserAgent=rnd.choice(EAS_UA),
            AnchorMailbox=f"Sid~{u.sid}",
            RoutingHint="WindowsIdentity",
            RequestBytes=str(rnd.randint(30, 3000)),
            ResponseBytes=str(rnd.randint(0, 40000)),
            UrlQuery=f"?Cmd={cmd}&User={u.sam}&DeviceId={u.device}&DeviceType=iPhone",
            **_auth(u, s, "Basic"),
        )
        v["ClientIpAddress"] = f"203.0.113.{rnd.randint(2, 254)}"
    v.update(latencies(rnd, rnd.randint(5, 900_000 if v.get("ProtocolAction") == "Ping" else 800)))
    return v


def _k_autodiscover(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    # log_formats.md 2.6 fact 4: POST autodiscover.xml with NTLM, Sid~ anchor, WindowsIdentity hint.
    v = proxy_values(
        s,
        "Autodiscover",
        UrlStem="/autodiscover/autodiscover.xml",
        Method="POST",
        HttpStatus="200",
        BackEndStatus="200",
        UserAgent=rnd.choice(OUTLOOK_UA),
        AnchorMailbox=f"Sid~{u.sid}",
        RoutingHint="WindowsIdentity",
        RequestBytes=str(rnd.randint(300, 700)),
        ResponseBytes=str(rnd.randint(3000, 9000)),
        **_auth(u, s, "NTLM"),
    )
    v.update(latencies(rnd, rnd.randint(10, 200)))
    return v


def _k_autodiscover_json(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    proto = rnd.choice(("ActiveSync", "Ews", "Rest"))
    v = proxy_values(
        s,
        "Autodiscover",
        UrlStem="/autodiscover/autodiscover.json",
        Method="GET",
        HttpStatus="200",
        BackEndStatus="200",
        AuthenticationType="",
        IsAuthenticated="false",
        UserAgent="Outlook-iOS/723.4027091.prod.iphone (4.2109.0)",
        ClientIpAddress=f"203.0.113.{rnd.randint(2, 254)}",
        AnchorMailbox=f"SMTP:{u.upn}",
        RoutingHint="Smtp",
        UrlQuery=f"?Email={u.sam}%40{s.domain}&Protocol={proto}&RedirectCount=1",
        RequestBytes="0",
        ResponseBytes=str(rnd.randint(100, 300)),
        GenericInfo=generic_info(anonymous=True),
    )
    v.update(latencies(rnd, rnd.randint(3, 60)))
    return v


def _k_oab(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    oab = "5f7a2c1e-8b3d-4f60-9a2e-1c4d7e9b0a31"
    f = rnd.choice(
        ("oab.xml", "oab.xml", f"{oab}-data-{rnd.randint(100, 200)}.lzx", f"{oab}-lng{rnd.randint(1, 9)}.lzx")
    )
    v = proxy_values(
        s,
        "Oab",
        UrlStem=f"/OAB/{oab}/{f}",
        Method="GET",
        HttpStatus="200" if rnd.random() < 0.8 else "304",
        BackEndStatus="200",
        UserAgent=rnd.choice(OUTLOOK_UA),
        AnchorMailbox=f"Sid~{u.sid}",
        RoutingHint="WindowsIdentity",
        RequestBytes="0",
        ResponseBytes=str(rnd.randint(400, 900000)),
        **_auth(u, s, "NTLM"),
    )
    v.update(latencies(rnd, rnd.randint(2, 300)))
    return v


def _k_powershell_admin(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    v = proxy_values(
        s,
        "PowerShell",
        UrlStem="/powershell",
        Method="POST",
        HttpStatus="200",
        BackEndStatus="200",
        AuthenticationType="Kerberos",
        IsAuthenticated="true",
        AuthenticatedUser=f"{s.netbios}\\exadmin",
        UserAgent=WINRM_UA,
        ClientIpAddress="10.20.9.15",
        AnchorMailbox="",
        RoutingHint="WindowsIdentity-NoDatabase",
        UrlQuery=f"?serializationLevel=Full;ExchClientVer={s.version_short};clientApplication=ManagementShell;TargetServer=;PSVersion=5.1.14393.3866",
        GenericInfo=generic_info() + RPS_POST_INFO,
        RequestBytes=str(rnd.randint(1000, 9000)),
        ResponseBytes=str(rnd.randint(500, 40000)),
    )
    v.update(latencies(rnd, rnd.randint(20, 3000)))
    return v


def _k_rpchttp(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    v = proxy_values(
        s,
        "RpcHttp",
        UrlStem="/rpc/rpcproxy.dll",
        Method=rnd.choice(("RPC_IN_DATA", "RPC_OUT_DATA")),
        HttpStatus="200",
        BackEndStatus="200",
        UserAgent="MSRPC",
        AnchorMailbox=f"MailboxGuidWithDomain~{u.mailbox_guid}@{s.domain}",
        UrlQuery=f"?{u.mailbox_guid}@{s.domain}:6001",
        RequestBytes=str(rnd.randint(100, 1073741824 // 1024)),
        ResponseBytes=str(rnd.randint(100, 70000)),
        **_auth(u, s, "NTLM"),
    )
    v.update(latencies(rnd, rnd.randint(100, 900_000)))
    return v


def _k_ecp_admin(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    stem, query = rnd.choice(
        (
            ("/ecp/", ""),
            (
                "/ecp/DDI/DDIService.svc/GetList",
                "?schema=MailboxService&msExchEcpCanary=" + f"{rnd.getrandbits(160):040x}",
            ),
            ("/ecp/RulesEditor/InboxRules.svc/GetList", "?msExchEcpCanary=" + f"{rnd.getrandbits(160):040x}"),
        )
    )
    v = proxy_values(
        s,
        "Ecp",
        UrlStem=stem,
        Method="GET" if stem == "/ecp/" else "POST",
        HttpStatus="200",
        BackEndStatus="200",
        AuthenticationType="Forms",
        IsAuthenticated="true",
        AuthenticatedUser=f"{s.netbios}\\exadmin",
        AnchorMailbox="SMTP:exadmin@" + s.domain,
        UserAgent=rnd.choice(BROWSER_UA),
        ClientIpAddress="10.20.9.15",
        RoutingHint="Smtp",
        UrlQuery=query,
        RequestBytes=str(rnd.randint(0, 3000)),
        ResponseBytes=str(rnd.randint(500, 30000)),
    )
    v.update(latencies(rnd, rnd.randint(10, 600)))
    return v


def _k_owacalendar(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    v = proxy_values(
        s,
        "OwaCalendar",
        UrlStem=f"/owa/calendar/{u.mailbox_guid}@{s.domain}/{guid(rnd)}/calendar.ics",
        Method="GET",
        HttpStatus="200",
        BackEndStatus="200",
        AuthenticationType="",
        IsAuthenticated="false",
        UserAgent="Microsoft Outlook 16.0",
        ClientIpAddress=f"198.51.100.{rnd.randint(2, 254)}",
        RequestBytes="0",
        ResponseBytes=str(rnd.randint(1000, 20000)),
        GenericInfo=generic_info(anonymous=True),
    )
    v.update(latencies(rnd, rnd.randint(20, 400)))
    return v


# Request kinds and weights per HttpProxy folder (our estimates of a mid-size organisation).
PROXY_KINDS: dict[str, tuple[tuple[ProxyKind, float], ...]] = {
    "Owa": (
        (_k_owa_service, 0.78),
        (_k_owa_logon_page, 0.12),
        (_k_probe("Owa", "/owa/healthcheck.htm"), 0.05),
        (_k_probe("Owa", "/owa/", "GET"), 0.05),
    ),
    "Ews": ((_k_ews, 0.9), (_k_probe("Ews", "/EWS/Exchange.asmx", "POST"), 0.1)),
    "Mapi": ((_k_mapi, 0.95), (_k_probe("Mapi", "/mapi/healthcheck.htm"), 0.05)),
    "Eas": ((_k_eas, 0.93), (_k_probe("Eas", "/Microsoft-Server-ActiveSync/healthcheck.htm"), 0.07)),
    "Autodiscover": (
        (_k_autodiscover, 0.7),
        (_k_autodiscover_json, 0.2),
        (_k_probe("Autodiscover", "/autodiscover/healthcheck.htm"), 0.1),
    ),
    "Oab": ((_k_oab, 0.85), (_k_probe("Oab", "/OAB/healthcheck.htm"), 0.15)),
    "PowerShell": ((_k_powershell_admin, 0.4), (_k_probe("PowerShell", "/powershell", "POST"), 0.6)),
    "RpcHttp": ((_k_rpchttp, 0.9), (_k_probe("RpcHttp", "/rpc/healthcheck.htm"), 0.1)),
    "Ecp": ((_k_ecp_admin, 0.6), (_k_probe("Ecp", "/ecp/healthcheck.htm"), 0.4)),
    "OwaCalendar": ((_k_owacalendar, 0.6), (_k_probe("OwaCalendar", "/owa/calendar/healthcheck.htm"), 0.4)),
}

# Share of HttpProxy volume per folder.
PROXY_SHARE: dict[str, float] = {
    "Owa": 0.22,
    "Ews": 0.18,
    "Mapi": 0.21,
    "Eas": 0.13,
    "Autodiscover": 0.09,
    "RpcHttp": 0.05,
    "Oab": 0.04,
    "PowerShell": 0.03,
    "Ecp": 0.04,
    "OwaCalendar": 0.01,
}


# --- ECP Server and OAB generator ------------------------------------------------------------------


def ecp_text(
    server: ServerInfo, t: datetime, rnd: random.Random, cmd: str, url: str, usid: str, ex: str = ""
) -> str:
    """One ECP Server log line (log_formats.md 3): an ``ECP.Request`` with its typed ``S:`` items."""
    data = ecp_event_data(
        (
            ("TIME", str(rnd.randint(40, 900))),
            ("SID", guid(rnd)),
            ("CMD", cmd),
            ("REQID", guid(rnd)),
            ("URL", url),
            ("REFERRER", ""),
            ("EX", ex),
            ("ACTID", guid(rnd)),
            ("RS", "0"),
            ("BLD", server.version_short),
            ("TNAME", ""),
            ("TID", ""),
            ("USID", usid),
            ("EDOID", ""),
            ("ACID", ""),
        )
    )
    return ecp_line(t, server.host, "ECP.Request", data)


def oabgen_text(t: datetime, rnd: random.Random, message: str, level: str = "Information") -> str:
    """One OAB generator line in our four-field layout (no public sample: log_formats.md 5)."""
    return ",".join((iso_ms(t), str(rnd.randint(10, 90)), level, csv_value(message)))


def small_family_lines(
    family: str,
    day: datetime,
    segments: list[tuple[int, int, int]],
    rnd: random.Random,
    server: ServerInfo,
    seed: int,
) -> tuple[list[int], list[str]]:
    """Benign lines of the low-volume families: admin work in ECP, the OAB generator's routine messages."""
    offs_all: list[int] = []
    lines: list[str] = []
    us = users(seed, server.domain)
    admin = us[0]
    for start_ms, span_ms, n in segments:
        for off in sorted(rnd.randrange(span_ms) for _ in range(n)):
            ms = start_ms + off
            t = day + timedelta(milliseconds=ms)
            if family == "ecp":
                u = rnd.choice(us)
                cmd, url = rnd.choice(
                    (
                        (
                            f"Get-Mailbox.Identity={ps_quote(u.upn)}",
                            "/ecp/DDI/DDIService.svc/GetObject?schema=MailboxService",
                        ),
                        (
                            "Get-Mailbox.ResultSize='500'",
                            "/ecp/DDI/DDIService.svc/GetList?schema=MailboxService",
                        ),
                        (
                            "Pipeline.1|Get-MailboxRegionalConfiguration",
                            "/ecp/RulesEditor/InboxRules.svc/GetList",
                        ),
                        (
                            f"Get-InboxRule.Mailbox={ps_quote(u.upn)}",
                            "/ecp/RulesEditor/InboxRules.svc/GetList",
                        ),
                        ("Get-ExchangeServer", "/ecp/DDI/DDIService.svc/GetList?schema=ServersService"),
                        (
                            "Get-OwaVirtualDirectory.ADPropertiesOnly=$true",
                            "/ecp/DDI/DDIService.svc/GetList?schema=VirtualDirectoryService",
                        ),
                    )
                )
                url = url + ("&" if "?" in url else "?") + f"msExchEcpCanary={rnd.getrandbits(160):040x}"
                lines.append(ecp_text(server, t, rnd, cmd, url, admin.sid))
            else:
                msg = rnd.choice(
                    (
                        "OABGen started processing offline address book '\\Default Offline Address Book'.",
                        "OABGen finished processing offline address book '\\Default Offline Address Book'. "
                        "Full download files were not changed.",
                        f"OABGen is generating the address list 'Default Global Address List' with {len(us)} entries.",
                        "OABGen is uploading files to the arbitration mailbox "
                        "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}.",
                    )
                )
                lines.append(oabgen_text(t, rnd, msg))
            offs_all.append(ms)
    return offs_all, lines


# --- IIS -------------------------------------------------------------------------------------------


def iis_values(server: ServerInfo, port: str, **kw: str) -> dict[str, str]:
    row = {
        "date": T_SLOT,  # date and time share one placeholder: "YYYY-MM-DD HH:MM:SS"
        "s-ip": server.address,
        "s-port": port,
        "cs(Referer)": "",
        "sc-substatus": "0",
        "sc-win32-status": "0",
    }
    row.update(kw)
    return row


def iis_line(values: dict[str, str]) -> str:
    parts = []
    for name in IIS_FIELDS:
        if name == "time":
            continue
        parts.append(iis_value(values.get(name, "")))
    return " ".join(parts)


FE_TOKENS = f"&CorrelationID=<empty>;&cafeReqId={R_SLOT};"
IisKind = Callable[[random.Random, ServerInfo, tuple[User, ...]], dict[str, str]]


def _iis_from_proxy(kind: ProxyKind, port: str) -> IisKind:
    """An IIS kind that writes the same request as an HttpProxy kind (front end 443 or back end 444)."""

    def make(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
        p = kind(rnd, s, us)
        user = p.get("AuthenticatedUser", "")
        query = p.get("UrlQuery", "").lstrip("?")
        if port == "443":
            query = query + FE_TOKENS if p["UrlStem"].startswith(("/owa", "/ecp")) else query
            cip = p.get("ClientIpAddress", "")
        else:
            query = query + FE_TOKENS
            cip = s.address
        return iis_values(
            s,
            port,
            **{
                "cs-method": p.get("Method", "GET"),
                "cs-uri-stem": p["UrlStem"],
                "cs-uri-query": query,
                "cs-username": user,
                "c-ip": cip,
                "cs(User-Agent)": p.get("UserAgent", ""),
                "sc-status": p.get("HttpStatus", "200")
                if port == "443"
                else (p.get("BackEndStatus") or "200"),
                "sc-substatus": "0",
                "sc-win32-status": "0",
                "time-taken": p.get("TotalRequestTime", "15"),
            },
        )

    return make


def _iis_static(rnd: random.Random, s: ServerInfo, us: tuple[User, ...]) -> dict[str, str]:
    u = rnd.choice(us)
    stem = rnd.choice(
        (
            f"/owa/prem/{s.version_short}/scripts/boot.worldwide.0.mouse.js",
            f"/owa/prem/{s.version_short}/resources/styles/0/fabric.color.theme.light.css",
            "/owa/auth/Current/themes/resources/logon.css",
            "/owa/auth/Current/themes/resources/favicon.ico",
            "/owa/auth/Current/scripts/premium/flogon.js",
            f"/owa/auth/{s.version_short}/themes/resources/segoeui-regular.ttf",
        )
    )
    return iis_values(
        s,
        "443",
        **{
            "cs-method": "GET",
            "cs-uri-stem": stem,
            "cs-uri-query": "",
            "cs-username": "",
            "c-ip": u.ip,
            "cs(User-Agent)": rnd.choice(BROWSER_UA),
            "cs(Referer)": f"https://{s.url_host}/owa/auth/logon.aspx",
            "sc-status": rnd.choice(("200", "200", "304")),
            "time-taken": str(rnd.randint(0, 30)),
        },
    )


def _iis_fe_kinds() -> tuple[tuple[IisKind, float], ...]:
    out: list[tuple[IisKind, float]] = [(_iis_static, 0.12)]
    for proto, share in PROXY_SHARE.items():
        for kind, w in PROXY_KINDS[proto]:
            out.append((_iis_from_proxy(kind, "443"), share * w * 0.88))
    return tuple(out)


def _iis_be_kinds() -> tuple[tuple[IisKind, float], ...]:
    out: list[tuple[IisKind, float]] = []
    for proto, share in PROXY_SHARE.items():
        for kind, w in PROXY_KINDS[proto]:
            out.append((_iis_from_proxy(kind, "444"), share * w))
    return tuple(out)


# --- variants and bulk generation ----------------------------------------------------------------


@dataclass(frozen=True)
class VariantSet:
    """Per family: kind weights (normalised) and, per kind, its variants as %-templates."""

    weights: tuple[float, ...]
    variants: tuple[tuple[str, ...], ...]
    avg_len: float


@lru_cache(maxsize=64)
def variant_set(family: str, protocol: str, seed: int, server: ServerInfo) -> VariantSet:
    """Build (once per process) the variants of one family: ``httpproxy`` + protocol, ``iis1``, ``iis2``."""
    us = users(seed, server.domain)
    rnd = random.Random(f"variants-{seed}-{family}-{protocol}")
    kinds: tuple[tuple[Callable[[random.Random, ServerInfo, tuple[User, ...]], dict[str, str]], float], ...]
    if family == "httpproxy":
        kinds = PROXY_KINDS[protocol]
        render: Callable[[dict[str, str]], str] = proxy_line
    elif family == "iis1":
        kinds = _iis_fe_kinds()
        render = iis_line
    else:
        kinds = _iis_be_kinds()
        render = iis_line
    total_w = sum(w for _, w in kinds)
    variants = []
    lengths = []
    for kind, _ in kinds:
        vs = tuple(to_variant(render(kind(rnd, server, us))) for _ in range(VARIANTS))
        variants.append(vs)
        lengths.append(sum(len(v) for v in vs) / len(vs))
    weights = tuple(w / total_w for _, w in kinds)
    # Each placeholder expands: %(t)s -> 24 chars (19 for IIS), %(r)s -> 36 chars; +1 newline.
    t_len = 24 if family == "httpproxy" else 19
    avg = 0.0
    for w, vs, ln in zip(weights, variants, lengths, strict=True):
        nt = sum(v.count("%(t)s") for v in vs) / len(vs)
        nr = sum(v.count("%(r)s") for v in vs) / len(vs)
        avg += w * (ln + nt * (t_len - 5) + nr * (36 - 5) + 1)
    return VariantSet(weights=weights, variants=tuple(variants), avg_len=avg)


@lru_cache(maxsize=2)
def _hms_table() -> tuple[str, ...]:
    return tuple(f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60))


_MS3 = tuple(f"{i:03d}" for i in range(1000))


def bulk_lines(
    vs: VariantSet, rng: np.random.Generator, n: int, day: str, start_ms: int, span_ms: int, iso: bool
) -> tuple[list[int], list[str]]:
    """``n`` benign lines with sorted times in [start_ms, start_ms + span_ms) ms after midnight of ``day``.

    Returns the times (ms after midnight) and the lines (without newline).
    """
    if n <= 0:
        return [], []
    offs = np.sort(rng.integers(0, span_ms, n, dtype=np.int64)) + start_ms
    kinds = rng.choice(len(vs.weights), size=n, p=np.asarray(vs.weights))
    picks = rng.integers(0, VARIANTS, n)
    hexes = rng.bytes(16 * n).hex()
    secs = (offs // 1000).tolist()
    msl = (offs % 1000).tolist()
    hms = _hms_table()
    variants = vs.variants
    variant = _VARIANT
    out: list[str] = []
    append = out.append
    if iso:
        prefix = day + "T"
        for i, (k, p) in enumerate(zip(kinds.tolist(), picks.tolist(), strict=True)):
            h = hexes[32 * i : 32 * i + 32]
            append(
                variants[k][p]
                % {
                    "t": f"{prefix}{hms[secs[i]]}.{_MS3[msl[i]]}Z",
                    "r": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}",
                }
            )
    else:
        prefix = day + " "
        for i, (k, p) in enumerate(zip(kinds.tolist(), picks.tolist(), strict=True)):
            h = hexes[32 * i : 32 * i + 32]
            append(
                variants[k][p]
                % {
                    "t": f"{prefix}{hms[secs[i]]}",
                    "r": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}",
                }
            )
    return offs.tolist(), out
