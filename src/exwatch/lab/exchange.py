"""How an emulated server answers one request (pure: state and request in, response and log record out).

Response shapes follow ``fingerprinting.md`` section 5 (public captures of real servers); where the
reference says a real shape is not established, the emulator's choice is named as such below.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from exwatch.lab import _catalogue
from exwatch.lab.http import Request, Response, abort
from exwatch.lab.rewrite import PASS, RewriteRequest, RuleSet, evaluate

LAB_DOMAIN = "lab.exwatch.test"
MANIFEST_NAME = "microsoft.exchange.ediscovery.exporttool.application"
_request_ids = itertools.count(1)


@dataclass
class ServerState:
    """What an emulated server is right now; ``fleet.update`` replaces build and rules live."""

    name: str
    address: str
    variant: str
    build: str | None
    rules: RuleSet = field(default_factory=RuleSet)
    vulnerable: dict[str, bool] = field(default_factory=dict)
    scheme: str = "https"

    @property
    def netbios(self) -> str:
        """The NetBIOS name the front end reports in X-FEServer."""
        return re.sub(r"[^A-Z0-9-]", "-", self.name.upper())[:15]

    @property
    def fqdn(self) -> str:
        """The server's own FQDN (lower case, as X-CalculatedBETarget shows it)."""
        return f"{self.name.lower()}.{LAB_DOMAIN}"

    def set_build(self, build: str | None) -> None:
        """Change the build and recompute which flaws the request shapes reach."""
        self.build = build
        self.vulnerable = (
            {w: _catalogue.cve_vulnerable(build, w) for w in _catalogue.PROBE_CVE} if build else {}
        )


@dataclass
class LogRecord:
    """The HttpProxy log fields one request causes on the front end (written by ``logs.py``)."""

    protocol: str
    fields: dict[str, str]


def _iis_version(build: str) -> str:
    major_minor = _catalogue.build_tuple(build)[:2]
    if major_minor[0] == 14:
        return "Microsoft-IIS/7.5"
    if major_minor == (15, 0):
        return "Microsoft-IIS/8.5"
    return "Microsoft-IIS/10.0"


def _request_id() -> str:
    n = next(_request_ids)
    return f"{n:08x}-{(n * 7919) & 0xFFFF:04x}-4{(n * 104729) & 0xFFF:03x}-a{n & 0xFFF:03x}-{n * 2654435761 & 0xFFFFFFFFFFFF:012x}"


def cu_path(build: str) -> str:
    """The version folder on the OWA logon page: CU only on 2013 and later, the full build on 2010."""
    t = _catalogue.build_tuple(build)
    return ".".join(str(p) for p in (t if t[0] == 14 else t[:3]))


def long_build(build: str) -> str:
    """The zero-padded form logs and X-ServerApplication use: 15.01.2176.009."""
    t = list(_catalogue.build_tuple(build)) + [0] * 4
    return f"{t[0]:02d}.{t[1]:02d}.{t[2]:04d}.{t[3]:03d}"


# --- bodies (cached: a fleet repeats builds) -------------------------------------------------------


