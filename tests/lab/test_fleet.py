"""The emulator over real sockets: each variant answers as documented, and truth matches behaviour."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import date

import pytest
from cryptography import x509

from exwatch.lab import LabFleet, ServerSpec, draw_fleet, run_fleet_in_thread, truth
from exwatch.lab._catalogue import cve_vulnerable

from .conftest import PROXYLOGON_COOKIE, Answer, fetch

pytestmark = pytest.mark.integration

PORT = 18443
HTTP_PORT = 18080
PROXYSHELL_OWA = (
    "/autodiscover/autodiscover.json?@test.com/owa/?&Email=autodiscover/autodiscover.json%3F@test.com"
)
PROXYSHELL_MAPI = (
    "/autodiscover/autodiscover.json?@test.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@test.com"
)
PROXYNOTSHELL = (
    "/autodiscover/autodiscover.json?a@foo.var/owa/?&Email=autodiscover/autodiscover.json?a@foo.var"
    "&Protocol=XYZ&FooProtocol=Powershell"
)


def _spec(
    i: int,
    name: str,
    variant: str,
    build: str | None = None,
    mitigations: list[str] | None = None,
    scheme: str = "https",
) -> ServerSpec:
    port = PORT if scheme == "https" else HTTP_PORT
    return ServerSpec(name, f"127.10.0.{i}", port, scheme, "", build, mitigations or [], variant)


SPECS = [
    _spec(1, "ex-vuln", "standard", "15.1.2176.2"),  # 2016 CU19 before the March 2021 SU
    _spec(2, "ex-mar21", "standard", "15.1.2176.9"),  # 2016 CU19 Mar21SU: ProxyLogon fixed
    _spec(3, "ex-mitig", "standard", "15.1.2176.2", ["proxylogon", "proxynotshell"]),
    _spec(4, "ex-nohdr", "no_owa_version", "15.2.792.3"),  # 2019 CU8
    _spec(5, "ex-adfs", "adfs", "15.0.1497.2"),  # 2013 CU23
    _spec(6, "ex-noexp", "no_exporttool", "15.1.2308.14"),  # 2016 CU21 Jul21SU
    _spec(7, "ex-proxy", "proxy_strip", "15.1.2176.2", ["proxylogon"]),
    _spec(8, "ex-2010", "standard", "14.3.509.0"),
    _spec(9, "ex-nov22", "standard", "15.1.2507.16"),  # 2016 CU23 Nov22SU
    _spec(10, "ex-http", "standard", "15.2.721.2", scheme="http"),
    _spec(11, "ex-cu9", "standard", "15.2.858.5"),  # 2019 CU9, whose OWA reports 15.2.858.2
    _spec(20, "web-iis", "iis"),
    _spec(21, "web-nginx", "nginx", scheme="http"),
    _spec(22, "refuse", "refuse"),
    _spec(23, "reset", "reset"),
    _spec(24, "silent", "silent"),
    _spec(30, "tarpit", "tarpit", scheme="http"),
    _spec(31, "endless", "endless_body"),
    _spec(32, "headers", "many_headers"),
    _spec(33, "loop", "redirect_loop"),
    _spec(34, "garbage", "garbage", scheme="http"),
    _spec(35, "badtls", "bad_tls"),
]
BY_NAME = {s.name: s for s in SPECS}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    specs = [ServerSpec(**{**s.__dict__, "mitigations": list(s.mitigations)}) for s in SPECS]
    with run_fleet_in_thread(specs, log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def get(name: str, path: str, headers: dict[str, str] | None = None, **kw: object) -> Answer:
    return fetch(BY_NAME[name], path, headers, **kw)  # type: ignore[arg-type]


def test_root_redirects_to_owa(fleet: LabFleet) -> None:
    a = get("ex-vuln", "/")
    assert a.status == 302
    assert a.header("Location") == "https://127.10.0.1/owa/"
    assert a.header("X-FEServer") == "EX-VULN"
    assert a.header("Server") == "Microsoft-IIS/10.0"
    assert a.header("Content-Length") == "0"


def test_owa_redirects_to_logon_page(fleet: LabFleet) -> None:
    a = get("ex-vuln", "/owa/")
    assert a.status == 302
    assert (
        a.header("Location")
        == "https://127.10.0.1/owa/auth/logon.aspx?url=https%3a%2f%2f127.10.0.1%2fowa%2f&reason=0"
    )
    assert a.header("X-OWA-Version") is None  # absent on the 302 in the public capture


def test_logon_page_carries_cu_folder_and_markers(fleet: LabFleet) -> None:
    a = get("ex-vuln", "/owa/auth/logon.aspx")
    assert a.status == 200
    assert 28_000 <= len(a.body) <= 59_000
    text = a.body.decode()
    assert set(re.findall(r"/owa/auth/([0-9.]+)/themes/resources/", text)) == {"15.1.2176"}
    assert "<title>Outlook</title>" in text
    assert "OwaPage = ASP.auth_logon_aspx" in text and "{57A118C6-2DA9-419d-BE9A-F92B0F9A418B}" in text
    assert get("ex-vuln", "/owa/auth/15.1.2176/themes/resources/favicon.ico").status == 200
    assert get("ex-vuln", "/owa/auth/15.1.2044/themes/resources/favicon.ico").status == 404
    # 2013 says "Outlook Web App"; 2010 shows the full build under /owa/<build>/themes/base/
    old = get("ex-2010", "/owa/auth/logon.aspx").body.decode()
    assert "/owa/14.3.509.0/themes/base/" in old and "/owa/auth/" not in old.split("<form")[0]


def test_401_endpoints_carry_version_and_auth_headers(fleet: LabFleet) -> None:
    for path in (
        "/EWS/Exchange.asmx",
        "/autodiscover/autodiscover.xml",
        "/mapi/nspi/",
        "/owa/service.svc",
        "/Microsoft-Server-ActiveSync",
    ):
        a = get("ex-vuln", path)
        assert a.status == 401, path
        assert a.all("WWW-Authenticate") == ["Negotiate", "NTLM", 'Basic realm="127.10.0.1"'], path
        assert a.header("X-OWA-Version") == "15.1.2176.2", path
        assert a.header("X-FEServer") == "EX-VULN"
        assert a.header("X-CalculatedBETarget") == "ex-vuln.lab.exwatch.test"
    no = get("ex-nohdr", "/EWS/Exchange.asmx")
    assert no.status == 401 and no.header("X-OWA-Version") is None and no.header("X-FEServer") == "EX-NOHDR"
    old = get("ex-2010", "/EWS/Exchange.asmx")
    assert old.status == 401 and old.header("X-OWA-Version") is None and old.header("X-FEServer") is None
    assert old.header("Server") == "Microsoft-IIS/7.5"


def test_exporttool_manifest_and_versioned_folder(fleet: LabFleet) -> None:
    a = get("ex-vuln", "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application")
    assert a.status == 200
    versions = re.findall(rb'<assemblyIdentity[^>]*version="([0-9.]+)"', a.body)
    assert versions[:2] == [b"15.1.2176.2", b"15.1.2176.2"]
    assert 12_000 <= len(a.body) <= 20_000
    assert get("ex-vuln", "/ecp/15.1.2176.2/exporttool/").status == 200
    assert get("ex-vuln", "/ecp/15.1.2176.9/exporttool/").status == 404
    assert (
        get(
            "ex-vuln", "/ecp/15.1.2176.4/exporttool/microsoft.exchange.ediscovery.exporttool.application"
        ).status
        == 404
    )
    # no_exporttool: Current is gone, the installed build's folder still answers
    assert (
        get("ex-noexp", "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application").status
        == 404
    )
    assert get("ex-noexp", "/ecp/15.1.2308.14/exporttool/").status == 200
    assert (
        get("ex-2010", "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application").status
        == 404
    )


def test_adfs_redirects_to_federation_server(fleet: LabFleet) -> None:
    for path in ("/owa/", "/ecp/", "/owa/auth/logon.aspx"):
        a = get("ex-adfs", path)
        assert a.status == 302, path
        assert (a.header("Location") or "").startswith(
            "https://adfs.lab.exwatch.test/adfs/ls/?wa=wsignin1.0"
        ), path
    probe = get("ex-adfs", "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE})
    assert probe.status == 302 and probe.header("X-CalculatedBETarget") == "localhost"
    assert get("ex-adfs", "/EWS/Exchange.asmx").header("X-OWA-Version") == "15.0.1497.2"


def test_proxylogon_probe_vulnerable_patched_mitigated(fleet: LabFleet) -> None:
    cookie = {"Cookie": PROXYLOGON_COOKIE}
    vuln = get("ex-vuln", "/owa/auth/x.js", cookie)
    assert vuln.status == 500 and vuln.header("X-CalculatedBETarget") == "localhost"
    patched = get("ex-mar21", "/owa/auth/x.js", cookie)
    assert patched.status == 404 and "localhost" not in (patched.header("X-CalculatedBETarget") or "")
    mitigated = get("ex-mitig", "/owa/auth/x.js", cookie)
    assert mitigated.status is None and mitigated.raw == b""
    # control requests get complete answers everywhere
    for name in ("ex-vuln", "ex-mar21", "ex-mitig"):
        assert get(name, "/owa/auth/x.js").status == 404
    # each EOMT rule on its own (mitigations.md section 9)
    assert (
        get(
            "ex-mitig", "/owa/auth/x.js", {"Cookie": "X-AnonResource-Backend=localhost/ecp/default.flt?~3"}
        ).status
        is None
    )
    assert get("ex-mitig", "/owa/auth/x.js", {"Cookie": "X-BEResource=a/b~1"}).status is None
    assert get("ex-vuln", "/ecp/y.js", {"Cookie": "X-BEResource=a/b~1"}).header("X-CalculatedBETarget") == "a"


def test_proxyshell_shapes(fleet: LabFleet) -> None:
    owa = get("ex-vuln", PROXYSHELL_OWA)
    assert owa.status == 302
    assert b"Microsoft.Exchange.Clients.Owa2.Server.Core.OwaADUserNotFoundException" in owa.body
    assert "owaVer=15.1.2176.2" in (owa.header("Location") or "")
    mapi = get("ex-vuln", PROXYSHELL_MAPI)
    assert mapi.status == 200 and b"Exchange MAPI/HTTP Connectivity Endpoint" in mapi.body
    assert mapi.header("X-ServerApplication") == "Exchange/15.01.2176.002"
    for name in ("ex-noexp", "ex-nov22"):  # ProxyShell fixed (2016 CU21 Jul21SU, CU23 Nov22SU)
        for path in (PROXYSHELL_OWA, PROXYSHELL_MAPI):
            a = get(name, path)
            assert a.status == 401, (name, path)
            assert b"OwaADUserNotFoundException" not in a.body and b"MAPI/HTTP" not in a.body


def test_proxynotshell_shape_and_eomtv2_rule(fleet: LabFleet) -> None:
    vuln = get("ex-noexp", PROXYNOTSHELL)  # 2016 CU21: ProxyShell fixed, ProxyNotShell not
    assert vuln.status == 302 and b"Protocol" not in vuln.body
    assert get("ex-nov22", PROXYNOTSHELL).status == 401
    assert get("ex-mitig", PROXYNOTSHELL).status is None
    # the EOMTv2 control: autodiscover alone answers, autodiscover + powershell is aborted
    assert get("ex-mitig", "/autodiscover/autodiscover.json?x=a").status == 401
    assert get("ex-mitig", "/autodiscover/autodiscover.json?x=PowerShell").status is None
    assert get("ex-mitig", "/autodiscover/autodiscover.json?x=Power%53hell").status is None


def test_proxy_strip_hides_the_front_end(fleet: LabFleet) -> None:
    a = get("ex-proxy", "/EWS/Exchange.asmx")
    assert a.status == 401
    assert a.header("Server") == "nginx"
    for name in ("X-OWA-Version", "X-FEServer", "X-Powered-By", "X-AspNet-Version"):
        assert a.header(name) is None
    assert (
        get("ex-proxy", "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application").status
        == 404
    )
    assert "/owa/auth/15.1.2176/" in get("ex-proxy", "/owa/auth/logon.aspx").body.decode()
    assert get("ex-proxy", "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE}).status == 502


def test_owa_version_lags_on_2019_cu9(fleet: LabFleet) -> None:
    assert get("ex-cu9", "/EWS/Exchange.asmx").header("X-OWA-Version") == "15.2.858.2"
    assert "owaVer=15.2.858.2" in (get("ex-cu9", PROXYSHELL_OWA).header("Location") or "")
    manifest = get("ex-cu9", "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application")
    assert b'version="15.2.858.5"' in manifest.body  # the manifest names the published build
    assert get("ex-cu9", "/ecp/15.2.858.5/exporttool/").status == 200


def test_plain_http_server(fleet: LabFleet) -> None:
    a = get("ex-http", "/EWS/Exchange.asmx")
    assert a.status == 401 and a.header("X-OWA-Version") == "15.2.721.2"
    assert get("ex-http", "/").header("Location") == "http://127.10.0.10/owa/"


def test_non_exchange_servers(fleet: LabFleet) -> None:
    iis = get("web-iis", "/")
    assert iis.status == 200 and b"IIS Windows Server" in iis.body and iis.header("X-FEServer") is None
    assert get("web-iis", "/owa/").status == 404
    nginx = get("web-nginx", "/")
    assert nginx.status == 200 and nginx.header("Server") == "nginx/1.18.0"


def test_unreachable_servers(fleet: LabFleet) -> None:
    assert get("refuse", "/").error == "connect: ConnectionRefusedError"
    reset = get("reset", "/")
    assert reset.status is None
    start = time.monotonic()
    silent = get("silent", "/", timeout=1.0)
    assert silent.status is None and silent.raw == b"" and time.monotonic() - start < 3


def test_hostile_servers_stay_bounded(fleet: LabFleet) -> None:
    start = time.monotonic()
    tar = get("tarpit", "/", timeout=2.5)
    assert tar.status is None and 1 <= len(tar.raw) <= 4 and tar.raw.startswith(b"HT")
    assert time.monotonic() - start < 5
    endless = get("endless", "/", timeout=2.0, max_bytes=300_000)
    assert endless.status == 200 and len(endless.raw) >= 300_000 and endless.header("Content-Length") is None
    many = get("headers", "/")
    assert many.status == 200 and len(many.headers) >= 10_000
    loop1 = get("loop", "/")
    loop2 = get("loop", "/loop-b")
    assert loop1.status == loop2.status == 302
    assert loop1.header("Location") == "https://127.10.0.33/loop-b"
    assert loop2.header("Location") == "https://127.10.0.33/loop-a"
    garbage = get("garbage", "/")
    assert garbage.status is None and garbage.error == "not http" and len(garbage.raw) > 0
    bad = get("badtls", "/")
    assert bad.status is None and bad.raw == b"" and bad.error is not None  # TLS error or reset, never HTTP


def test_certificate_names_the_server_and_verifies(fleet: LabFleet) -> None:
    spec = BY_NAME["ex-vuln"]
    ctx = ssl.create_default_context(cafile=str(fleet.ca_path))
    with (
        socket.create_connection((spec.address, spec.port), timeout=3) as sock,
        ctx.wrap_socket(sock, server_hostname="ex-vuln.lab.exwatch.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "ex-vuln.lab.exwatch.test" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.10.0.1"]
    # verification by address works too, and another server's name does not match
    with (
        socket.create_connection((spec.address, spec.port), timeout=3) as sock,
        ctx.wrap_socket(sock, server_hostname="127.10.0.1"),
    ):
        pass
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((spec.address, spec.port), timeout=3) as sock,
    ):
        ctx.wrap_socket(sock, server_hostname="ex-mar21.lab.exwatch.test")


def test_update_changes_answers_and_truth(fleet: LabFleet) -> None:
    name = "ex-mar21"
    before = {s["name"]: s for s in fleet.manifest()["servers"]}[name]
    assert before["truth"]["proxylogon"] == "patched"
    fleet.update(name, build="15.1.2176.4")  # back to Feb21SU: vulnerable
    assert (
        get(name, "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE}).header("X-CalculatedBETarget")
        == "localhost"
    )
    fleet.update(name, mitigations=["proxylogon"])
    assert get(name, "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE}).status is None
    after = {s["name"]: s for s in fleet.manifest()["servers"]}[name]
    assert (after["fqdn"], after["fe_server"]) == ("ex-mar21.lab.exwatch.test", "EX-MAR21")
    assert after["build"] == "15.1.2176.4" and after["truth"]["proxylogon"] == "mitigated"
    assert after["truth_passive"]["proxylogon"] == "vulnerable"
    fleet.update(name, build="15.1.2176.9", mitigations=[])
    assert get(name, "/EWS/Exchange.asmx").header("X-OWA-Version") == "15.1.2176.9"


def test_request_counts_per_address(fleet: LabFleet) -> None:
    before = fleet.request_counts().get("127.10.0.20", 0)
    for _ in range(3):
        get("web-iis", "/")
    assert fleet.request_counts()["127.10.0.20"] == before + 3
    assert "127.10.0.22" not in fleet.request_counts()  # refuse: nothing ever arrived


def test_httpproxy_log_lines(fleet: LabFleet) -> None:
    assert fleet.log_dir is not None
    get("ex-vuln", "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE})
    get("ex-vuln", "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application")
    get("ex-mitig", "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE})  # aborted by URL Rewrite: no line
    owa_files = list((fleet.log_dir / "ex-vuln" / "Logging" / "HttpProxy" / "Owa").glob("HttpProxy_*-1.LOG"))
    assert len(owa_files) == 1
    lines = owa_files[0].read_text().splitlines()
    assert lines[0] == "#Software: Microsoft Exchange Server"
    assert lines[1] == "#Version: 15.01.2176.002"
    assert lines[2] == "#Log-type: HttpProxy Logs"
    fields = lines[4].removeprefix("#Fields: ").split(",")
    assert len(fields) == 74
    rows = [dict(zip(fields, line.split(","), strict=True)) for line in lines[5:]]
    ssrf = [
        r for r in rows if r["UrlStem"] == "/owa/auth/x.js" and r["AnchorMailbox"].startswith("ServerInfo~")
    ]
    assert ssrf, rows
    row = ssrf[-1]
    assert row["AnchorMailbox"] == "ServerInfo~localhost/ecp/default.flt?"
    assert row["RoutingHint"] == "X-AnonResource-Backend-Cookie"
    assert row["TargetServer"] == "localhost" and row["HttpStatus"] == "500" and row["Method"] == "GET"
    assert row["ClientIpAddress"] == "127.0.0.1" and row["UserAgent"] == "exwatch-lab-test"
    assert (row["MajorVersion"], row["MinorVersion"], row["BuildVersion"], row["RevisionVersion"]) == (
        "15",
        "1",
        "2176",
        "2",
    )
    ecp = fleet.log_dir / "ex-vuln" / "Logging" / "HttpProxy" / "Ecp"
    ecp_text = "".join(p.read_text() for p in ecp.glob("*.LOG"))
    assert (
        "ServerVersion~Version 15.0 (Build 0.0)" in ecp_text
        and "EDiscoveryExportTool-ServerVersion" in ecp_text
    )
    mitig = "".join(p.read_text() for p in (fleet.log_dir / "ex-mitig").rglob("*.LOG"))
    assert "ServerInfo~" not in mitig


def test_drawn_fleet_probe_agrees_with_truth() -> None:
    specs = draw_fleet(
        60, seed=7, base_address="127.10.2.1", https_port=PORT, http_port=HTTP_PORT, other_share=0.1
    )
    exchange = [s for s in specs if s.is_exchange]
    assert len(exchange) >= 40
    with run_fleet_in_thread(specs) as running:
        manifest = {s["name"]: s for s in running.manifest()["servers"]}
        states = set()
        for spec in exchange:
            expected = manifest[spec.name]["truth"]["proxylogon"]
            assert expected == truth(spec)["proxylogon"]
            states.add(expected)
            a = fetch(spec, "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE})
            localhost = "localhost" in (a.header("X-CalculatedBETarget") or "")
            if expected == "vulnerable" and spec.product != "Exchange 2010":
                assert localhost, spec
            elif expected == "mitigated" or "proxylogon" in spec.mitigations:
                # the rules abort the probe whatever the build (a patched server may keep them)
                assert a.status == (502 if spec.variant == "proxy_strip" else None), spec
            else:
                # patched, or Exchange 2010 (affected by CVE-2021-26857 only, not by the SSRF)
                assert a.status is not None and not localhost, spec
            control = fetch(spec, "/owa/auth/x.js")
            assert control.status is not None
    assert {"vulnerable", "patched", "mitigated"} <= states


def _aborted(spec: ServerSpec, a: Answer) -> bool:
    return a.status == (502 if spec.variant == "proxy_strip" else None)


def test_drawn_fleet_autodiscover_shapes_agree_with_truth() -> None:
    # Builds up to the end of 2022, so that some servers have the ProxyShell and ProxyNotShell fixes.
    specs = draw_fleet(
        50,
        seed=11,
        base_address="127.10.7.1",
        https_port=PORT,
        only_exchange=True,
        patched_share=0.6,
        mitigated_share=0.3,
        until=date(2022, 12, 31),
    )
    seen: dict[str, set[str]] = {"proxyshell": set(), "proxynotshell": set()}
    with run_fleet_in_thread(specs) as running:
        manifest = {s["name"]: s for s in running.manifest()["servers"]}
        for spec in specs:
            assert spec.build is not None
            expected = manifest[spec.name]["truth"]
            for wave, paths in (
                ("proxyshell", (PROXYSHELL_OWA, PROXYSHELL_MAPI)),
                ("proxynotshell", (PROXYNOTSHELL,)),
            ):
                state = expected[wave]
                seen[wave].add(state)
                # The shapes reach one CVE each (34473, 41040); a wave can also be vulnerable through another.
                reached = cve_vulnerable(spec.build, wave)
                assert not reached or state in ("vulnerable", "mitigated"), spec
                answers = [fetch(spec, p) for p in paths]
                if wave in spec.mitigations:
                    assert all(_aborted(spec, a) for a in answers), (wave, spec)
                elif wave == "proxyshell" and reached:
                    assert b"OwaADUserNotFoundException" in answers[0].body, spec
                    assert b"MAPI/HTTP Connectivity Endpoint" in answers[1].body, spec
                elif wave == "proxynotshell" and reached:
                    assert answers[0].status == 302 and b"Protocol" not in answers[0].body, spec
                else:
                    assert all(a.status == 401 for a in answers), (wave, spec)
    assert {"vulnerable", "patched", "mitigated"} <= seen["proxyshell"]
    assert {"vulnerable", "mitigated"} <= seen["proxynotshell"]
