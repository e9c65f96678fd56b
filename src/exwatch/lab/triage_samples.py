"""Files planted in triage packages: inert web-shell samples, dumps, archives and configuration files.

Each builder returns the bytes of one file in the shape detections look for (``detections.md`` WS-*,
PE-*). Nothing here can run or holds real data: see the note on the web-shell samples below.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
from datetime import datetime

from exwatch.lab.triage_formats import WIN_INSTALL, ServerInfo

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