@functools.cache
def logon_page(build: str) -> bytes:
    """An OWA logon page with the markers scanners use and the versioned resource paths."""
    t = _catalogue.build_tuple(build)
    folder = cu_path(build)
    if t[0] == 14:
        base = f"/owa/{folder}/themes/base"
        title = "Outlook Web App"
        icon = f"{base}/favicon.ico"
        fonts = ""
        css = f'<link type="text/css" rel="stylesheet" href="{base}/logon.css">\n'
    else:
        base = f"/owa/auth/{folder}/themes/resources"
        title = "Outlook Web App" if t[:2] == (15, 0) else "Outlook"
        icon = f"{base}/favicon.ico"
        fonts = "".join(
            f'    @font-face {{ font-family: "Segoe UI WPC {w}"; '
            f"src: url('{base}/segoeui-{w}.eot?#iefix') format('embedded-opentype'), "
            f"url('{base}/segoeui-{w}.ttf') format('truetype'); }}\n"
            for w in ("regular", "semilight", "semibold")
        )
        css = ""
    head = (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN" "http://www.w3.org/TR/html4/loose.dtd">\n'
        "<!-- Copyright (c) 2011 Microsoft Corporation.  All rights reserved. -->\n"
        "<!-- OwaPage = ASP.auth_logon_aspx -->\n"
        "<!-- {57A118C6-2DA9-419d-BE9A-F92B0F9A418B} -->\n"
        '<html dir="ltr">\n<head>\n'
        '<meta http-equiv="X-UA-Compatible" content="IE=10" />\n'
        f'<link rel="shortcut icon" href="{icon}" type="image/x-icon">\n'
        '<meta name="Robots" content="NOINDEX, NOFOLLOW">\n'
        f"<title>{title}</title>\n{css}<style>\n{fonts}</style>\n"
        '<script type="text/javascript">\n'
        "function IsOwaPremiumBrowser(){ return true; }\n"
        '</script>\n</head>\n<body class="signInBg">\n'
        "<noscript><div>To use Outlook, browser settings must allow scripts to run.</div></noscript>\n"
        '<form action="/owa/auth.owa" method="POST" name="logonForm" autocomplete="off">\n'
        '<input type="hidden" name="destination" value="">\n<input type="hidden" name="flags" value="4">\n'
        '<input id="username" name="username" type="text"><input id="password" name="password" type="password">\n'
    )
    # Real pages are 28 to 59 KB, mostly script and localized strings; pad with inert script lines.
    filler = "".join(f'var L_Str{i:04d} = "{"x" * 40}";\n' for i in range(520))
    tail = '</form>\n<script type="text/javascript">\n' + filler + "</script>\n</body>\n</html>\n"
    return (head + tail).encode("utf-8")


@functools.cache
def exporttool_manifest(build: str) -> bytes:
    """A ClickOnce deployment manifest naming the build twice (plus the signature's identity)."""
    ident = (
        f'name="microsoft.exchange.ediscovery.exporttool.application" version="{build}" '
        'publicKeyToken="b1d1a6c45aa418ce" language="neutral" processorArchitecture="msil"'
    )
    dep = (
        f'name="microsoft.exchange.ediscovery.exporttool" version="{build}" '
        'publicKeyToken="b1d1a6c45aa418ce" language="neutral" processorArchitecture="msil" type="win32"'
    )
    sig = "".join(f'      <dsig:Transform Algorithm="urn:lab-{i:03d}" />\n' for i in range(220))
    text = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<asmv1:assembly xsi:schemaLocation="urn:schemas-microsoft-com:asm.v1 assembly.adaptive.xsd" '
        'manifestVersion="1.0" xmlns:asmv1="urn:schemas-microsoft-com:asm.v1" '
        'xmlns="urn:schemas-microsoft-com:asm.v2" xmlns:asmv2="urn:schemas-microsoft-com:asm.v2" '
        'xmlns:xrml="urn:mpeg:mpeg21:2003:01-REL-R-NS" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:asmv3="urn:schemas-microsoft-com:asm.v3" xmlns:dsig="http://www.w3.org/2000/09/xmldsig#" '
        'xmlns:co.v1="urn:schemas-microsoft-com:clickonce.v1" xmlns:co.v2="urn:schemas-microsoft-com:clickonce.v2">\n'
        f'  <assemblyIdentity {ident} xmlns="urn:schemas-microsoft-com:asm.v1" />\n'
        '  <description asmv2:publisher="Microsoft" asmv2:product="Exchange eDiscovery export tool" '
        'xmlns="urn:schemas-microsoft-com:asm.v1" />\n'
        '  <deployment install="false" mapFileExtensions="true" trustURLParameters="true" />\n'
        '  <compatibleFrameworks xmlns="urn:schemas-microsoft-com:clickonce.v2">\n'
        '    <framework targetVersion="4.5" profile="Full" supportedRuntime="4.0.30319" />\n'
        "  </compatibleFrameworks>\n"
        "  <dependency>\n"
        '    <dependentAssembly dependencyType="install" codebase="microsoft.exchange.ediscovery.exporttool.exe.manifest" size="16245">\n'
        f"      <assemblyIdentity {dep} />\n"
        "    </dependentAssembly>\n"
        "  </dependency>\n"
        '  <publisherIdentity name="CN=Microsoft Corporation" issuerKeyHash="lab" />\n'
        '  <Signature Id="StrongNameSignature" xmlns="http://www.w3.org/2000/09/xmldsig#">\n'
        '    <KeyInfo><msrel:RelData xmlns:msrel="http://schemas.microsoft.com/windows/rel/2005/reldata">\n'
        f'      <r:license xmlns:r="urn:mpeg:mpeg21:2003:01-REL-R-NS" xmlns:as="http://schemas.microsoft.com/windows/pki/2005/Authenticode"><r:grant><as:ManifestInformation><as:assemblyIdentity {ident} /></as:ManifestInformation></r:grant></r:license>\n'
        f"{sig}"
        "    </msrel:RelData></KeyInfo>\n  </Signature>\n"
        "</asmv1:assembly>\n"
    )
    return text.encode("utf-8")


def _object_moved(location: str) -> bytes:
    return (
        "<html><head><title>Object moved</title></head><body>\r\n"
        f'<h2>Object moved to <a href="{location}">here</a>.</h2>\r\n</body></html>\r\n'
    ).encode()


IIS_404 = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
    b"<html><head><title>404 - File or directory not found.</title></head>\r\n"
    b'<body><div id="header"><h1>Server Error</h1></div><div id="content"><fieldset>'
    b"<h2>404 - File or directory not found.</h2>"
    b"<h3>The resource you are looking for might have been removed, had its name changed, or is temporarily unavailable.</h3>"
    b"</fieldset></div></body></html>\r\n"
)
IIS_500_19 = (
    b"<html><head><title>IIS 10.0 Detailed Error - 500.19 - Internal Server Error</title></head><body>"
    b"<h3>HTTP Error 500.19 - Internal Server Error</h3>"
    b"<h4>The requested page cannot be accessed because the related configuration data for the page is invalid.</h4>"
    b"</body></html>\r\n"
)
IIS_START = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml">\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1" />\r\n'
    b'<title>IIS Windows Server</title>\r\n</head>\r\n<body>\r\n<div id="container">\r\n'
    b'<a href="http://go.microsoft.com/fwlink/?linkid=66138&amp;clcid=0x409"><img src="iisstart.png" alt="IIS" width="960" height="600" /></a>\r\n'
    b"</div>\r\n</body>\r\n</html>"
)
NGINX_WELCOME = (
    b"<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n"
    b"<h1>Welcome to nginx!</h1>\n<p>If you see this page, the nginx web server is successfully installed and\n"
    b"working. Further configuration is required.</p>\n</body>\n</html>\n"
)


def nginx_page(status: int, reason: str) -> bytes:
    """nginx's built-in error page."""
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


# --- Exchange ----------------------------------------------------------------------------------------

_PROTOCOLS = {
    "owa": "Owa",
    "ecp": "Ecp",
    "ews": "Ews",
    "autodiscover": "Autodiscover",
    "microsoft-server-activesync": "Eas",
    "mapi": "Mapi",
    "oab": "Oab",
    "rpc": "RpcHttp",
    "powershell": "PowerShell",
}
_AUTH_401 = ("/ews", "/autodiscover", "/microsoft-server-activesync", "/mapi", "/oab", "/rpc", "/powershell")
_OWA_SERVICE = ("/owa/service", "/owa/service.svc")
_COOKIE_TARGET = re.compile(
    r"(X-AnonResource-Backend|X-BEResource)=([^;/~]+)/([^;~]*)~([^;]*)", re.IGNORECASE
)


def _host(state: ServerState, req: Request) -> str:
    return req.headers.get("host") or state.address


def _base_headers(state: ServerState, build: str) -> list[tuple[str, str]]:
    return [("Server", _iis_version(build)), ("request-id", _request_id())]


def _cafe(state: ServerState, build: str) -> list[tuple[str, str]]:
    """Headers of the 2013+ front end (CAFE); Exchange 2010 has none of them."""
    if _catalogue.build_tuple(build)[0] == 14:
        return []
    return [("X-FEServer", state.netbios)]


# OWA reports its own version (registry OwaVersion), which can lag the published build: 2019 CU9 shows
# 15.2.858.2 for the published 15.2.858.5 (fingerprinting.md 3; microsoft/CSS-Exchange issue 396).
OWA_VERSION_LAG = {"15.2.858.5": "15.2.858.2"}


def owa_version(build: str) -> str:
    """The version OWA itself reports (X-OWA-Version, owaVer=, the MAPI page)."""
    return OWA_VERSION_LAG.get(build, build)


def _owa_version(state: ServerState, build: str) -> list[tuple[str, str]]:
    if state.variant == "no_owa_version" or _catalogue.build_tuple(build)[0] == 14:
        return []
    return [("X-OWA-Version", owa_version(build))]


def _aspnet() -> list[tuple[str, str]]:
    return [("X-AspNet-Version", "4.0.30319"), ("X-Powered-By", "ASP.NET")]


def _adfs_location(host: str, path: str) -> str:
    realm = quote(f"https://{host}{path}", safe="")  # federation realms are HTTPS
    return (
        f"https://adfs.{LAB_DOMAIN}/adfs/ls/?wa=wsignin1.0&wtrealm={realm}"
        f"&wctx=rm%3d0%26id%3dpassive%26ru%3d{quote(quote(path, safe=''), safe='')}&wct=2021-03-08T10%3a00%3a00Z"
    )


def _log(protocol: str, req: Request, resp: Response, **fields: str) -> LogRecord:
    base = {
        "Protocol": protocol,
        "UrlHost": req.headers.get("host", ""),
        "UrlStem": unquote(req.path),
        "UrlQuery": ("?" + req.query) if req.query else "",
        "Method": req.method,
        "UserAgent": req.headers.get("user-agent", "").replace(",", " "),
        "HttpStatus": str(resp.status),
        "BackEndStatus": str(resp.status),
        "AuthenticationType": "",
        "IsAuthenticated": "false",
        "RequestBytes": str(len(req.body)),
        "ResponseBytes": str(len(resp.body)),
        "ProxyAction": "Proxy",
        "RoutingStatus": "CafeV1",
    }
    base.update(fields)
    return LogRecord(protocol, base)


def respond(state: ServerState, req: Request) -> tuple[Response, LogRecord | None]:
    """The whole answer of one server to one request, including the rewrite rules in front of it."""
    if state.variant in ("iis", "nginx"):
        return plain_site(state, req), None
    if state.build is None:
        return Response(404, [("Server", "Microsoft-IIS/10.0")], IIS_404), None
    verdict = (
        evaluate(state.rules, RewriteRequest(req.target, req.headers))
        if state.rules.rules or state.rules.error
        else PASS
    )
    if verdict.action == "abort":
        resp = abort()
        return (_through_proxy(state, req, resp), None)
    if verdict.action == "respond":
        body = IIS_500_19 if state.rules.error else b""
        resp = Response(verdict.status, [*_base_headers(state, state.build)], body, reason=verdict.reason)
        return (_through_proxy(state, req, resp), None)
    resp, record = _exchange(state, req, state.build)
    return _through_proxy(state, req, resp), record


def _through_proxy(state: ServerState, req: Request, resp: Response) -> Response:
    """The ``proxy_strip`` variant: an nginx reverse proxy that hides the Exchange front end."""
    if state.variant != "proxy_strip":
        return resp
    if req.path.lower().startswith("/ecp"):
        return Response(
            404, [("Server", "nginx"), ("Content-Type", "text/html")], nginx_page(404, "Not Found")
        )
    if resp.abort:
        # The upstream dropped the connection: nginx answers 502 (mitigations.md section 9).
        return Response(
            502, [("Server", "nginx"), ("Content-Type", "text/html")], nginx_page(502, "Bad Gateway")
        )
    resp.drop(
        "Server",
        "X-OWA-Version",
        "X-FEServer",
        "X-BEServer",
        "X-DiagInfo",
        "X-Powered-By",
        "X-AspNet-Version",
    )
    resp.headers.insert(0, ("Server", "nginx"))
    return resp


def _exchange(state: ServerState, req: Request, build: str) -> tuple[Response, LogRecord | None]:
    """The Exchange front end itself (after the rewrite rules): route by path to the answer's shape."""
    path = unquote(req.path)
    low = path.lower()
    host = _host(state, req)
    first = low.strip("/").split("/", 1)[0]
    protocol = _PROTOCOLS.get(first)
    is_2010 = _catalogue.build_tuple(build)[0] == 14
    cafe = _cafe(state, build)
    cookie = req.headers.get("cookie", "")

    # ProxyLogon (CVE-2021-26855): an unpatched front end computes the back end from the cookie.
    m = _COOKIE_TARGET.search(cookie) if protocol in ("Owa", "Ecp") else None
    if m and state.vulnerable.get("proxylogon"):
        return _proxylogon_ssrf(state, req, build, m, protocol, host, path)

    if low.startswith("/autodiscover/autodiscover.json") and "@" in unquote(req.query):
        return _autodiscover_confusion(state, req, build, host, cafe)

    if low in ("", "/"):
        loc = f"{state.scheme}://{host}/owa/"
        hdr = [
            ("Location", loc),
            ("Cache-Control", "no-cache"),
            ("Pragma", "no-cache"),
            *_base_headers(state, build),
            *cafe,
        ]
        return Response(302, hdr, b"", reason="Moved Temporarily"), None

    if low in ("/owa", "/owa/", "/owa/auth/logon.aspx", "/ecp", "/ecp/"):
        return _owa_entry(state, req, build, low, protocol, host, cafe)

    folder = cu_path(build)
    static_prefix = f"/owa/{folder}/themes/" if is_2010 else f"/owa/auth/{folder}/themes/"
    if low.startswith(static_prefix):
        ctype = "image/x-icon" if low.endswith(".ico") else "application/octet-stream"
        return Response(
            200, [("Content-Type", ctype), *_base_headers(state, build)], b"\x00\x00\x01\x00lab"
        ), None

    if low in _OWA_SERVICE or any(
        low == p or low.startswith(p + "/") or low.startswith(p + ".") for p in _AUTH_401
    ):
        return _unauthorized(state, req, build, host, protocol or "Owa")

    if low.startswith("/ecp/") and not is_2010:
        return _ecp(state, req, build, low)

    resp = Response(
        404, [("Content-Type", "text/html"), *_base_headers(state, build), *cafe, *_aspnet()], IIS_404
    )
    return resp, (_log(protocol, req, resp) if protocol and not is_2010 else None)


def _proxylogon_ssrf(
    state: ServerState,
    req: Request,
    build: str,
    m: re.Match[str],
    protocol: str | None,
    host: str,
    path: str,
) -> tuple[Response, LogRecord | None]:
    """An unpatched front end routing to the server the cookie names (``m``: the cookie's target)."""
    target_host = m.group(2).lower()
    anchor = f"ServerInfo~{m.group(2)}/{m.group(3)}"
    hint = (
        "X-AnonResource-Backend-Cookie"
        if m.group(1).lower() == "x-anonresource-backend"
        else "X-BEResource-Cookie"
    )
    cafe = _cafe(state, build)
    headers = [*_base_headers(state, build), *cafe, ("X-CalculatedBETarget", target_host), *_aspnet()]
    if state.variant == "adfs":
        resp = Response(302, [*headers, ("Location", _adfs_location(host, path))], b"")
    else:
        resp = Response(500, [*headers, ("Content-Type", "text/html")], b"NegotiateSecurityContext failed")
    record = _log(
        protocol or "Owa",
        req,
        resp,
        AuthenticationType="FBA",
        AnchorMailbox=anchor,
        RoutingHint=hint,
        TargetServer=target_host,
        TargetServerVersion="0.00.0003.000",
        RoutingType="CrossRegion",
        BackEndStatus=str(resp.status),
        GenericInfo="ProxyToDownLevel=True;",
    )
    return resp, record


def _owa_entry(
    state: ServerState,
    req: Request,
    build: str,
    low: str,
    protocol: str | None,
    host: str,
    cafe: list[tuple[str, str]],
) -> tuple[Response, LogRecord | None]:
    """The OWA and ECP entry points: the logon page, or a redirect to it (or to ADFS)."""
    is_2010 = _catalogue.build_tuple(build)[0] == 14
    ret = "ecp" if low.startswith("/ecp") else "owa/"
    if state.variant == "adfs":
        loc = _adfs_location(host, "/" + ret)
        resp = Response(
            302, [("Location", loc), *_base_headers(state, build), *cafe, *_aspnet()], _object_moved(loc)
        )
        return resp, _log(protocol or "Owa", req, resp, AuthenticationType="Adfs")
    if low == "/owa/auth/logon.aspx":
        hdr = [
            ("Cache-Control", "no-cache, no-store"),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Expires", "-1"),
            ("Pragma", "no-cache"),
            *_base_headers(state, build),
            ("X-AspNet-Version", "4.0.30319"),
            ("X-Frame-Options", "SAMEORIGIN"),
            ("X-Powered-By", "ASP.NET"),
        ]
        resp = Response(200, hdr, logon_page(build))
        return resp, None if is_2010 else _log("Owa", req, resp, AuthenticationType="FBA")
    loc = f"{state.scheme}://{host}/owa/auth/logon.aspx?url={state.scheme}%3a%2f%2f{host}%2f{quote(ret, safe='').lower()}&reason=0"
    hdr = [
        ("Location", loc),
        ("Content-Type", "text/html; charset=utf-8"),
        *_base_headers(state, build),
        *cafe,
        *_aspnet(),
    ]
    resp = Response(302, hdr, _object_moved(loc))
    return resp, None if is_2010 else _log(protocol or "Owa", req, resp, AuthenticationType="FBA")


def _unauthorized(
    state: ServerState, req: Request, build: str, host: str, protocol: str
) -> tuple[Response, LogRecord | None]:
    hdr = [
        *_base_headers(state, build),
        ("WWW-Authenticate", "Negotiate"),
        ("WWW-Authenticate", "NTLM"),
        ("WWW-Authenticate", f'Basic realm="{host}"'),
        *_owa_version(state, build),
        *_cafe(state, build),
    ]
    if _catalogue.build_tuple(build)[0] != 14:
        hdr.append(("X-CalculatedBETarget", state.fqdn))
    hdr += _aspnet()
    resp = Response(401, hdr, b"")
    is_2010 = _catalogue.build_tuple(build)[0] == 14
    return resp, None if is_2010 else _log(
        protocol, req, resp, AuthenticationType="Negotiate", TargetServer=state.fqdn
    )


def _ecp(state: ServerState, req: Request, build: str, low: str) -> tuple[Response, LogRecord | None]:
    parts = low.strip("/").split("/")
    # /ecp/<folder>/exporttool/ or /ecp/<folder>/exporttool/<manifest>
    if len(parts) >= 3 and parts[2] == "exporttool" and (len(parts) == 3 or parts[3:] == [MANIFEST_NAME]):
        folder = parts[1]
        ok = folder == build or (folder == "current" and state.variant != "no_exporttool")
        if ok:
            body = exporttool_manifest(build) if len(parts) == 4 else b""
            ctype = "application/x-ms-application" if body else "text/html"
            resp = Response(
                200,
                [("Content-Type", ctype), *_base_headers(state, build), *_cafe(state, build), *_aspnet()],
                body,
            )
            rec = _log(
                "Ecp",
                req,
                resp,
                AuthenticationType="FBA",
                AnchorMailbox="ServerVersion~Version 15.0 (Build 0.0)",
                RoutingHint="EDiscoveryExportTool-ServerVersion",
                RoutingType="IntraForest",
                TargetServer=state.fqdn,
            )
            return resp, rec
    resp = Response(
        404,
        [("Content-Type", "text/html"), *_base_headers(state, build), *_cafe(state, build), *_aspnet()],
        IIS_404,
    )
    return resp, _log("Ecp", req, resp, AuthenticationType="FBA")


def _autodiscover_confusion(
    state: ServerState, req: Request, build: str, host: str, cafe: list[tuple[str, str]]
) -> tuple[Response, LogRecord | None]:
    """The ProxyShell and ProxyNotShell request shapes (fingerprinting.md 4.3, 4.4)."""
    query = unquote(req.query).lower()
    wants_mapi = "/mapi/nspi" in query
    if state.vulnerable.get("proxyshell"):
        return _proxyshell_confusion(state, req, build, cafe, wants_mapi)
    if "powershell" in query and state.vulnerable.get("proxynotshell"):
        # Lab convention (the real unauthenticated answer is not documented): the front end still
        # accepts the path confusion and asks for authentication by redirecting to the logon page.
        loc = f"{state.scheme}://{host}/owa/auth/logon.aspx?url={state.scheme}%3a%2f%2f{host}%2fpowershell&reason=0"
        hdr = [
            ("Location", loc),
            ("Content-Type", "text/html; charset=utf-8"),
            *_base_headers(state, build),
            *cafe,
            *_aspnet(),
        ]
        resp = Response(302, hdr, _object_moved(loc))
        return resp, _log("Autodiscover", req, resp, TargetServer=state.fqdn)
    # Patched (or never affected): an ordinary anonymous autodiscover request.
    return _unauthorized(state, req, build, host, "Autodiscover")


def _proxyshell_confusion(
    state: ServerState, req: Request, build: str, cafe: list[tuple[str, str]], wants_mapi: bool
) -> tuple[Response, LogRecord | None]:
    """A front end open to ProxyShell: the back end runs as SYSTEM (the MAPI page, else OWA's error)."""
    owa_ver = owa_version(build) if _catalogue.build_tuple(build)[0] != 14 else ""
    if wants_mapi:
        body = (
            "<html><head><title>Exchange MAPI/HTTP Connectivity Endpoint</title></head><body>"
            "<p>Exchange MAPI/HTTP Connectivity Endpoint<br><br>"
            f"Version: {owa_ver}<br>Vdir Path: /mapi/nspi/<br><br>"
            "<b>User:</b> NT AUTHORITY\\SYSTEM<br><b>UPN:</b> <br><b>SID:</b> S-1-5-18<br>"
            "<b>Organization:</b> <br><b>Authentication:</b> Negotiate<br><b>PUID:</b> <br><b>TenantGuid:</b> <br><br>"
            f"<b>Cafe:</b> {state.fqdn}<br><b>Mailbox:</b> {state.fqdn}<br></p></body></html>"
        ).encode()
        hdr = [
            ("Content-Type", "text/html"),
            *_base_headers(state, build),
            ("X-ServerApplication", f"Exchange/{long_build(owa_ver)}"),
            *cafe,
            *_aspnet(),
        ]
        resp = Response(200, hdr, body)
    else:
        exc = "Microsoft.Exchange.Clients.Owa2.Server.Core.OwaADUserNotFoundException"
        loc = (
            f"/owa/auth/errorfe.aspx?httpCode=500&msg=A+mailbox+could+not+be+found+for+NT+AUTHORITY%5cSYSTEM"
            f"&msgParam=NT+AUTHORITY%5cSYSTEM&owaError={exc}&owaVer={owa_ver}&be={state.netbios}"
            f"&ts=132700000000000000&fe={state.netbios}&reason=0"
        )
        hdr = [
            ("Location", loc),
            ("Content-Type", "text/html; charset=utf-8"),
            *_base_headers(state, build),
            ("X-OWA-Error", exc),
            ("X-BEServer", state.netbios),
            ("X-CalculatedBETarget", state.fqdn),
            ("X-DiagInfo", state.netbios),
            *cafe,
            ("X-OWA-DiagnosticsInfo", "0;0;0"),
            ("X-OwaSuppLevel", "0"),
            ("X-UA-Compatible", "IE=EmulateIE7"),
            (
                "Set-Cookie",
                "ClientId=LAB0000000000000000000000000000; expires=Fri, 11-Mar-2022 10:00:00 GMT; path=/; secure; HttpOnly",
            ),
            (
                "Set-Cookie",
                "X-BackEndCookie=; expires=Sat, 11-Mar-2000 10:00:00 GMT; path=/autodiscover; secure; HttpOnly",
            ),
            *_aspnet(),
        ]
        resp = Response(302, hdr, _object_moved(loc))
    rec = _log(
        "Autodiscover",
        req,
        resp,
        AuthenticationType="",
        AnchorMailbox="",
        RoutingHint="",
        TargetServer=state.fqdn,
        AuthenticatedUser="NT AUTHORITY\\SYSTEM",
    )
    return resp, rec


def plain_site(state: ServerState, req: Request) -> Response:
    """A plain IIS or nginx site (not Exchange)."""
    low = req.path.lower()
    if state.variant == "nginx":
        hdr = [("Server", "nginx/1.18.0"), ("Content-Type", "text/html")]
        if low in ("/", "/index.html"):
            return Response(200, hdr, NGINX_WELCOME)
        return Response(404, hdr, nginx_page(404, "Not Found"))
    hdr = [("Content-Type", "text/html"), ("Server", "Microsoft-IIS/10.0"), ("X-Powered-By", "ASP.NET")]
    if low in ("/", "/iisstart.htm"):
        return Response(200, hdr, IIS_START)
    return Response(404, hdr, IIS_404)


def many_headers_response(count: int = 10_000) -> Response:
    """A 200 carrying ``count`` headers (a hostile server)."""
    hdr = [("Server", "Microsoft-IIS/10.0")] + [(f"X-Lab-{i:05d}", "x" * 16) for i in range(count)]
    return Response(200, hdr, b"ok")


def redirect_loop_response(req: Request, origin: str) -> Response:
    """Every path redirects to its twin, which redirects back (a hostile server); origin is scheme://host."""
    target = "/loop-b" if req.path != "/loop-b" else "/loop-a"
    return Response(302, [("Location", f"{origin}{target}"), ("Server", "Microsoft-IIS/10.0")], b"")
